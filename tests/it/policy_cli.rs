//! The security team's CLI: `airlock check`, `airlock test` and
//! `airlock explain`, run as the real binary over written files.

use serde_json::Value;

use crate::support::*;

const CRM_POLICIES: &str = include_str!("../../policies/crm.cedar");

/// Writes a config over `policy` (as `p.cedar`) with a `crm` route; returns
/// the builder (which owns the temp dir) and the config path.
fn with_policy(policy: &str) -> (AirlockBuilder, String) {
    let b = AirlockBuilder::new().policy("p.cedar", policy).route(
        "crm",
        "/crm",
        "http://127.0.0.1:9/api",
    );
    let config = b.write().to_string_lossy().into_owned();
    (b, config)
}

/// Runs `airlock check` and returns (exit code, stdout).
fn check(policy: &str) -> (i32, String) {
    let (_b, config) = with_policy(policy);
    let (code, out, _) = run_cli(&["check", "--config", &config]);
    (code, out)
}

#[test]
fn check_accepts_the_shipped_policies() {
    let (code, out) = check(CRM_POLICIES);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: 5 policies"), "{out}");
    assert!(!out.contains("warning"), "{out}");
}

#[test]
fn check_reports_an_action_the_schema_does_not_have() {
    let (code, out) = check("\npermit (principal, action == Action::\"FETCH\", resource);\n");
    assert_eq!(code, 1);
    assert!(out.contains("p.cedar:2:30: "), "{out}");
    assert!(
        out.contains("unrecognized action `Action::\"FETCH\"`"),
        "{out}"
    );
    assert!(!out.contains("can never apply"), "reported twice: {out}");
}

#[test]
fn check_reports_an_entity_type_the_schema_does_not_have() {
    let (code, out) = check("permit (principal is User, action, resource);\n");
    assert_eq!(code, 1);
    assert!(out.contains("p.cedar:1:22: "), "{out}");
    assert!(out.contains("unrecognized entity type `User`"), "{out}");
}

#[test]
fn check_reports_a_scope_that_can_never_match() {
    // Valid types and actions, but no action takes a group as principal.
    let (code, out) = check(
        "@id(\"ok\")\npermit (principal, action == Action::\"GET\", resource);\n\n@id(\"dead\")\npermit (principal == Group::\"support\", action, resource);\n",
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("p.cedar:4:1: policy `dead` can never apply"),
        "{out}"
    );
    assert!(!out.contains("`ok`"), "{out}");
    // An action group that no request ever names directly.
    let (code, out) = check("permit (principal, action == Action::\"read\", resource);\n");
    assert_eq!(code, 1);
    assert!(
        out.contains("p.cedar:1:1: policy `p.cedar:1` can never apply"),
        "{out}"
    );
}

#[test]
fn check_warns_about_a_route_the_config_does_not_define() {
    let (code, out) =
        check("@id(\"typo\")\npermit (principal, action, resource == Route::\"cmr\");\n");
    assert_eq!(code, 0, "a warning does not fail the check: {out}");
    assert!(
        out.contains("warning: ")
            && out.contains("p.cedar:1:1: policy `typo` names `Route::\"cmr\"`"),
        "{out}"
    );
}

#[test]
fn check_reports_a_malformed_timeout() {
    let (code, out) = check(
        "permit (principal, action, resource);\n@id(\"gate\")\n@hold(\"why\")\n@timeout(\"soon\")\nforbid (principal, action, resource);\n",
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("p.cedar:2:1: policy `gate`: malformed `@timeout`"),
        "{out}"
    );
}

#[test]
fn check_accepts_only_url_elicitation_and_only_on_a_gate() {
    let (code, out) = check(
        "permit (principal, action, resource);\n@id(\"gate\")\n@hold(\"why\")\n@elicit(\"form\")\nforbid (principal, action, resource);\n",
    );
    assert_eq!(code, 1);
    assert!(
        out.contains(
            "p.cedar:2:1: policy `gate`: `@elicit(\"form\")` is unknown; use `@elicit(\"url\")`"
        ),
        "{out}"
    );
    let (code, out) =
        check("@id(\"plain\")\n@elicit(\"url\")\nforbid (principal, action, resource);\n");
    assert_eq!(code, 1);
    assert!(
        out.contains("policy `plain`: `@elicit` only applies to a `@hold` forbid"),
        "{out}"
    );
}

#[test]
fn check_reports_a_duplicate_id_with_both_places() {
    let (code, out) = check(
        "@id(\"same\")\npermit (principal, action, resource);\n@id(\"same\")\nforbid (principal, action, resource);\n",
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("p.cedar:3:1: policy id `same` is already used at "),
        "{out}"
    );
    assert!(out.contains("p.cedar:1"), "{out}");
}

#[test]
fn check_reports_hold_on_a_permit() {
    let (code, out) = check("\n\n@hold(\"why\")\npermit (principal, action, resource);\n");
    assert_eq!(code, 1);
    assert!(
        out.contains("p.cedar:3:1: policy `p.cedar:3`: `@hold` on a permit means nothing"),
        "{out}"
    );
}

/// Writes the CRM policies with one agent `bot` (group support) and
/// returns (builder, config path, a case file path).
fn crm_cases(cases: &str) -> (AirlockBuilder, String, String) {
    let (b, config) = {
        let b = AirlockBuilder::new()
            .policy("crm.cedar", CRM_POLICIES)
            .route("crm", "/crm", "http://127.0.0.1:9/api");
        let c = b.write().to_string_lossy().into_owned();
        (b, c)
    };
    let tests = b.dir().join("policies/tests");
    std::fs::create_dir_all(&tests).unwrap();
    let file = tests.join("crm.yaml");
    std::fs::write(&file, cases).unwrap();
    (b, config, file.to_string_lossy().into_owned())
}

