//! The module map in ARCHITECTURE.md is the truth: every `crate::` edge in
//! `src/` (outside `#[cfg(test)]` code) is one the map lists, and only
//! `policy` speaks Cedar.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The table `| `module` | `a`, `b` |` of ARCHITECTURE.md.
fn documented_edges() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).unwrap();
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| `m` | ... |` splits into ["", "`m`", "...", ""].
        if cells.len() != 4 || !cells[1].starts_with('`') {
            continue;
        }
        let module = cells[1].trim_matches('`').to_string();
        let uses = cells[2]
            .split(',')
            .map(|u| u.trim().trim_matches('`').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        map.insert(module, uses);
    }
    map
}

/// Each top-level module's source files, without their test code.
fn sources() -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let src = Path::new(ROOT).join("src");
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let module = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_string();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = match text.find("#[cfg(test)]") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            out.entry(module).or_default().push((rel, code));
        }
    }
    out
}

/// The modules of ours a piece of code names: `crate::x` and the
/// `crate::{x, y::z}` groups.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Only the group's top-level items name modules of ours:
            // `crate::{a::{b, c}, d}` names `a` and `d`.
            let (mut depth, mut item, mut at_start) = (0, String::new(), true);
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => at_start = true,
                    c if depth == 0 && at_start && (c.is_alphanumeric() || c == '_') => {
                        item.push(c);
                    }
                    _ if !item.is_empty() => {
                        found.insert(std::mem::take(&mut item));
                        at_start = false;
                    }
                    _ => {}
                }
            }
            if !item.is_empty() {
                found.insert(item);
            }
        } else {
            let head: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.insert(head);
        }
    }
    found
}

#[test]
fn every_module_edge_in_the_code_is_one_the_architecture_map_lists() {
    let map = documented_edges();
    let mut wrong = Vec::new();
    for (module, files) in sources() {
        let Some(allowed) = map.get(&module) else {
            wrong.push(format!(
                "module `{module}` is missing from ARCHITECTURE.md's table"
            ));
            continue;
        };
        for (file, code) in files {
            for used in named_modules(&code) {
                if used != module && !allowed.contains(&used) {
                    wrong.push(format!("src/{file}: `{module}` uses `{used}`"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "edges the map does not allow:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn only_the_policy_module_speaks_cedar() {
    let mut wrong = Vec::new();
    for (module, files) in sources() {
        for (file, code) in files {
            if module != "policy" && code.contains("cedar_policy") {
                wrong.push(format!("src/{file}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "cedar_policy used outside `policy`: {wrong:?}"
    );
}

#[test]
fn the_map_reader_finds_grouped_and_plain_paths() {
    let code =
        "use crate::{audit::{AuditSink, Fault}, config};\nlet x = crate::policy::Verdict::Allow;";
    let found: Vec<String> = named_modules(code).into_iter().collect();
    assert_eq!(found, ["audit", "config", "policy"]);
}
