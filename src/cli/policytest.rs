//! `airlock test`: policy test cases in YAML, run through the same code the
//! proxy and `airlock explain` use.
//!
//! A case file holds a list of cases:
//!
//! ```yaml
//! cases:
//!   - name: a refund over 100 waits for finance
//!     agent: support-bot
//!     call:
//!       method: POST
//!       path: /crm/refunds
//!       body: { amount: 250, currency: EUR }
//!     expect: hold
//!     policies: [large-refunds-need-approval]
//! ```
//!
//! A REST call has `method`, `path` (which may carry a query string), and
//! optionally `query`, `headers` and a `body`: JSON, or the text of a body
//! of the `content-type` the headers declare (a form, say). An MCP tool call has
//! `tool: ROUTE/TOOL` and `arguments` instead. Either may state the agent's
//! `confidence` and `reason`. `policies`, when given,
//! lists ids that must all be among the policies that determined the
//! verdict.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::explain::{decide_http, decide_tool, DecidedCall, HttpCallSpec};
use crate::policy::escalation::{CONFIDENCE_HEADER, REASON_HEADER};
use crate::policy::Escalation;
use crate::snapshot::GatewaySnapshot;

/// A verdict a case expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expected {
    Allow,
    Deny,
    Hold,
}

impl Expected {
    fn name(self) -> &'static str {
        match self {
            Expected::Allow => "allow",
            Expected::Deny => "deny",
            Expected::Hold => "hold",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    cases: Vec<Spanned<RawCase>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    agent: String,
    call: RawCall,
    expect: Expected,
    #[serde(default)]
    policies: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCall {
    method: Option<String>,
    path: Option<String>,
    #[serde(default)]
    query: BTreeMap<String, Value>,
    #[serde(default)]
    headers: BTreeMap<String, Value>,
    body: Option<Value>,
    /// MCP: the tool as `ROUTE/TOOL`.
    tool: Option<String>,
    /// MCP: the tool's arguments (a mapping).
    arguments: Option<Value>,
    /// The confidence the agent states (`0.63`), REST or MCP alike.
    confidence: Option<Value>,
    /// The reason the agent gives for the call.
    reason: Option<String>,
}

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// `file:line:col` of the case.
    pub at: String,
    pub name: String,
    pub expected: Expected,
    /// `allow`, `deny`, `hold`, or `error: ...` when no verdict was reached.
    pub actual: String,
    /// The determining policies.
    pub policies: Vec<String>,
    /// Required policies that did not determine the verdict.
    pub missing: Vec<String>,
    pub reasons: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.actual == self.expected.name() && self.missing.is_empty()
    }
}

/// Everything one `airlock test` run found.
#[derive(Debug, Default)]
pub struct TestReport {
    pub results: Vec<CaseResult>,
    /// Case files that could not be read, `file:line:col: message` each.
    pub problems: Vec<String>,
    /// Policies that determined no case.
    pub uncovered: Vec<String>,
}

impl TestReport {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed()).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// Every case passed, and there was at least one: a run that tested
    /// nothing is not a pass.
    pub fn success(&self) -> bool {
        self.problems.is_empty() && !self.results.is_empty() && self.failed() == 0
    }

    /// The human-readable report. Its last line is `N passed, M failed`, or
    /// `0 cases run` when a case file could not be read or held no case.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for p in &self.problems {
            let _ = writeln!(out, "error: {p}");
        }
        for r in &self.results {
            if r.passed() {
                let _ = writeln!(out, "ok    {}", r.name);
                continue;
            }
            let _ = writeln!(out, "FAIL  {} ({})", r.name, r.at);
            let _ = writeln!(out, "      expected: {}", r.expected.name());
            let _ = writeln!(out, "      actual:   {}", r.actual);
            let _ = writeln!(out, "      determining policies: {}", list(&r.policies));
            if !r.missing.is_empty() {
                let _ = writeln!(
                    out,
                    "      expected to be determined by: {}",
                    list(&r.missing)
                );
            }
            for reason in &r.reasons {
                let _ = writeln!(out, "      reason: {reason}");
            }
        }
        if !self.results.is_empty() && !self.uncovered.is_empty() {
            let _ = writeln!(
                out,
                "note: no case is determined by {}",
                list(&self.uncovered)
            );
        }
        if self.results.is_empty() {
            let _ = writeln!(out, "0 cases run");
        } else {
            let _ = writeln!(out, "{} passed, {} failed", self.passed(), self.failed());
        }
        out
    }
}

fn list(ids: &[String]) -> String {
    if ids.is_empty() {
        "(none)".to_string()
    } else {
        ids.join(", ")
    }
}