#[test]
fn the_shipped_cases_pass_and_cover_every_shipped_policy() {
    let root = env!("CARGO_MANIFEST_DIR");
    let (code, out, err) = run_cli(&["test", "--config", &format!("{root}/config/airlock.yaml")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with("23 passed, 0 failed\n"), "{out}");
    assert!(
        !out.contains("no case is determined by"),
        "a shipped policy has no case: {out}"
    );
}

#[test]
fn a_failing_case_names_expected_actual_and_policies_and_exits_1() {
    let (_b, config, _) = crm_cases(
        r#"cases:
  - name: small refund
    agent: bot
    call: { method: POST, path: /crm/refunds, body: { amount: 5 } }
    expect: allow
  - name: deletes are fine, surely
    agent: bot
    call:
      method: DELETE
      path: /crm/customers/7
    expect: allow
  - name: customers can be created
    agent: bot
    call: { method: POST, path: /crm/customers, body: {} }
    expect: allow
  - name: refund held by the wrong policy
    agent: bot
    call: { method: POST, path: /crm/refunds, body: { amount: 500 } }
    expect: hold
    policies: [no-customer-deletes]
"#,
    );
    // No files named: `<policies>/tests/*.yaml` is the default.
    let (code, out, _) = run_cli(&["test", "--config", &config]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ok    small refund"), "{out}");
    assert!(out.contains("FAIL  deletes are fine, surely ("), "{out}");
    assert!(out.contains("crm.yaml:6:5)"), "{out}");
    assert!(out.contains("expected: allow\n      actual:   deny\n      determining policies: no-customer-deletes"), "{out}");
    assert!(
        out.contains("FAIL  refund held by the wrong policy"),
        "{out}"
    );
    assert!(
        out.contains("expected to be determined by: no-customer-deletes"),
        "{out}"
    );
    assert!(
        out.contains("reason: permits scoped to this call: support-issues-refunds (its condition did not hold)"),
        "{out}"
    );
    assert!(out.ends_with("1 passed, 3 failed\n"), "{out}");
}

#[test]
fn a_malformed_case_file_is_reported_with_file_line_col() {
    let (_b, config, file) = crm_cases(
        "cases:\n  - name: x\n    agent: bot\n    call: { method: GET, path: /crm/a }\n    expect: maybe\n",
    );
    let (code, out, _) = run_cli(&["test", "--config", &config, &file]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("error: {file}:5:13: unknown variant `maybe`")),
        "{out}"
    );
    assert!(out.ends_with("0 cases run\n"), "{out}");
}

#[test]
fn an_unreadable_case_file_runs_no_case_and_exits_1() {
    let (_b, config, good) = crm_cases(
        "cases:\n  - name: reads\n    agent: bot\n    call: { method: GET, path: /crm/a }\n    expect: allow\n",
    );
    let missing = format!("{good}.missing");
    let (code, out, _) = run_cli(&["test", "--config", &config, &good, &missing]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(&format!("error: {missing}:1:1: cannot read: ")),
        "{out}"
    );
    assert!(!out.contains("ok    reads"), "a partial run: {out}");
    assert!(!out.contains("no case is determined by"), "{out}");
    assert!(out.ends_with("0 cases run\n"), "{out}");
}

#[test]
fn a_case_file_with_no_cases_is_not_a_pass() {
    let (_b, config, file) = crm_cases("cases: []\n");
    let (code, out, _) = run_cli(&["test", "--config", &config, &file]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out, "0 cases run\n");
}

#[test]
fn explain_lists_the_permits_scoped_to_a_call_nothing_permits() {
    let (_b, config) = {
        let b = AirlockBuilder::new()
            .policy("crm.cedar", CRM_POLICIES)
            .route("crm", "/crm", "http://127.0.0.1:9/api");
        let c = b.write().to_string_lossy().into_owned();
        (b, c)
    };
    // Support may POST only to /crm/refunds; `intruder` is in no group.
    let explain = |agent: &str, method: &str| -> Value {
        let (code, out, err) = run_cli(&[
            "explain",
            "--config",
            &config,
            "--agent",
            agent,
            "--method",
            method,
            "--path",
            "/crm/customers",
            "--body",
            "{}",
        ]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let v = explain("bot", "POST");
    assert_eq!(v["verdict"], "deny");
    assert_eq!(
        v["closest_permits"]["note"],
        "nothing permits this; these permits are scoped to it"
    );
    let permits = v["closest_permits"]["permits"].as_array().unwrap();
    assert_eq!(permits.len(), 1, "{v}");
    assert_eq!(permits[0]["policy"], "support-issues-refunds");
    assert_eq!(permits[0]["principal_in_scope"], true);
    assert_eq!(permits[0]["line"], 12);

    let v = explain("intruder", "GET");
    let permits = v["closest_permits"]["permits"].as_array().unwrap();
    assert_eq!(permits[0]["policy"], "support-reads-crm");
    assert_eq!(permits[0]["principal_in_scope"], false);

    // A deny by a forbid names its policy; no closest permits.
    let v = explain("bot", "DELETE");
    assert_eq!(v["policies"], serde_json::json!(["no-customer-deletes"]));
    assert!(v["closest_permits"].is_null());
}
