//! Reading a policies directory: schema, `*.cedar` files, stable policy ids,
//! annotations, and every problem with its `file:line:col`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cedar_policy::{Effect, Policy, PolicyId, Schema, SchemaFragment, ValidationMode, Validator};
use miette::Diagnostic;

use crate::problem::SourceProblem;

/// How a policy takes part in decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    Enforce,
    /// Evaluated and recorded, never changing the verdict.
    Shadow,
}

/// What Airlock knows about one policy beyond Cedar's view of it.
#[derive(Debug, Clone)]
pub struct PolicyMeta {
    pub id: String,
    pub file: PathBuf,
    pub line: usize,
    pub effect: Effect,
    /// `@hold("why")` on a forbid: a gate a human approval may lift.
    pub hold: Option<String>,
    pub approvers: Option<String>,
    pub timeout: Option<Duration>,
    /// `@elicit("url")` on a gate: a held MCP tool call sends the agent's
    /// client the approval's page (URL elicitation).
    pub elicit: bool,
    /// `@reason("...")`: the text an agent sees when this forbid denies.
    pub reason: Option<String>,
    pub mode: PolicyMode,
    /// `@sample("5%")` on a permit: the share of the calls it allows that
    /// are kept for review.
    pub sample: Option<crate::rate::Rate>,
}

impl PolicyMeta {
    /// Whether the policy is a permit (else a forbid, perhaps a gate).
    pub fn is_permit(&self) -> bool {
        self.effect == Effect::Permit
    }
}

pub(crate) struct LoadedPolicies {
    pub schema: Schema,
    pub policies: Vec<Policy>,
    pub meta: HashMap<PolicyId, PolicyMeta>,
    /// The files' bytes, for the snapshot's content hash.
    pub sources: Vec<(PathBuf, String)>,
    pub decimals: super::decimals::DecimalPaths,
    /// Every attribute name the schema declares (see `keys`).
    pub names: super::keys::DeclaredNames,
    pub scope: super::scope::ScopeIndex,
}

/// Where a parsed policy's text came from, to place validator errors.
struct Origin {
    file: PathBuf,
    file_text: std::sync::Arc<str>,
    offset: usize,
}

