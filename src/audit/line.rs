//! An [`AuditRecord`] as its JSON line, written by hand.
//!
//! Every request writes one, and serde's derived serializer spent more on
//! it than the policy decision did (field names escaped like user data, a
//! call per fragment). This writes the same bytes: field names are
//! literals, and a string with nothing to escape is copied whole. Anything
//! rarer (escapes, floats, JSON values, the fault) goes through serde_json,
//! so the output stays byte for byte what `serde_json::to_vec` gives; the
//! property test below holds the two together.

use super::AuditRecord;

/// A member's name as it is written, `"name":`, made at compile time.
macro_rules! k {
    ($name:literal) => {
        concat!("\"", $name, "\":")
    };
}

/// Appends `r` as one JSON object (no newline).
pub(super) fn write(r: &AuditRecord, out: &mut Vec<u8>) {
    // Destructured whole, so that a new field cannot be forgotten here.
    let AuditRecord {
        time,
        request_id,
        event,
        agent,
        route,
        method,
        path,
        action,
        resource,
        verdict,
        policies,
        reasons,
        eval_errors,
        shadow,
        error,
        fault,
        snapshot,
        decision_us,
        upstream_status,
        status,
        duration_ms,
        approval_id,
        approver,
        approval_status,
        decision,
        caller,
        approver_groups,
        extra,
    } = r;
    let mut o = Object::open(out);
    o.str(k!("time"), time);
    o.str(k!("request_id"), request_id);
    o.str(k!("event"), event);
    o.opt_str(k!("agent"), agent.as_deref());
    o.opt_str(k!("route"), route.as_deref());
    o.str(k!("method"), method);
    o.str(k!("path"), path);
    o.opt_str(k!("action"), action.as_deref());
    o.opt_str(k!("resource"), resource.as_deref());
    o.str(k!("verdict"), verdict);
    o.strs(k!("policies"), policies);
    if !reasons.is_empty() {
        o.strs(k!("reasons"), reasons);
    }
    if !eval_errors.is_empty() {
        o.strs(k!("eval_errors"), eval_errors);
    }
    if let Some(v) = shadow {
        o.serde(k!("shadow"), v);
    }
    o.opt_str(k!("error"), *error);
    if let Some(f) = fault {
        o.serde(k!("fault"), f);
    }
    o.opt_str(k!("snapshot"), snapshot.as_deref());
    if let Some(n) = decision_us {
        o.int(k!("decision_us"), *n);
    }
    if let Some(n) = upstream_status {
        o.int(k!("upstream_status"), u64::from(*n));
    }
    if *status != 0 {
        o.int(k!("status"), u64::from(*status));
    }
    o.serde(k!("duration_ms"), duration_ms);
    o.opt_str(k!("approval_id"), approval_id.as_deref());
    o.opt_str(k!("approver"), approver.as_deref());
    o.opt_str(k!("approval_status"), *approval_status);
    o.opt_str(k!("decision"), *decision);
    o.opt_str(k!("caller"), caller.as_deref());
    if !approver_groups.is_empty() {
        o.strs(k!("approver_groups"), approver_groups);
    }
    if let Some(v) = extra {
        o.serde(k!("extra"), v);
    }
    o.close();
}

/// A JSON object being written.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, first: true }
    }

    fn close(self) {
        self.out.push(b'}');
    }

    /// `key` is a member's name as [`k!`] writes it: quoted, with its
    /// colon, and nothing to escape.
    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.extend_from_slice(key.as_bytes());
    }

    fn str(&mut self, key: &str, v: &str) {
        self.key(key);
        string(self.out, v);
    }

    fn opt_str(&mut self, key: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.str(key, v);
        }
    }

    fn strs(&mut self, key: &str, vs: &[String]) {
        self.key(key);
        self.out.push(b'[');
        for (i, v) in vs.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            string(self.out, v);
        }
        self.out.push(b']');
    }

    fn int(&mut self, key: &str, n: u64) {
        self.key(key);
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        let mut n = n;
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.out.extend_from_slice(&buf[i..]);
    }

    fn serde(&mut self, key: &str, v: &impl serde::Serialize) {
        self.key(key);
        if serde_json::to_writer(&mut *self.out, v).is_err() {
            // Cannot happen for these types (string keys only); keep the
            // line valid JSON all the same.
            self.out.extend_from_slice(b"null");
        }
    }
}

/// A JSON string: copied whole when nothing needs escaping, which is
/// nearly always; serde_json's escaping otherwise.
fn string(out: &mut Vec<u8>, s: &str) {
    // A fold, not `all`: with no early exit the compiler checks 16 bytes at
    // a time (strings here are short and nearly always plain).
    let plain = !s.bytes().fold(false, |esc, b| {
        esc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Fault;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        "[a-z\"\\\\\u{0}-\u{1f}\u{7f}é🦀 /]{0,12}"
    }

    fn word() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("allow"), Just("deny"), Just("a\"b"), Just("")]
    }

    prop_compose! {
        fn record()(
            strings in proptest::collection::vec(text(), 9),
            opts in proptest::collection::vec(proptest::option::of(text()), 8),
            lists in proptest::collection::vec(proptest::collection::vec(text(), 0..3), 4),
            words in proptest::collection::vec(word(), 2),
            opt_words in proptest::collection::vec(proptest::option::of(word()), 3),
            numbers in (proptest::option::of(any::<u64>()), proptest::option::of(any::<u16>()), any::<u16>()),
            duration_ms in prop_oneof![any::<f64>(), Just(0.0), Just(21.399817000000002)],
            fault in proptest::option::of(prop_oneof![Just(Fault::Agent), Just(Fault::Internal)]),
            json in proptest::option::of(text().prop_map(|t| serde_json::json!({"k": t, "n": [1, 2.5]}))),
        ) -> AuditRecord {
            let mut o = opts.into_iter();
            let mut l = lists.into_iter();
            let mut ow = opt_words.into_iter();
            AuditRecord {
                time: strings[0].clone(),
                request_id: strings[1].clone(),
                event: words[0],
                agent: o.next().flatten(),
                route: o.next().flatten().map(Into::into),
                method: strings[2].clone().into(),
                path: strings[3].clone(),
                action: o.next().flatten().map(Into::into),
                resource: o.next().flatten().map(Into::into),
                verdict: words[1],
                policies: l.next().unwrap_or_default(),
                reasons: l.next().unwrap_or_default(),
                eval_errors: l.next().unwrap_or_default(),
                shadow: json.clone(),
                error: ow.next().flatten(),
                fault,
                snapshot: o.next().flatten().map(Into::into),
                decision_us: numbers.0,
                upstream_status: numbers.1,
                status: numbers.2,
                duration_ms,
                approval_id: o.next().flatten(),
                approver: o.next().flatten(),
                approval_status: ow.next().flatten(),
                decision: ow.next().flatten(),
                caller: o.next().flatten(),
                approver_groups: l.next().unwrap_or_default(),
                extra: json,
            }
        }
    }

    proptest! {
        #[test]
        fn the_line_is_what_serde_writes(r in record()) {
            let mut line = Vec::new();
            write(&r, &mut line);
            let expected = serde_json::to_vec(&r).unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&line), String::from_utf8_lossy(&expected));
        }
    }

    #[test]
    fn an_empty_record_is_what_serde_writes() {
        let r = AuditRecord::default();
        let mut line = Vec::new();
        write(&r, &mut line);
        assert_eq!(line, serde_json::to_vec(&r).unwrap());
    }
}
