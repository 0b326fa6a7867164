//! The declared names the fuzz targets judge keys against: a few that the
//! shipped schema declares, so that case folding and look-alikes are hit.

use std::collections::BTreeSet;

use airlock::policy::keys::DeclaredNames;

pub fn declared() -> DeclaredNames {
    let names: BTreeSet<String> = ["amount", "customer_id", "dry_run", "limit", "skip"]
        .into_iter()
        .map(String::from)
        .collect();
    DeclaredNames::new(names)
}

/// Whether servers could take two field names for one: the same name as
/// PHP, Rails or ASP.NET read it (case folded, `.` and space as `_`, the
/// `[...]` part cut), unless both have `[...]` parts that differ
/// (`page[size]` and `page[number]` are two fields).
pub fn read_as_one(a: &str, b: &str) -> bool {
    use airlock::policy::keys::{field_name, fold};
    let suffix = |n: &str| match n.find('[') {
        Some(i) if i > 0 => fold(&n[i..]).into_owned(),
        _ => String::new(),
    };
    let (sa, sb) = (suffix(a), suffix(b));
    field_name(a) == field_name(b) && (sa.is_empty() || sb.is_empty() || sa == sb)
}

/// Panics when two of `keys` read as one.
pub fn assert_distinct<'a>(what: &str, keys: impl Iterator<Item = &'a String>) {
    let keys: Vec<&String> = keys.collect();
    for (j, b) in keys.iter().enumerate() {
        for a in &keys[..j] {
            assert!(!read_as_one(a, b), "{what}: `{a}` and `{b}` read as one");
        }
    }
}