pub(crate) fn load_dir(dir: &Path) -> Result<LoadedPolicies, Vec<SourceProblem>> {
    let mut problems = Vec::new();
    let schema_path = dir.join("schema.cedarschema");
    let schema_text = match std::fs::read_to_string(&schema_path) {
        Ok(t) => t,
        Err(e) => {
            return Err(vec![at_start(
                &schema_path,
                format!("cannot read the schema: {e}"),
            )])
        }
    };
    // `schema.cedarschema` plus any other `*.cedarschema` fragment, such as
    // the tool declarations `airlock schema pull` writes.
    let mut fragment_files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "cedarschema") && *p != schema_path)
                .collect()
        })
        .unwrap_or_default();
    fragment_files.sort();
    let mut fragments = Vec::new();
    let mut fragment_sources = Vec::new();
    let mut schema_ok = true;
    for (path, text) in std::iter::once((schema_path.clone(), Ok(schema_text.clone()))).chain(
        fragment_files
            .iter()
            .map(|p| (p.clone(), std::fs::read_to_string(p))),
    ) {
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                problems.push(at_start(&path, format!("cannot read the schema: {e}")));
                schema_ok = false;
                continue;
            }
        };
        match SchemaFragment::from_cedarschema_str(&text) {
            Ok((fragment, _warnings)) => fragments.push(fragment),
            Err(e) => {
                problems.extend(diagnostic_problems(&path, &text, 0, &e));
                schema_ok = false;
            }
        }
        if path != schema_path {
            fragment_sources.push((path, text));
        }
    }
    let decimals = super::decimals::decimal_paths(&fragments);
    let fragment_json: Vec<serde_json::Value> = fragments
        .iter()
        .filter_map(|f| f.to_json_string().ok())
        .filter_map(|j| serde_json::from_str(&j).ok())
        .collect();
    let names = super::keys::DeclaredNames::from_schema_json(&fragment_json);
    let schema = if schema_ok {
        match Schema::from_schema_fragments(fragments) {
            Ok(schema) => Some(schema),
            Err(e) => {
                let mut message = format!("the schema files do not fit together: {e}");
                if let Some(help) = e.help() {
                    message.push_str(&format!(" (help: {help})"));
                }
                problems.push(at_start(&schema_path, message));
                None
            }
        }
    } else {
        None
    };

    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
            .collect(),
        Err(e) => {
            return Err(vec![at_start(
                dir,
                format!("cannot read the directory: {e}"),
            )])
        }
    };
    files.sort();

    let mut policies = Vec::new();
    let mut meta = HashMap::new();
    let mut origins: HashMap<PolicyId, Origin> = HashMap::new();
    let mut ids_seen: HashMap<String, (PathBuf, usize)> = HashMap::new();
    let mut sources = vec![(schema_path.clone(), schema_text.clone())];
    sources.extend(fragment_sources);
    for file in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                problems.push(at_start(file, format!("cannot read file: {e}")));
                continue;
            }
        };
        let file_text: std::sync::Arc<str> = text.as_str().into();
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (offset, stmt) in split_statements(&text) {
            let (line, column) = line_col(&text, offset);
            let parsed = match Policy::parse(None, stmt) {
                Ok(p) => p,
                Err(e) => {
                    problems.extend(diagnostic_problems(file, &text, offset, &e));
                    continue;
                }
            };
            let id = parsed
                .annotation("id")
                .map(str::to_string)
                .unwrap_or_else(|| format!("{name}:{line}"));
            if let Some((first_file, first_line)) = ids_seen.get(&id) {
                problems.push(SourceProblem {
                    file: file.clone(),
                    line,
                    column,
                    message: format!(
                        "policy id `{id}` is already used at {}:{first_line}",
                        first_file.display()
                    ),
                });
                continue;
            }
            ids_seen.insert(id.clone(), (file.clone(), line));
            let policy_meta = match policy_meta(&parsed, &id, file, line) {
                Ok(m) => m,
                Err(message) => {
                    problems.push(SourceProblem {
                        file: file.clone(),
                        line,
                        column,
                        message,
                    });
                    continue;
                }
            };
            let pid = PolicyId::new(&id);
            origins.insert(
                pid.clone(),
                Origin {
                    file: file.clone(),
                    file_text: file_text.clone(),
                    offset,
                },
            );
            meta.insert(pid.clone(), policy_meta);
            policies.push(parsed.new_id(pid));
        }
        sources.push((file.clone(), text));
    }

    let Some(schema) = schema else {
        return Err(problems);
    };
    // Validate what parsed, even when other statements failed, so that one
    // run of `airlock check` shows every problem.
    let mut invalid = std::collections::HashSet::new();
    match cedar_policy::PolicySet::from_policies(policies.iter().cloned()) {
        Ok(set) => {
            let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
            for err in result.validation_errors() {
                invalid.insert(err.policy_id().clone());
                match origins.get(err.policy_id()) {
                    Some(o) => {
                        problems.extend(diagnostic_problems(&o.file, &o.file_text, o.offset, err))
                    }
                    None => problems.push(at_start(dir, err.to_string())),
                }
            }
        }
        Err(e) => problems.push(at_start(dir, e.to_string())),
    }
    let scope = match super::scope::ScopeIndex::new(&schema) {
        Ok(s) => s,
        Err(e) => {
            problems.push(at_start(&schema_path, e));
            return Err(problems);
        }
    };
    // Strict validation accepts a scope no request can match, such as a
    // group as principal; such a policy is dead text that looks alive.
    for p in &policies {
        if invalid.contains(p.id()) || scope.can_apply(p) {
            continue;
        }
        if let Some(o) = origins.get(p.id()) {
            let (line, column) = line_col(&o.file_text, o.offset);
            problems.push(SourceProblem {
                file: o.file.clone(),
                line,
                column,
                message: format!(
                    "policy `{}` can never apply: no action in the schema takes a principal, action and resource that fit its scope",
                    p.id()
                ),
            });
        }
    }
    if problems.is_empty() {
        Ok(LoadedPolicies {
            schema,
            policies,
            meta,
            sources,
            decimals,
            names,
            scope,
        })
    } else {
        Err(problems)
    }
}