/// The case files used when none are named: `<policies>/tests/*.yaml`.
pub fn default_files(policies_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let dir = policies_dir.join("tests");
    let rd =
        std::fs::read_dir(&dir).map_err(|e| format!("cannot read `{}`: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Runs every case in `files` against `snap`. Every file is read first: when
/// one cannot be read or parsed, no case runs, so that a partial run never
/// passes for a full one.
pub fn run(snap: &GatewaySnapshot, files: &[PathBuf]) -> TestReport {
    let mut report = TestReport::default();
    let mut parsed = Vec::with_capacity(files.len());
    for file in files {
        match read_case_file(file) {
            Ok(cases) => parsed.push((file, cases)),
            Err(problem) => report.problems.push(problem),
        }
    }
    if !report.problems.is_empty() {
        return report;
    }
    let mut determined = BTreeSet::new();
    for (file, cases) in parsed {
        for case in cases.cases {
            let at = format!(
                "{}:{}:{}",
                file.display(),
                case.referenced.line(),
                case.referenced.column()
            );
            let result = run_case(snap, at, case.value);
            determined.extend(result.policies.iter().cloned());
            report.results.push(result);
        }
    }
    report.uncovered = snap
        .policy
        .policy_ids()
        .into_iter()
        .filter(|id| !determined.contains(id))
        .collect();
    report
}

/// One case file, or its problem as `file:line:col: message`.
fn read_case_file(file: &Path) -> Result<CaseFile, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("{}:1:1: cannot read: {e}", file.display()))?;
    serde_saphyr::from_str(&text).map_err(|e| {
        let (line, col) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        let msg = e.to_string();
        let msg = msg.lines().next().unwrap_or_default().trim();
        // The message repeats the location we already print.
        let msg = msg
            .split_once(&format!("column {col}: "))
            .map_or(msg, |(_, rest)| rest);
        format!("{}:{line}:{col}: {msg}", file.display())
    })
}

fn run_case(snap: &GatewaySnapshot, at: String, case: RawCase) -> CaseResult {
    let mut result = CaseResult {
        at,
        name: case.name,
        expected: case.expect,
        actual: String::new(),
        policies: Vec::new(),
        missing: Vec::new(),
        reasons: Vec::new(),
    };
    let call = case.call;
    let confidence = call.confidence.as_ref().map(scalar);
    let said = match Escalation::from_texts(confidence.as_deref(), call.reason.as_deref()) {
        Ok(said) => said,
        Err(e) => {
            result.actual = format!("error: {e}");
            return result;
        }
    };
    let decided = match &call.tool {
        Some(tool) => decide_tool(
            snap,
            &case.agent,
            tool,
            call.arguments
                .clone()
                .unwrap_or_else(|| Value::Object(serde_json::Map::new())),
            &said,
        ),
        None => {
            let (Some(method), Some(path)) = (call.method.as_deref(), call.path.as_deref()) else {
                result.actual =
                    "error: a REST call needs `method` and `path`, an MCP call `tool`".into();
                return result;
            };
            decide_rest(snap, &case.agent, method, path, &call)
        }
    };
    match decided {
        Ok(decided) => {
            let d = decided.decision;
            result.actual = d.verdict.name().to_string();
            result.reasons = match &d.verdict {
                crate::policy::Verdict::Deny { reasons } => reasons.clone(),
                crate::policy::Verdict::Hold { gates } => {
                    gates.iter().map(|g| g.reason.clone()).collect()
                }
                crate::policy::Verdict::Allow => Vec::new(),
            };
            if result.actual == "deny" && d.policies.is_empty() && d.errors.is_empty() {
                let scoped: Vec<String> = snap
                    .policy
                    .scoped_permits(&decided.call)
                    .into_iter()
                    .map(|p| match p.principal_in_scope {
                        true => format!("{} (its condition did not hold)", p.policy),
                        false => format!("{} (scoped to other principals)", p.policy),
                    })
                    .collect();
                if !scoped.is_empty() {
                    result.reasons.push(format!(
                        "permits scoped to this call: {}",
                        scoped.join(", ")
                    ));
                }
            }
            result.policies = d.policies;
        }
        Err(e) => result.actual = format!("error: {e}"),
    }
    if let Some(required) = case.policies {
        result.missing = required
            .into_iter()
            .filter(|id| !result.policies.contains(id))
            .collect();
    }
    result
}

fn decide_rest(
    snap: &GatewaySnapshot,
    agent: &str,
    method: &str,
    path: &str,
    call: &RawCall,
) -> Result<DecidedCall, super::explain::ExplainError> {
    let path = with_query(path, &call.query);
    let mut headers: Vec<(String, String)> = call
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), scalar(v)))
        .collect();
    // `confidence` and `reason` travel as the agent's headers would.
    if let Some(c) = &call.confidence {
        headers.push((CONFIDENCE_HEADER.into(), scalar(c)));
    }
    if let Some(r) = &call.reason {
        headers.push((REASON_HEADER.into(), r.clone()));
    }
    // A string body with a declared `Content-Type` is sent as written (a
    // form, say); any other body as JSON.
    let typed = headers.iter().any(|(k, _)| k == "content-type");
    let body = call.body.as_ref().map(|b| match b {
        Value::String(s) if typed => s.clone(),
        other => other.to_string(),
    });
    let spec = HttpCallSpec {
        agent,
        method,
        path: &path,
        body: body.as_deref(),
        headers: &headers,
    };
    decide_http(snap, &spec)
}

/// A YAML scalar as the text a request would carry.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn with_query(path: &str, query: &BTreeMap<String, Value>) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    if query.is_empty() {
        return path.to_string();
    }
    let pairs: Vec<String> = query
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(&scalar(v), NON_ALPHANUMERIC)
            )
        })
        .collect();
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded_and_appended() {
        let mut q = BTreeMap::new();
        q.insert("limit".to_string(), Value::from(5));
        q.insert("q".to_string(), Value::from("a b&c"));
        assert_eq!(with_query("/crm/x", &q), "/crm/x?limit=5&q=a%20b%26c");
        assert_eq!(
            with_query("/crm/x?y=1", &q),
            "/crm/x?y=1&limit=5&q=a%20b%26c"
        );
        assert_eq!(with_query("/crm/x", &BTreeMap::new()), "/crm/x");
    }
}
