use super::*;

#[test]
fn paths_are_tidied_except_through_symbolic_links() {
    assert_eq!(tidy(Path::new("config/../policies")), Path::new("policies"));
    assert_eq!(tidy(Path::new("./a/./b/../c")), Path::new("a/c"));
    assert_eq!(tidy(Path::new("../x")), Path::new("../x"));
    assert_eq!(tidy(Path::new("/etc/airlock/../p")), Path::new("/etc/p"));
    assert_eq!(tidy(Path::new("config/..")), Path::new("."));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
    let through = dir.path().join("link/../p");
    assert_eq!(tidy(&through), through);
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(Path::new("/etc/airlock/airlock.yaml"), text)
}

#[test]
fn minimal_config_gets_defaults() {
    let c = load("listen: 127.0.0.1:8080\n").unwrap();
    assert_eq!(c.limits.max_body, 1024 * 1024);
    assert_eq!(c.admin.listen.port(), 9090);
    assert_eq!(c.policies, PathBuf::from("/etc/airlock/policies"));
    assert_eq!(c.approvals.wait, Duration::from_secs(25));
    assert_eq!(c.approvals.progress_interval, Duration::from_secs(5));
    assert_eq!(c.admin.store_timeout, Duration::from_secs(2));
}

#[test]
fn an_inbox_session_lasts_twelve_hours_unless_configured() {
    let c = load("listen: 127.0.0.1:8080\n").unwrap();
    assert_eq!(c.admin.session_ttl, Duration::from_secs(12 * 3600));
    let c = load("listen: 127.0.0.1:8080\nadmin:\n  session_ttl: 30m\n").unwrap();
    assert_eq!(c.admin.session_ttl, Duration::from_secs(1800));
}

#[test]
fn the_admin_store_timeout_is_a_duration() {
    let c = load("listen: 127.0.0.1:8080\nadmin:\n  store_timeout: 500ms\n").unwrap();
    assert_eq!(c.admin.store_timeout, Duration::from_millis(500));
    assert!(load("listen: 127.0.0.1:8080\nadmin:\n  store_timeout: soon\n").is_err());
}

#[test]
fn a_route_may_inject_credentials_but_not_framing_hop_by_hop_or_airlock_headers() {
    let route = |header: &str| {
        format!(
            "listen: 127.0.0.1:8080\nroutes:\n  - name: crm\n    prefix: /crm\n    upstream: http://127.0.0.1:9000\n    headers:\n      {header}: x\n"
        )
    };
    let c = load(&route("Authorization")).unwrap();
    assert_eq!(c.routes[0].headers[0].0, "authorization");
    for (header, why) in [
        ("Content-Length", "the exact body"),
        ("host", "the upstream URL"),
        ("Transfer-Encoding", "hop-by-hop"),
        ("connection", "hop-by-hop"),
        ("x-request-id", "Airlock's own"),
        ("Airlock-Approval", "Airlock's own"),
    ] {
        let err = load(&route(header)).unwrap_err();
        let p = &err.problems()[0];
        let lower = header.to_ascii_lowercase();
        assert!(
            p.message
                .contains(&format!("route `crm`: header `{lower}` cannot be injected"))
                && p.message.contains(why),
            "{}",
            p.message
        );
    }
}

#[test]
fn progress_interval_is_bounded() {
    let c = load("listen: 127.0.0.1:8080\napprovals:\n  progress_interval: 250ms\n").unwrap();
    assert_eq!(c.approvals.progress_interval, Duration::from_millis(250));
    for bad in ["10ms", "2h", "soon"] {
        let err = load(&format!(
            "listen: 127.0.0.1:8080\napprovals:\n  progress_interval: {bad}\n"
        ))
        .unwrap_err();
        let p = &err.problems()[0];
        assert_eq!(p.line, 3, "{err}");
        assert!(p.message.contains(bad), "{}", p.message);
    }
}

#[test]
fn pending_holds_per_agent_are_capped_at_one_or_more() {
    let c = load("listen: 127.0.0.1:8080\n").unwrap();
    assert_eq!(c.approvals.max_pending_per_agent, 100);
    let c = load("listen: 127.0.0.1:8080\napprovals:\n  max_pending_per_agent: 3\n").unwrap();
    assert_eq!(c.approvals.max_pending_per_agent, 3);
    let err = load("listen: 127.0.0.1:8080\napprovals:\n  max_pending_per_agent: 0\n").unwrap_err();
    let p = &err.problems()[0];
    assert_eq!(p.line, 3, "{err}");
    assert!(p.message.contains("at least 1"), "{}", p.message);
}

#[test]
fn env_expansion_and_missing_variable() {
    std::env::set_var("AIRLOCK_TEST_KEY", "s3cret");
    let c = load("listen: 127.0.0.1:8080\nagents:\n  - id: bot\n    key: ${AIRLOCK_TEST_KEY}\n")
        .unwrap();
    assert_eq!(c.agents[0].key_sha256, sha256(b"s3cret"));

    let err =
        load("listen: 127.0.0.1:8080\nadmin:\n  token: ${AIRLOCK_NOPE_NOT_SET}\n").unwrap_err();
    let p = &err.problems()[0];
    assert_eq!(p.line, 3);
    assert!(p.message.contains("AIRLOCK_NOPE_NOT_SET"), "{}", p.message);
}