fn policy_meta(p: &Policy, id: &str, file: &Path, line: usize) -> Result<PolicyMeta, String> {
    let known = [
        "id",
        "hold",
        "approvers",
        "timeout",
        "elicit",
        "reason",
        "mode",
        "sample",
    ];
    for (k, _) in p.annotations() {
        if !known.contains(&k) {
            return Err(format!(
                "policy `{id}`: unknown annotation `@{k}`; Airlock reads @{}",
                known.join(", @")
            ));
        }
    }
    let effect = p.effect();
    let hold = p.annotation("hold").map(str::to_string);
    if hold.is_some() && effect == Effect::Permit {
        return Err(format!(
            "policy `{id}`: `@hold` on a permit means nothing; put it on the forbid that gates the call"
        ));
    }
    for k in ["approvers", "timeout", "elicit"] {
        if p.annotation(k).is_some() && hold.is_none() {
            return Err(format!(
                "policy `{id}`: `@{k}` only applies to a `@hold` forbid"
            ));
        }
    }
    let sample = match p.annotation("sample") {
        None => None,
        Some(_) if effect != Effect::Permit => {
            return Err(format!(
                "policy `{id}`: `@sample` only applies to a permit: it samples the calls a permit allows"
            ))
        }
        Some(r) => Some(
            crate::rate::Rate::parse(r).map_err(|e| format!("policy `{id}`: malformed `@sample`: {e}"))?,
        ),
    };
    let timeout = match p.annotation("timeout") {
        None => None,
        Some(t) => Some(
            crate::duration::parse_duration(t)
                .map_err(|e| format!("policy `{id}`: malformed `@timeout`: {e}"))?,
        ),
    };
    let approvers = match p.annotation("approvers") {
        Some("") => return Err(format!("policy `{id}`: `@approvers` needs a group name")),
        a => a.map(str::to_string),
    };
    let elicit = match p.annotation("elicit") {
        None => false,
        Some("url") => true,
        Some(m) => {
            return Err(format!(
                "policy `{id}`: `@elicit(\"{m}\")` is unknown; use `@elicit(\"url\")`"
            ))
        }
    };
    let mode = match p.annotation("mode") {
        None | Some("enforce") => PolicyMode::Enforce,
        Some("shadow") => PolicyMode::Shadow,
        Some(m) => {
            return Err(format!(
                "policy `{id}`: `@mode(\"{m}\")` is unknown; use \"enforce\" or \"shadow\""
            ))
        }
    };
    Ok(PolicyMeta {
        id: id.to_string(),
        file: file.to_path_buf(),
        line,
        effect,
        hold,
        approvers,
        timeout,
        elicit,
        reason: p.annotation("reason").map(str::to_string),
        mode,
        sample,
    })
}

fn at_start(file: &Path, message: String) -> SourceProblem {
    SourceProblem {
        file: file.to_path_buf(),
        line: 1,
        column: 1,
        message,
    }
}

/// Turns a Cedar diagnostic into located problems; `offset` is where the
/// parsed text starts inside `file_text`.
fn diagnostic_problems(
    file: &Path,
    file_text: &str,
    offset: usize,
    d: &dyn Diagnostic,
) -> Vec<SourceProblem> {
    let mut out = Vec::new();
    let mut push = |d: &dyn Diagnostic| {
        let at = d
            .labels()
            .and_then(|mut l| l.next())
            .map(|l| offset + l.offset())
            .unwrap_or(offset);
        let (line, column) = line_col(file_text, at);
        let mut message = d.to_string();
        if let Some(help) = d.help() {
            message.push_str(&format!(" (help: {help})"));
        }
        out.push(SourceProblem {
            file: file.to_path_buf(),
            line,
            column,
            message,
        });
    };
    match d.related() {
        Some(related) => {
            let related: Vec<&dyn Diagnostic> = related.collect();
            if related.is_empty() {
                push(d);
            }
            for r in related {
                push(r);
            }
        }
        None => push(d),
    }
    out
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// Splits a Cedar file into statements, each with the byte offset of its
/// first token, so that every policy gets a stable `file:line` id and its
/// errors a precise position. Strings and `//` comments are skipped over.
pub(crate) fn split_statements(text: &str) -> Vec<(usize, &str)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                start.get_or_insert(i);
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b';' => {
                let s = start.take().unwrap_or(i);
                out.push((s, &text[s..=i]));
            }
            b if b.is_ascii_whitespace() => {}
            _ => {
                start.get_or_insert(i);
            }
        }
        i += 1;
    }
    if let Some(s) = start {
        out.push((s, &text[s..]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_around_strings_and_comments() {
        let text = "// a; comment\npermit(principal, action, resource)\n  when { context.path == \"a;b\" };\n\n@id(\"x\")\nforbid(principal, action, resource);";
        let parts = split_statements(text);
        assert_eq!(parts.len(), 2);
        assert_eq!(line_col(text, parts[0].0), (2, 1));
        assert_eq!(line_col(text, parts[1].0), (5, 1));
        assert!(parts[0].1.ends_with("};"));
    }

    #[test]
    fn a_missing_semicolon_still_yields_a_statement() {
        let parts = split_statements("permit(principal, action, resource)");
        assert_eq!(parts.len(), 1);
    }
}
