//! `airlock check` and `airlock explain` through the real binary.

use serde_json::Value;

use crate::support::*;

fn shipped_config() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/config/airlock.yaml").to_string()
}

fn explain(args: &[&str]) -> Value {
    let config = shipped_config();
    let mut all = vec!["explain", "--config", config.as_str()];
    all.extend_from_slice(args);
    let (code, out, err) = run_cli(&all);
    assert_eq!(code, 0, "explain failed: {out}{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn the_shipped_configuration_checks_clean() {
    let (code, out, err) = run_cli(&["check", "--config", &shipped_config()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok:"), "{out}");
}

#[test]
fn explain_reports_each_verdict_with_its_policies() {
    let allow = explain(&[
        "--agent",
        "support-bot",
        "--method",
        "GET",
        "--path",
        "/crm/customers",
    ]);
    assert_eq!(allow["verdict"], "allow");
    assert_eq!(allow["policies"], serde_json::json!(["support-reads-crm"]));

    let deny = explain(&[
        "--agent",
        "support-bot",
        "--method",
        "DELETE",
        "--path",
        "/crm/customers/c-1",
    ]);
    assert_eq!(deny["verdict"], "deny");
    // The confidence gate also determines it: a DELETE is a write the
    // agent stated no confidence for; the plain forbid makes it a deny.
    assert_eq!(
        deny["policies"],
        serde_json::json!(["no-customer-deletes", "unsure-crm-writes-need-review"])
    );
    assert!(deny["reasons"][0]
        .as_str()
        .unwrap()
        .contains("may not delete"));

    let hold = explain(&[
        "--agent",
        "support-bot",
        "--method",
        "POST",
        "--path",
        "/crm/refunds",
        "--body",
        r#"{"amount": 250, "customer_id": "c-1"}"#,
    ]);
    assert_eq!(hold["verdict"], "hold");
    assert_eq!(
        hold["policies"],
        serde_json::json!([
            "large-refunds-need-approval",
            "unsure-crm-writes-need-review"
        ])
    );
    assert_eq!(hold["gates"][0]["approvers"], "finance");
    assert_eq!(hold["gates"][0]["timeout"], 900);
    assert_eq!(hold["context"]["body"]["amount"], 250);

    let small = explain(&[
        "--agent",
        "support-bot",
        "--method",
        "POST",
        "--path",
        "/crm/refunds",
        "--body",
        r#"{"amount": 20}"#,
    ]);
    // No confidence stated: the escalation gate holds even a small refund.
    assert_eq!(small["verdict"], "hold");
    assert_eq!(
        small["policies"],
        serde_json::json!(["unsure-crm-writes-need-review"])
    );
}

#[test]
fn explain_judges_the_confidence_an_agent_states_for_rest_and_tools() {
    let refund = |confidence: &str| {
        explain(&[
            "--agent",
            "support-bot",
            "--tool",
            "crm-mcp/issue_refund",
            "--args",
            r#"{"customer_id": "c-1", "amount": 40}"#,
            "--confidence",
            confidence,
            "--reason",
            "charged twice",
        ])
    };
    let unsure = refund("0.65");
    assert_eq!(unsure["verdict"], "hold", "{unsure}");
    assert_eq!(unsure["context"]["agent_reason"], "charged twice");
    assert_eq!(
        unsure["policies"],
        serde_json::json!(["unsure-crm-tool-writes-need-review"])
    );
    assert_eq!(refund("0.7")["verdict"], "allow");

    let rest = explain(&[
        "--agent",
        "support-bot",
        "--method",
        "POST",
        "--path",
        "/crm/refunds",
        "--body",
        r#"{"amount": 40, "customer_id": "c-1"}"#,
        "--confidence",
        "0.9",
    ]);
    assert_eq!(rest["verdict"], "allow", "{rest}");

    let config = shipped_config();
    let (code, _, err) = run_cli(&[
        "explain",
        "--config",
        &config,
        "--agent",
        "support-bot",
        "--method",
        "GET",
        "--path",
        "/crm/customers",
        "--confidence",
        "1.5",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("confidence `1.5`"), "{err}");
}

#[test]
fn explain_refuses_unknown_agents_clearly() {
    let config = shipped_config();
    let (code, _, err) = run_cli(&[
        "explain", "--config", &config, "--agent", "nobody", "--method", "GET", "--path", "/crm/x",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("agent `nobody` is not configured"), "{err}");
}

#[test]
fn check_prints_every_problem_with_file_line_and_column() {
    let builder = AirlockBuilder::new()
        .policy(
            "broken.cedar",
            "permit(principal, action, resource);\n\n@id(\"typo\")\npermit(principal, action == Action::\"GET\", resource)\n  when { context.bdy.amount > 1 };\n",
        )
        .policy("syntax.cedar", "// first line\nforbid(principal action, resource);\n");
    let config = builder.write();
    let (code, out, _) = run_cli(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("broken.cedar:5:") && l.contains("bdy")),
        "{out}"
    );
    assert!(lines.iter().any(|l| l.contains("syntax.cedar:2:")), "{out}");
}

#[test]
fn check_reports_config_mistakes_at_their_line() {
    let builder = AirlockBuilder::permitting_everything();
    let config = builder.write();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("demo:\n  listen: ${AIRLOCK_TEST_UNSET_VARIABLE}\n");
    std::fs::write(&config, &text).unwrap();
    let line = text.lines().count();
    let (code, out, _) = run_cli(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains(&format!("airlock.yaml:{line}:")), "{out}");
    assert!(out.contains("AIRLOCK_TEST_UNSET_VARIABLE"), "{out}");
}

#[test]
fn check_refuses_a_route_that_injects_the_length_and_keeps_its_credentials() {
    let builder = AirlockBuilder::permitting_everything().route_yaml(
        "  - name: crm\n    prefix: /crm\n    upstream: http://127.0.0.1:9\n    headers:\n      Content-Length: \"5\"\n      Authorization: Bearer upstream-key\n",
    );
    let config = builder.write();
    let text = std::fs::read_to_string(&config).unwrap();
    let line = 1 + text
        .lines()
        .position(|l| l.contains("name: crm"))
        .expect("the route is in the config");
    let (code, out, _) = run_cli(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(&format!("airlock.yaml:{line}:"))
                && l.contains("header `content-length` cannot be injected")),
        "{out}"
    );
    assert!(!out.contains("authorization"), "{out}");
}

#[test]
fn serve_refuses_a_bad_worker_count_instead_of_guessing() {
    let builder = AirlockBuilder::permitting_everything();
    let config = builder.write();
    let out = std::process::Command::new(airlock_bin())
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("AIRLOCK_WORKERS", "zero")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started anyway: {err}");
    assert!(err.contains("AIRLOCK_WORKERS"), "{err}");
    assert!(err.contains("`zero`"), "{err}");
}

/// Runs `airlock` in `dir` with `stdin`, and returns (exit code, stdout,
/// stderr).
fn run_in(dir: &std::path::Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(airlock_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("AIRLOCK_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run airlock");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn outside_the_repository_serve_names_both_ways_out_and_init_writes_a_starter_that_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_in(dir.path(), &["serve"], "");
    assert_eq!(code, 1);
    assert!(
        err.contains("--config FILE") && err.contains("airlock init"),
        "{err}"
    );
    assert!(err.contains("$AIRLOCK_CONFIG"), "{err}");

    let (code, out, err) = run_in(dir.path(), &["init"], "");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("config/airlock.yaml"), "{out}");

    // With no --config, ./config/airlock.yaml is found.
    let (code, out, err) = run_in(dir.path(), &["check"], "");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok:"), "{out}");
    let (code, out, err) = run_in(dir.path(), &["test"], "");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" passed, 0 failed"), "{out}");

    // A second init changes nothing.
    let policy = dir.path().join("policies/crm.cedar");
    std::fs::write(&policy, "// edited").unwrap();
    let (code, _, err) = run_in(dir.path(), &["init"], "");
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&policy).unwrap(), "// edited");
}

