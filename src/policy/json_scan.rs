//! A fast, conservative first look at a JSON body.
//!
//! Most of a body is never read by any policy (a long `note`, a list of
//! items), yet all of it must be checked as strictly as what is read:
//! syntax, trailing bytes, duplicate keys at any depth. serde_json checks a
//! string eight bytes at a time; this scanner skips 32 at a time (a loop
//! the compiler turns into SIMD), and lets serde_json build only the
//! top-level members the policies need.
//!
//! The scanner only ever says "surely valid" or "not sure". When it is not
//! sure (an error, or anything it does not judge itself: `\u` escapes, a
//! key with an escape or outside ASCII, exponents, long numbers, deep
//! nesting, large objects) the caller reads the body the slow way, which
//! gives the exact error. So it must never accept what `parse_json_strict`
//! refuses; the property tests below hold it to that.
//!
//! Keys are compared without regard to ASCII case (see `policy::keys`), and
//! a key that reads as a declared name it is not is left to serde_json too.

use smallvec::SmallVec;

use super::keys::DeclaredNames;

/// Deeper documents are left to serde_json (its own limit is 128).
const MAX_DEPTH: u32 = 64;
/// Objects with more keys are left to serde_json, so that the duplicate
/// check here stays a short linear search.
const MAX_KEYS: usize = 32;
/// Longer numbers are left to serde_json: up to this length and without an
/// exponent, a number is always finite.
const MAX_NUMBER: usize = 24;

/// The top-level object's members in order: the key (without quotes; it
/// had no escapes) and the text of its value.
pub(super) type Members<'a> = SmallVec<[(&'a str, &'a str); 8]>;

/// A surely valid document's top.
#[derive(Debug)]
pub(super) struct Top<'a> {
    pub is_object: bool,
    /// Empty unless the top is an object.
    pub members: Members<'a>,
}

/// Whether `text` is surely one strict JSON document whose keys `names`
/// admits; `false` when not sure. The entry point for fuzzing.
pub fn surely_valid(text: &str, names: &DeclaredNames) -> bool {
    scan(text, names).is_some()
}

/// `text`'s top, when `text` is surely one strict JSON document (what
/// `parse_json_strict` accepts) whose keys `names` admits; `None` when not
/// sure.
pub(super) fn scan<'a>(text: &'a str, names: &DeclaredNames) -> Option<Top<'a>> {
    let mut s = Scanner {
        text,
        b: text.as_bytes(),
        i: 0,
        names,
    };
    s.ws();
    let is_object = s.peek() == Some(b'{');
    let members = if is_object {
        s.object(1, true)?
    } else {
        s.value(0)?;
        Members::new()
    };
    let top = Top { is_object, members };
    s.ws();
    (s.i == s.b.len()).then_some(top)
}

struct Scanner<'a, 'n> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
    names: &'n DeclaredNames,
}

// === impl Scanner ===