#[test]
fn duplicate_keys_are_rejected_with_a_location() {
    let err = load("listen: 127.0.0.1:8080\nlisten: 127.0.0.1:8081\n").unwrap_err();
    assert_eq!(err.problems()[0].line, 2, "{err}");
}

#[test]
fn bad_values_are_each_reported() {
    let err = load(
        "listen: nowhere\nroutes:\n  - name: a\n    prefix: /a\n    upstream: ftp://x\n  - name: a\n    prefix: /b\n    upstream: http://127.0.0.1:1\n",
    )
    .unwrap_err();
    let problems = err.problems();
    assert_eq!(problems.len(), 3, "{err}");
    assert_eq!(problems[0].line, 1);
    assert!(problems[1].message.contains("ftp"), "{err}");
    assert!(problems[2].message.contains("`a`"), "{err}");
}

#[test]
fn route_prefix_is_normalized() {
    let c = load(
        "listen: 127.0.0.1:8080\nroutes:\n  - name: crm\n    prefix: crm/\n    upstream: http://127.0.0.1:9000/mcp\n    protocol: mcp\n",
    )
    .unwrap();
    assert_eq!(c.routes[0].prefix, "/crm");
    assert_eq!(c.routes[0].protocol, Protocol::Mcp);
}

#[test]
fn route_reading_options_are_checked() {
    let route = |extra: &str| {
        load(&format!(
            "listen: 127.0.0.1:8080\nroutes:\n  - name: t\n    prefix: /Ops\n    upstream: http://127.0.0.1:9000\n    protocol: mcp\n{extra}"
        ))
    };
    let c = route("").unwrap();
    let t = &c.routes[0];
    assert!(!t.path_params && !t.case_insensitive && t.allowed_origins.is_empty());
    assert_eq!(t.prefix, "/Ops");
    let c = route("    path_params: allow\n    case_insensitive: true\n    allowed_origins: [\"https://app.example\", \"http://localhost:3000\"]\n").unwrap();
    let t = &c.routes[0];
    assert!(t.path_params && t.case_insensitive);
    assert_eq!(t.prefix, "/ops");
    assert_eq!(
        t.allowed_origins,
        ["https://app.example", "http://localhost:3000"]
    );
    for bad in [
        "    path_params: strip\n",
        "    allowed_origins: [\"https://app.example/x\"]\n",
        "    allowed_origins: [\"app.example\"]\n",
    ] {
        let err = route(bad).unwrap_err();
        assert_eq!(err.problems().len(), 1, "{bad}: {err}");
    }
    let err = load("listen: 127.0.0.1:8080\nroutes:\n  - name: t\n    prefix: /a;b\n    upstream: http://127.0.0.1:9000\n    allowed_origins: [\"https://app.example\"]\n").unwrap_err();
    assert_eq!(err.problems().len(), 2, "{err}");
}

#[test]
fn audit_takes_a_path_or_a_mapping_naming_its_sink() {
    let audit = |yaml: &str| load(&format!("listen: 127.0.0.1:8080\n{yaml}")).map(|c| c.audit);
    assert_eq!(audit("").unwrap(), AuditConfig::default());
    assert_eq!(
        audit("audit: logs/audit.jsonl\n").unwrap().target,
        AuditTarget::File(PathBuf::from("/etc/airlock/logs/audit.jsonl"))
    );
    let c = audit("audit:\n  address: udp://127.0.0.1:514\n  on_failure: continue\n  buffer: 50\n")
        .unwrap();
    assert_eq!(
        c.target,
        AuditTarget::Syslog(SyslogAddress::Udp("127.0.0.1:514".into()))
    );
    assert_eq!(c.on_failure, AuditOnFailure::Continue);
    assert_eq!(c.buffer, 50);
    assert_eq!(
        audit("audit:\n  sink: otlp\n  url: http://c:4318/v1/logs\n")
            .unwrap()
            .target,
        AuditTarget::Otlp("http://c:4318/v1/logs".into())
    );
    assert_eq!(
        audit("audit:\n  sink: syslog\n  address: unix:///dev/log\n")
            .unwrap()
            .target,
        AuditTarget::Syslog(SyslogAddress::Unix("/dev/log".into()))
    );
}

#[test]
fn audit_settings_that_cannot_work_are_reported_where_written() {
    for (yaml, says) in [
        ("audit:\n  sink: file\n", "needs `audit.path`"),
        (
            "audit:\n  sink: syslog\n  address: 127.0.0.1:514\n",
            "not a syslog address",
        ),
        (
            "audit:\n  sink: otlp\n  url: grpc://c:4317\n",
            "must start with `http://`",
        ),
        ("audit:\n  sink: kafka\n", "`kafka` is not one of"),
        (
            "audit:\n  path: a.jsonl\n  on_failure: ignore\n",
            "`ignore` is not `deny` or `continue`",
        ),
        (
            "audit:\n  path: a.jsonl\n  buffer: 0\n",
            "must be between 1",
        ),
        ("audit:\n  pth: a.jsonl\n", "a mapping of `sink`, `path`"),
    ] {
        let err = load(&format!("listen: 127.0.0.1:8080\n{yaml}")).unwrap_err();
        let p = &err.problems()[0];
        // A mapping is located at its first setting.
        let line = if yaml.starts_with("audit:\n") { 3 } else { 2 };
        assert_eq!(p.line, line, "{yaml}: {err}");
        assert!(p.message.contains(says), "{yaml}: {}", p.message);
    }
}