#[test]
fn keys_hash_prints_the_sha256_the_config_takes() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run_in(dir.path(), &["keys", "hash"], "dev-agent-key\n");
    assert_eq!(code, 0, "{err}");
    let expected = hex::encode(airlock::config::sha256(b"dev-agent-key"));
    assert_eq!(out.trim(), expected);
    let (code, _, err) = run_in(dir.path(), &["keys", "hash"], "");
    assert_eq!(code, 1);
    assert!(err.contains("no key on stdin"), "{err}");
}

#[test]
fn a_taken_port_names_its_listener_and_says_the_cause_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run_in(dir.path(), &["init"], "").0, 0);
    let config = dir.path().join("config/airlock.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        "listen: 127.0.0.1:8080",
        &format!("listen: 127.0.0.1:{port}"),
    );
    std::fs::write(&config, text).unwrap();

    let (code, _, err) = run_in(dir.path(), &["serve"], "");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}` for the proxy (`listen`)")),
        "{err}"
    );
    assert_eq!(err.matches("os error").count(), 1, "{err}");
}

#[test]
fn explain_says_a_refusal_once() {
    let (code, _, err) = run_cli(&[
        "explain",
        "--config",
        &shipped_config(),
        "--agent",
        "support-bot",
        "--method",
        "GET",
        "--path",
        "/nowhere",
    ]);
    assert_eq!(code, 1);
    assert_eq!(err.matches("no route matches").count(), 1, "{err}");
}

#[test]
fn check_and_serve_refuse_a_malformed_postgres_store_with_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run_in(dir.path(), &["init"], "").0, 0);
    let config = dir.path().join("config/airlock.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        "store: sqlite://../airlock.db",
        "store: postgres://postgres@127.0.0.1:notaport/test",
    );
    std::fs::write(&config, text).unwrap();
    let (check_code, check_out, _) = run_in(dir.path(), &["check"], "");
    let (serve_code, _, serve_err) = run_in(dir.path(), &["serve"], "");
    assert_eq!((check_code, serve_code), (1, 1));
    let said = "the PostgreSQL store URL does not parse";
    assert!(check_out.contains(said), "{check_out}");
    assert!(serve_err.contains(said), "{serve_err}");
}
