//! Keyset pagination over holds, the same for every backend.
//!
//! Holds are listed newest first by id: ids are UUIDv7, so their text order
//! is their creation order, and being unique they give a total order in
//! which "after the last id I saw" is exact: no duplicates or gaps when
//! holds are added between pages. A backend needs only "id less than X,
//! by id descending" (PostgreSQL orders `text` and `uuid` ids alike), and
//! fetches one row more than the page to know whether another follows.
//! Callers only ever see the cursor as an
//! opaque string ([`HoldCursor::encode`]); the version prefix lets the
//! encoding change later without misreading old cursors.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::{HoldRecord, HoldState};

const VERSION: &str = "h1";

/// Where the next page starts: after the hold with this id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldCursor {
    // INVARIANT: a canonical (lowercase, hyphenated) UUID, so that text
    // comparison in any backend matches the ids' order.
    after_id: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a cursor this server issued")]
pub struct CursorError(pub String);

impl HoldCursor {
    /// The cursor for the page after the one ending with `last`.
    pub fn after(last: &HoldRecord) -> HoldCursor {
        HoldCursor {
            after_id: last.id.clone(),
        }
    }

    /// The id the next page starts after (exclusive), for backends.
    pub fn after_id(&self) -> &str {
        &self.after_id
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{VERSION}.{}", self.after_id))
    }

    pub fn decode(text: &str) -> Result<HoldCursor, CursorError> {
        let bad = || CursorError(text.chars().take(80).collect());
        let raw = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let id = raw
            .strip_prefix(VERSION)
            .and_then(|r| r.strip_prefix('.'))
            .ok_or_else(bad)?;
        let id = uuid::Uuid::parse_str(id).map_err(|_| bad())?;
        Ok(HoldCursor {
            after_id: id.hyphenated().to_string(),
        })
    }
}

/// One page request.
#[derive(Debug, Clone)]
pub struct HoldPageQuery {
    /// Only holds in this state; all when `None`.
    pub state: Option<HoldState>,
    /// Start after this hold; from the newest when `None`.
    pub after: Option<HoldCursor>,
    pub limit: u32,
    /// Only holds that name at least one of these approver groups; all when
    /// `None` (the admin token).
    pub groups: Option<Vec<String>>,
}

/// One page, newest first; `next` is `None` on the last page.
#[derive(Debug, Clone, Default)]
pub struct HoldPage {
    pub holds: Vec<HoldRecord>,
    pub next: Option<HoldCursor>,
}

impl HoldPage {
    /// A page from up to `limit + 1` rows in list order: the extra row only
    /// says that there is more.
    pub fn from_rows(mut rows: Vec<HoldRecord>, limit: u32) -> HoldPage {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = match rows.last() {
            Some(last) if more => Some(HoldCursor::after(last)),
            _ => None,
        };
        HoldPage { holds: rows, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_is_opaque() {
        let id = uuid::Uuid::now_v7().to_string();
        let c = HoldCursor {
            after_id: id.clone(),
        };
        let text = c.encode();
        assert!(!text.contains(&id), "the id is not exposed as such");
        assert!(text
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'));
        assert_eq!(HoldCursor::decode(&text).unwrap(), c);
        assert_eq!(HoldCursor::decode(&text).unwrap().after_id(), id);
    }

    #[test]
    fn a_cursor_is_canonicalised() {
        let upper = "0193A0B0-0000-7000-8000-00000000000A";
        let text = URL_SAFE_NO_PAD.encode(format!("h1.{upper}"));
        assert_eq!(
            HoldCursor::decode(&text).unwrap().after_id(),
            upper.to_lowercase()
        );
    }

    #[test]
    fn foreign_or_damaged_cursors_are_refused() {
        let id = uuid::Uuid::now_v7().to_string();
        for bad in [
            String::new(),
            "not base64!".into(),
            URL_SAFE_NO_PAD.encode(&id),
            URL_SAFE_NO_PAD.encode(format!("h2.{id}")),
            URL_SAFE_NO_PAD.encode("h1.not-a-uuid"),
            URL_SAFE_NO_PAD.encode(format!("h1.{id}' OR 1=1 --")),
            URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
        ] {
            assert!(HoldCursor::decode(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_extra_row_becomes_the_next_cursor_only_when_there_is_more() {
        let rec = |n: u32| {
            let mut h = crate::store::sqlite::tests::hold(&format!("h{n}"));
            h.id = format!("id-{n}");
            h
        };
        let page = HoldPage::from_rows(vec![rec(3), rec(2), rec(1)], 2);
        assert_eq!(page.holds.len(), 2);
        assert_eq!(page.next.unwrap().after_id(), "id-2");
        let last = HoldPage::from_rows(vec![rec(3), rec(2)], 2);
        assert!(last.next.is_none());
        assert!(HoldPage::from_rows(Vec::new(), 2).next.is_none());
    }
}