impl<'a> Scanner<'a, '_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek() == Some(byte)).then(|| self.i += 1)
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn value(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(depth + 1, false).map(drop),
            b'[' => self.array(depth + 1),
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// An object; its members when `collect`. Keys with escapes or outside
    /// ASCII are not judged here, so that comparing their text without
    /// regard to ASCII case finds every key Go would take for another.
    fn object(&mut self, depth: u32, collect: bool) -> Option<Members<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'{')?;
        self.ws();
        let mut keys: SmallVec<[&'a str; 16]> = SmallVec::new();
        let mut members = Members::new();
        if self.eat(b'}').is_some() {
            return Some(members);
        }
        loop {
            let (key, escaped) = self.string()?;
            if escaped
                || keys.len() == MAX_KEYS
                || !key.is_ascii()
                || keys.iter().any(|k| k.eq_ignore_ascii_case(key))
                || self.names.json_key(key).is_some()
            {
                return None;
            }
            keys.push(key);
            self.ws();
            self.eat(b':')?;
            self.ws();
            let start = self.i;
            self.value(depth)?;
            if collect {
                members.push((key, self.text.get(start..self.i)?));
            }
            if self.comma_or(b'}')? {
                return Some(members);
            }
        }
    }

    fn array(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'[')?;
        self.ws();
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            self.value(depth)?;
            if self.comma_or(b']')? {
                return Some(());
            }
        }
    }

    /// After a member or element: `true` at `close` (eaten), `false` after
    /// a comma (eaten, with the whitespace after it).
    fn comma_or(&mut self, close: u8) -> Option<bool> {
        self.ws();
        let b = self.peek()?;
        self.i += 1;
        if b == close {
            return Some(true);
        }
        (b == b',').then(|| self.ws()).map(|()| false)
    }

    /// A string: its text between the quotes, and whether it had escapes.
    /// `\u` escapes are not judged here (serde_json refuses lone
    /// surrogates).
    fn string(&mut self) -> Option<(&'a str, bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            // Straight to the next byte worth a look, 32 at a time.
            let rest = self.b.get(self.i..)?;
            let found = match <&[u8; 32]>::try_from(rest.get(..32).unwrap_or(&[])) {
                Ok(chunk) => first_special(chunk),
                Err(_) => {
                    // The document's last bytes, padded with plain spaces.
                    let mut chunk = [b' '; 32];
                    chunk[..rest.len()].copy_from_slice(rest);
                    first_special(&chunk).filter(|&k| k < rest.len())
                }
            };
            match found {
                Some(k) => self.i += k,
                None if rest.len() > 32 => {
                    self.i += 32;
                    continue;
                }
                // Unterminated.
                None => return None,
            }
            match self.peek()? {
                b'"' => {
                    // INVARIANT: `start` and `self.i` sit next to ASCII
                    // quotes, so both are char boundaries of `text`.
                    let text = self.text.get(start..self.i)?;
                    self.i += 1;
                    return Some((text, escaped));
                }
                b'\\' => {
                    match self.b.get(self.i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        _ => return None,
                    }
                    escaped = true;
                    self.i += 2;
                }
                0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b
            .get(self.i..)?
            .starts_with(word)
            .then(|| self.i += word.len())
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`; exponents are left to serde_json
    /// (`1e400` is out of range there).
    fn number(&mut self) -> Option<()> {
        let start = self.i;
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.').is_some() {
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) || self.i - start > MAX_NUMBER {
            return None;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
    }
}

/// Where `chunk`'s first quote, backslash or control byte is. Written as
/// a mask per byte folded into two `u128`s, with no early exit: the
/// compiler then checks 16 bytes per instruction (measured: 0.9
/// instructions per byte, against 2.6 for serde_json's eight-byte steps).
fn first_special(chunk: &[u8; 32]) -> Option<usize> {
    let mut mask = [0u8; 32];
    for (m, &b) in mask.iter_mut().zip(chunk) {
        *m = u8::from((b < 0x20) | (b == b'"') | (b == b'\\')) * 0xff;
    }
    let (low, high) = mask.split_at(16);
    // Little-endian: the first byte is the lowest, so trailing zeros count
    // the plain bytes before the first special one.
    let word = |half: &[u8]| <[u8; 16]>::try_from(half).map_or(u128::MAX, u128::from_le_bytes);
    let (low, high) = (word(low), word(high));
    let at = |w: u128| (w.trailing_zeros() / 8) as usize;
    if low != 0 {
        Some(at(low))
    } else if high != 0 {
        Some(16 + at(high))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::value::parse_json_strict;
    use proptest::prelude::*;
    use serde_json::Value;

    fn surely(doc: &str) -> bool {
        scan(doc, &crate::policy::keys::NO_NAMES).is_some()
    }

    #[test]
    fn plain_documents_are_judged_here() {
        let note = "x".repeat(1000);
        for doc in [
            format!(r#"{{"customer_id":"c-1","amount":50,"note":"{note}"}}"#),
            r#" {"a": [1, -2.5, 0, -0, true, false, null, {"b": {}}, []], "c": "q\"\\\/\n"} "#
                .to_string(),
            r#""just a string""#.to_string(),
            "[]".to_string(),
            "-0.0".to_string(),
        ] {
            assert!(surely(&doc), "{doc}");
            assert!(parse_json_strict(doc.as_bytes()).is_ok(), "{doc}");
        }
        let top = scan(
            r#"{"a": 1, "b" : [2, 3] ,"c":{"d":"e"}}"#,
            &crate::policy::keys::NO_NAMES,
        )
        .unwrap();
        assert!(top.is_object);
        assert_eq!(
            top.members.as_slice(),
            [("a", "1"), ("b", "[2, 3]"), ("c", r#"{"d":"e"}"#)]
        );
    }

    #[test]
    fn what_it_does_not_judge_is_left_to_serde_json() {
        let deep = "[".repeat(100) + &"]".repeat(100);
        let many_keys = format!(
            "{{{}}}",
            (0..40)
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        for doc in [
            // Errors: serde_json words them.
            r#"{"a":1,"a":2}"#,
            r#"{"x":[{"b":1,"b":1}]}"#,
            r#"{"amount":50,"AMOUNT":500}"#,
            r#"{"x":{"Ab":1,"aB":2}}"#,
            "{} {}",
            "{\"a\":1,}",
            "[1,]",
            "01",
            "1.",
            "-",
            "\"tab\there\"",
            "\"\\x\"",
            "tru",
            "\u{feff}{}",
            // Not judged here, valid or not.
            r#"{"a":"\u0041"}"#,
            r#"{"\u0061":1,"a":2}"#,
            r#"{"q\"":1}"#,
            "{\"\u{212a}\":1}",
            "1e400",
            "1e5",
            "123456789012345678901234567890",
            deep.as_str(),
            many_keys.as_str(),
        ] {
            assert!(!surely(doc), "{doc}");
        }
    }

    #[test]
    fn a_key_that_reads_as_a_declared_name_is_left_to_serde_json() {
        let names = crate::policy::keys::DeclaredNames::new(["amount".to_string()].into());
        assert!(surely_valid(r#"{"amount":1,"Note":{"x":2}}"#, &names));
        for doc in [r#"{"Amount":1}"#, r#"[{"a":{"AMOUNT":1}}]"#] {
            assert!(!surely_valid(doc, &names), "{doc}");
            assert!(surely(doc), "{doc}");
        }
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[ -~\\n\\t\\\\\"é]{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map("[a-e]{1,2}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Pieces of JSON, valid and not, for documents serde_json must judge.
    fn soup() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("{"),
            Just("}"),
            Just("["),
            Just("]"),
            Just(","),
            Just(":"),
            Just("\"a\""),
            Just("\"b\""),
            Just("\"A\""),
            Just("\"\\n\""),
            Just("\"\\u0061\""),
            Just("\"\\q\""),
            Just("\"\t\""),
            Just("1"),
            Just("-0"),
            Just("01"),
            Just("1.5"),
            Just("1."),
            Just("2e3"),
            Just("true"),
            Just("nul"),
            Just(" "),
        ];
        proptest::collection::vec(token, 1..16).prop_map(|t| t.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn documents_serde_json_writes_are_judged_here(v in json()) {
            let doc = serde_json::to_string(&v).unwrap();
            prop_assert!(surely(&doc), "{}", doc);
        }

        #[test]
        fn what_is_surely_valid_here_is_valid_for_serde_json(doc in soup()) {
            if surely(&doc) {
                prop_assert!(parse_json_strict(doc.as_bytes()).is_ok(), "{}", doc);
            }
        }

        #[test]
        fn a_cut_or_doubled_document_is_never_surely_valid_by_mistake(
            v in json(),
            cut in any::<prop::sample::Index>(),
            extra in any::<prop::sample::Index>(),
        ) {
            let doc = serde_json::to_string(&v).unwrap();
            let at = cut.index(doc.len() + 1);
            let mut cut_doc = doc.clone();
            while !cut_doc.is_char_boundary(at.min(cut_doc.len())) {
                cut_doc.pop();
            }
            cut_doc.truncate(at.min(cut_doc.len()));
            // A key written twice in some object, when there is one.
            let dup = match doc.match_indices('{').nth(extra.index(4)) {
                Some((i, _)) => format!("{}\"a\":0,\"a\":1,{}", &doc[..=i], &doc[i + 1..]),
                None => doc.clone(),
            };
            for d in [&cut_doc, &dup] {
                if surely(d) {
                    prop_assert!(parse_json_strict(d.as_bytes()).is_ok(), "{}", d);
                }
            }
        }
    }
}
