//! Verdict semantics on small policy sets written to a temp directory.

use super::*;

const SCHEMA: &str = r#"
entity Group;
entity Agent in [Group] = { "team"?: String };
entity Route;
type Body = { "amount"?: Long, "note"?: String, "customer"?: { "id": String } };
type Ctx = { "method": String, "path": String, "body"?: Body };
action "read";
action "write";
action "GET" in ["read"] appliesTo { principal: [Agent], resource: [Route], context: Ctx };
action "POST" in ["write"] appliesTo { principal: [Agent], resource: [Route], context: Ctx };
"#;

fn snapshot(policies: &[(&str, &str)]) -> Result<PolicySnapshot, Vec<SourceProblem>> {
    let dir = std::env::temp_dir().join(format!("airlock-policy-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("schema.cedarschema"), SCHEMA).unwrap();
    for (name, text) in policies {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let directory = Directory {
        agents: vec![PrincipalSpec {
            id: "bot".into(),
            groups: vec!["support".into()],
            attributes: BTreeMap::new(),
        }],
        routes: vec!["crm".into()],
        config_hash: String::new(),
    };
    let snap = PolicySnapshot::load(&dir, &directory);
    let _ = std::fs::remove_dir_all(&dir);
    snap
}

fn call(action: &str, amount: Option<serde_json::Value>) -> CallRequest {
    let mut context = serde_json::Map::new();
    context.insert("method".into(), action.into());
    context.insert("path".into(), "/crm/refunds".into());
    if let Some(a) = amount {
        context.insert("body".into(), serde_json::json!({ "amount": a }));
    }
    CallRequest {
        agent: "bot".into(),
        action: action.into(),
        resource: Resource::Route("crm".into()),
        context,
    }
}

const PERMIT_WRITES: &str =
    r#"@id("writes") permit(principal in Group::"support", action in Action::"write", resource);"#;
const GATE: &str = r#"@id("big") @hold("big refunds") @approvers("finance")
forbid(principal, action == Action::"POST", resource)
when { context has body && context.body has amount && context.body.amount > 100 };"#;

#[test]
fn a_satisfied_gate_over_a_permit_holds() {
    let s = snapshot(&[("a.cedar", PERMIT_WRITES), ("b.cedar", GATE)]).unwrap();
    let d = s.decide_now(&call("POST", Some(500.into()))).unwrap();
    match d.verdict {
        Verdict::Hold { gates } => {
            assert_eq!(gates.len(), 1);
            assert_eq!(gates[0].policy, "big");
            assert_eq!(gates[0].approvers.as_deref(), Some("finance"));
        }
        other => panic!("expected hold, got {other:?}"),
    }
    let d = s.decide_now(&call("POST", Some(5.into()))).unwrap();
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.policies, vec!["writes"]);
}

#[test]
fn a_policy_id_with_quotes_is_named_as_written_and_keeps_its_reason() {
    let quoted = r#"@id("no \"big\" refunds\\now") @reason("over the limit")
forbid(principal, action == Action::"POST", resource)
when { context has body && context.body has amount && context.body.amount > 100 };"#;
    let s = snapshot(&[("a.cedar", PERMIT_WRITES), ("b.cedar", quoted)]).unwrap();
    let d = s.decide_now(&call("POST", Some(500.into()))).unwrap();
    let id = r#"no "big" refunds\now"#;
    assert_eq!(d.policies, vec![id]);
    match d.verdict {
        Verdict::Deny { reasons } => {
            assert_eq!(reasons, vec![format!("`{id}`: over the limit")]);
        }
        other => panic!("expected deny, got {other:?}"),
    }
    // An evaluation error names it as written too.
    let d = s.decide_now(&call("POST", Some("lots".into()))).unwrap();
    assert_eq!(d.policies, vec![id]);
    assert!(d.verdict.name() == "deny");
}

#[test]
fn a_gate_with_nothing_permitting_behind_it_is_a_deny() {
    let s = snapshot(&[("b.cedar", GATE)]).unwrap();
    let d = s.decide_now(&call("POST", Some(500.into()))).unwrap();
    match d.verdict {
        Verdict::Deny { reasons } => assert!(reasons[0].contains("even with approval")),
        other => panic!("expected deny, got {other:?}"),
    }
}

#[test]
fn a_plain_forbid_beside_a_gate_can_never_be_lifted() {
    let plain = r#"@id("never") forbid(principal, action == Action::"POST", resource)
        when { context has body && context.body has amount && context.body.amount > 400 };"#;
    let s = snapshot(&[
        ("a.cedar", PERMIT_WRITES),
        ("b.cedar", GATE),
        ("c.cedar", plain),
    ])
    .unwrap();
    let d = s.decide_now(&call("POST", Some(500.into()))).unwrap();
    assert_eq!(d.verdict.name(), "deny");
    assert_eq!(d.policies, vec!["never", "big"], "plain forbids come first");
    // Under the plain forbid's threshold only the gate applies.
    let d = s.decide_now(&call("POST", Some(200.into()))).unwrap();
    assert_eq!(d.verdict.name(), "hold");
}

#[test]
fn an_erroring_forbid_denies() {
    let s = snapshot(&[("a.cedar", PERMIT_WRITES), ("b.cedar", GATE)]).unwrap();
    let d = s.decide_now(&call("POST", Some("lots".into()))).unwrap();
    assert_eq!(d.verdict.name(), "deny");
    assert_eq!(d.policies, vec!["big"]);
    assert_eq!(d.errors.len(), 1);
}

#[test]
fn shadow_policies_are_reported_but_do_not_decide() {
    let shadow = r#"@id("try-blocking-writes") @mode("shadow") forbid(principal, action == Action::"POST", resource);"#;
    let s = snapshot(&[("a.cedar", PERMIT_WRITES), ("s.cedar", shadow)]).unwrap();
    let d = s.decide_now(&call("POST", None)).unwrap();
    assert_eq!(d.verdict, Verdict::Allow);
    let sh = d.shadow.expect("shadow outcome");
    assert_eq!(sh.verdict, "deny");
    assert_eq!(sh.policies, vec!["try-blocking-writes"]);
}

#[test]
fn ids_come_from_annotations_or_file_and_line() {
    let text = "\n\npermit(principal, action in Action::\"read\", resource);\n";
    let s = snapshot(&[("reads.cedar", text)]).unwrap();
    let d = s.decide_now(&call("GET", None)).unwrap();
    assert_eq!(d.policies, vec!["reads.cedar:3"]);
}

#[test]
fn a_set_that_does_not_validate_is_not_loaded() {
    let bad = r#"permit(principal, action, resource) when { context.body.amount > "x" };"#;
    let problems = snapshot(&[("a.cedar", PERMIT_WRITES), ("bad.cedar", bad)])
        .err()
        .expect("must not load");
    assert!(
        problems.iter().all(|p| p.file.ends_with("bad.cedar")),
        "{problems:?}"
    );
    let dup = snapshot(&[("a.cedar", PERMIT_WRITES), ("b.cedar", PERMIT_WRITES)])
        .err()
        .expect("duplicate ids must not load");
    assert!(dup[0].message.contains("already used"), "{dup:?}");
}

mod index_equivalence {
    //! The scope index must never change a verdict: for generated policy
    //! sets and requests, the indexed decision equals the decision over
    //! every policy.
    use super::*;
    use proptest::prelude::*;

    fn principal() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("principal".to_string()),
            (0..3u8).prop_map(|i| format!("principal == Agent::\"a{i}\"")),
            (0..2u8).prop_map(|i| format!("principal in Group::\"g{i}\"")),
        ]
    }

    fn action() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("action".to_string()),
            prop_oneof![Just("GET"), Just("POST")]
                .prop_map(|a| format!("action == Action::\"{a}\"")),
            prop_oneof![Just("read"), Just("write")]
                .prop_map(|a| format!("action in Action::\"{a}\"")),
            Just("action in [Action::\"GET\", Action::\"write\"]".to_string()),
        ]
    }

    fn resource() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("resource".to_string()),
            (0..3u8).prop_map(|i| format!("resource == Route::\"r{i}\"")),
            (0..3u8).prop_map(|i| format!("resource in Route::\"r{i}\"")),
            Just("resource is Route".to_string()),
        ]
    }

    fn condition() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            (0..200i64).prop_map(|k| format!(
                " when {{ context has body && context.body has amount && context.body.amount > {k} }}"
            )),
            (0..200i64).prop_map(|k| format!(
                " when {{ context has body && context.body has amount && context.body.amount < {k} }}"
            )),
            // Whole-record uses and presence tests: what context pruning
            // must never change.
            Just(" when { context has body && context.body has customer && context.body.customer == {\"id\": \"c1\"} }".to_string()),
            Just(" when { context has body && context.body has note }".to_string()),
            Just(" when { context has body && context.body has customer }".to_string()),
            Just(" when { context.method == \"GET\" }".to_string()),
        ]
    }

    fn policy() -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            any::<bool>(),
            principal(),
            action(),
            resource(),
            condition(),
        )
            .prop_map(|(permit, hold, p, a, r, c)| {
                let (effect, ann) = match (permit, hold) {
                    (true, _) => ("permit", ""),
                    (false, true) => ("forbid", "@hold(\"gate\") "),
                    (false, false) => ("forbid", ""),
                };
                format!("{ann}{effect}({p}, {a}, {r}){c};")
            })
    }

    fn request(
    ) -> impl Strategy<Value = (String, &'static str, String, Option<serde_json::Value>, u8)> {
        (
            (0..3u8).prop_map(|i| format!("a{i}")),
            prop_oneof![Just("GET"), Just("POST")],
            (0..3u8).prop_map(|i| format!("r{i}")),
            // A string amount makes conditions fail to evaluate: fail-closed
            // must agree too.
            proptest::option::of(prop_oneof![
                (0..250i64).prop_map(serde_json::Value::from),
                Just(serde_json::Value::from("lots")),
            ]),
            0..4u8,
        )
    }

    fn load(policies: &[String]) -> PolicySnapshot {
        let dir = std::env::temp_dir().join(format!("airlock-prop-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("schema.cedarschema"), SCHEMA).unwrap();
        std::fs::write(dir.join("p.cedar"), policies.join("\n")).unwrap();
        let directory = Directory {
            agents: (0..3)
                .map(|i| PrincipalSpec {
                    id: format!("a{i}"),
                    groups: if i == 2 {
                        vec![]
                    } else {
                        vec![format!("g{i}")]
                    },
                    attributes: BTreeMap::new(),
                })
                .collect(),
            routes: (0..3).map(|i| format!("r{i}")).collect(),
            config_hash: String::new(),
        };
        let snap = PolicySnapshot::load(&dir, &directory);
        let _ = std::fs::remove_dir_all(&dir);
        snap.unwrap_or_else(|p| panic!("generated set did not load: {p:?}\n{policies:?}"))
    }

    #[test]
    fn a_repeated_call_is_memoized_and_other_values_are_not_confused_with_it() {
        let snap = load(&[
            r#"@id("small") permit(principal, action, resource) when { context has body && context.body has amount && context.body.amount < 100 };"#.to_string(),
        ]);
        let with_amount = |amount: i64| {
            let mut c = call("POST", Some(serde_json::Value::from(amount)));
            c.agent = "a0".into();
            c.resource = Resource::Route("r0".into());
            c
        };
        assert_eq!(
            snap.decide_now(&with_amount(50)).unwrap().verdict,
            Verdict::Allow
        );
        assert_eq!(snap.memo.len(), 1);
        assert!(matches!(
            snap.decide_now(&with_amount(500)).unwrap().verdict,
            Verdict::Deny { .. }
        ));
        // From the memo now, and each value keeps its own verdict.
        let again = snap.decide_now(&with_amount(50)).unwrap();
        assert_eq!(again.verdict, Verdict::Allow);
        assert_eq!(again.policies, vec!["small".to_string()]);
        assert!(matches!(
            snap.decide_now(&with_amount(500)).unwrap().verdict,
            Verdict::Deny { .. }
        ));
        assert_eq!(snap.memo.len(), 2);
        // A note the policy does not read does not make a new entry.
        let mut noted = with_amount(50);
        if let Some(serde_json::Value::Object(b)) = noted.context.get_mut("body") {
            b.insert("note".into(), "hello".into());
        }
        assert_eq!(snap.decide_now(&noted).unwrap().verdict, Verdict::Allow);
        assert_eq!(snap.memo.len(), 2);
    }

    #[test]
    fn each_thread_keeps_its_own_memo_and_a_new_snapshot_starts_empty() {
        let policies = [
            r#"@id("small") permit(principal, action, resource) when { context has body && context.body has amount && context.body.amount < 100 };"#.to_string(),
        ];
        let (old, new) = (load(&policies), load(&policies));
        let small = || {
            let mut c = call("POST", Some(serde_json::Value::from(50)));
            c.agent = "a0".into();
            c.resource = Resource::Route("r0".into());
            c
        };
        assert!(!old.decide_now(&small()).unwrap().memoized);
        assert!(old.decide_now(&small()).unwrap().memoized);
        // Another thread has not seen the call: it decides afresh, and
        // then from its own memo.
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(old.memo.len(), 0);
                assert!(!old.decide_now(&small()).unwrap().memoized);
                assert!(old.decide_now(&small()).unwrap().memoized);
            });
        });
        // A reloaded snapshot never answers from the old one's decisions,
        // and its first decision here drops them.
        assert!(!new.decide_now(&small()).unwrap().memoized);
        assert_eq!((old.memo.len(), new.memo.len()), (0, 1));
        assert!(!old.decide_now(&small()).unwrap().memoized);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn the_index_never_changes_a_verdict(
            policies in proptest::collection::vec(policy(), 1..24),
            requests in proptest::collection::vec(request(), 1..12),
        ) {
            let snap = load(&policies);
            // The reference for holds: the same set with its gates removed.
            let ungated: Vec<String> =
                policies.iter().filter(|p| !p.starts_with("@hold")).cloned().collect();
            let lifted_snap = (!ungated.is_empty()).then(|| load(&ungated));
            // Twice over: the second round's decisions come from the memo
            // where the first round's were kept, and must still agree.
            let twice = requests.iter().chain(requests.iter()).cloned();
            for (agent, action, route, amount, extra) in twice {
                let mut c = call(action, amount);
                // More body fields, including a record with an attribute
                // the schema does not declare, which a whole-record
                // comparison must still see.
                let more = match extra {
                    0 => serde_json::json!({}),
                    1 => serde_json::json!({"note": "hello"}),
                    2 => serde_json::json!({"customer": {"id": "c1"}}),
                    _ => serde_json::json!({"note": "x", "customer": {"id": "c1", "tier": "gold"}}),
                };
                if let serde_json::Value::Object(more) = more {
                    if !more.is_empty() {
                        let body = c.context.entry("body").or_insert(serde_json::json!({}));
                        if let Some(b) = body.as_object_mut() {
                            b.extend(more);
                        }
                    }
                }
                c.agent = agent;
                c.resource = Resource::Route(route);
                let indexed = snap.decide_now(&c).unwrap();
                let full = snap.decide_unindexed(&c).unwrap();
                // Same verdict, same determining policies, same reasons.
                prop_assert_eq!(&indexed.verdict, &full.verdict, "{:?}", c);
                prop_assert_eq!(&indexed.policies, &full.policies);
                prop_assert_eq!(indexed.errors.len(), full.errors.len());
                // A hold is exactly "only gates deny it, and without them it
                // is allowed"; checked against the set with the gates gone.
                let lifted_allows = lifted_snap
                    .as_ref()
                    .is_some_and(|l| l.decide_unindexed(&c).unwrap().verdict == Verdict::Allow);
                match &full.verdict {
                    Verdict::Hold { .. } => prop_assert!(lifted_allows, "{:?}", c),
                    Verdict::Deny { reasons } if reasons[0].contains("even with approval") => {
                        prop_assert!(!lifted_allows, "{:?}", c)
                    }
                    _ => {}
                }
                // And as the proxy decides: the context built to the plan's
                // needs, the body parsed only as far as they go.
                let mut plan = snap.plan(&c).unwrap();
                let needs = plan.context_needs();
                let mut built = c.clone();
                built.context = c
                    .context
                    .iter()
                    .filter_map(|(k, v)| {
                        let n = needs.below(k)?;
                        let v = if k == "body" {
                            let doc = serde_json::to_vec(v).unwrap();
                            crate::policy::value::parse_json_needed(&doc, n, &crate::policy::keys::NO_NAMES).unwrap()
                        } else {
                            n.keep(v.clone())
                        };
                        Some((k.clone(), v))
                    })
                    .collect();
                let planned = snap.decide(&built, plan).unwrap();
                prop_assert_eq!(&planned.verdict, &full.verdict, "{:?}", built);
                prop_assert_eq!(&planned.policies, &full.policies);
            }
        }
    }
}
