//! The approver inbox: the real binary's pages driven in Debian's Chromium
//! (tests/peers/inbox_browser.mjs, playwright-core), and its forms posted
//! by hand where a browser would never send them.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::approvals::{env_with, pending_id, show, BIG_REFUNDS, BOB_TOKEN};
use crate::support::peers::{node_modules, peers_dir};
use crate::support::*;

/// Runs the browser script against an Airlock's admin and proxy URLs;
/// answers what it printed.
fn run_browser(admin: String, proxy: String, screenshots: &Path) -> Value {
    node_modules();
    let args = json!({
        "screenshots": screenshots,
        "admin": admin,
        "proxy": proxy,
        "agent_key": AGENT_KEY,
        "admin_token": ADMIN_TOKEN,
        "approver_token": APPROVER_TOKEN,
        "other_approver_token": BOB_TOKEN,
    });
    let out = Command::new("node")
        .arg(peers_dir().join("inbox_browser.mjs"))
        .arg(args.to_string())
        .current_dir(peers_dir())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let seen: Value = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "the browser script printed no JSON ({e}); stdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        seen.get("error").is_none(),
        "the browser script failed: {}",
        seen["error"]
    );
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn approvers_decide_held_calls_in_a_real_browser() {
    let env = env_with("30s", Some(("big.cedar", BIG_REFUNDS))).await;
    // The script blocks while the in-process upstream answers the agent.
    let (admin, proxy) = (origin(&env.airlock), env.airlock.url(""));
    let shots = screenshots_dir();
    let dir = shots.path().to_path_buf();
    let seen = tokio::task::spawn_blocking(move || run_browser(admin, proxy, &dir))
        .await
        .unwrap();

    // 1: the held call appears in the open page; approving it lets the
    // agent's waiting request through to the upstream.
    let approve = &seen["approve"];
    assert_eq!(
        approve["stayedOpen"], true,
        "the list must update without a reload"
    );
    assert_eq!(approve["httpOnly"], true);
    assert_eq!(approve["sameSite"], "Strict");
    assert_eq!(approve["shownToken"], false);
    assert_eq!(approve["agentStatus"], 200, "{approve}");
    let answer: Value = serde_json::from_str(approve["agentBody"].as_str().unwrap()).unwrap();
    assert_eq!(answer["path"], "/api/refunds");
    assert_eq!(answer["body"]["amount"], 500);
    let id = approve["id"].as_str().unwrap();
    let decided = show(&env.airlock, id).await;
    assert_eq!(decided["decided_by"], "alice");
    assert_eq!(decided["reason"], "checked the order");
    let audited = env.airlock.audit_where("the inbox's approval", |r| {
        r["event"] == "approval" && r["verdict"] == "approve" && r["approval_id"] == id
    });
    assert_eq!(audited["approver"], "alice");

    // 3: a denial needs a reason; with one, the agent is refused with it.
    let deny = &seen["deny"];
    assert!(
        deny["emptyError"]
            .as_str()
            .unwrap()
            .contains("needs a reason"),
        "{deny}"
    );
    assert_eq!(deny["statusAfterEmpty"], "pending");
    assert_eq!(deny["typed"], "ade", "keys typed in a field are text");
    assert_eq!(deny["stayedOnPage"], true);
    assert_eq!(deny["agentStatus"], 403);
    assert!(deny["agentBody"]
        .as_str()
        .unwrap()
        .contains("this customer was refunded already"));

    // 4: markup in the arguments is text.
    let script = &seen["script"];
    assert_eq!(script["dialogs"], json!([]));
    assert_eq!(script["pwned"], false);
    assert_eq!(script["images"], 0);
    assert_eq!(script["scripts"], 1, "only the inbox's own script");
    let body = script["bodyText"].as_str().unwrap();
    assert!(body.contains("<script>alert(1)</script>"), "{body}");
    assert!(
        body.contains(r#""><img src=x onerror=window.pwned=1>"#),
        "{body}"
    );

    // Respond in the tool's place: invalid JSON is caught in the page, the
    // server's refusal shows inline, and the agent gets the human's answer.
    let respond = &seen["respond"];
    assert_eq!(respond["jsonErrorShown"], true, "{respond}");
    assert!(respond["jsonError"]
        .as_str()
        .unwrap()
        .contains("the body is not valid JSON"));
    assert_eq!(respond["refusedStatus"], 400);
    assert!(
        respond["refused"]
            .as_str()
            .unwrap()
            .contains("from 200 to 599"),
        "{respond}"
    );
    assert_eq!(respond["keptAnswer"], r#"{"refund_id": "manual-1"}"#);
    assert_eq!(respond["agentStatus"], 201, "{respond}");
    let answered: Value = serde_json::from_str(respond["agentBody"].as_str().unwrap()).unwrap();
    assert_eq!(answered, json!({"refund_id": "manual-1"}));
    let responded = show(&env.airlock, respond["id"].as_str().unwrap()).await;
    assert_eq!(responded["status"], "responded");
    assert_eq!(responded["decided_by"], "alice");
    assert_eq!(responded["reason"], "issued by hand");

    // 2: invalid JSON is caught inline; an edit the policies refuse shows
    // the server's 422 and leaves the approval pending.
    let edit = &seen["edit"];
    assert_eq!(edit["jsonErrorShown"], true);
    assert!(edit["jsonError"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    // The edit's diff against the original, line by line.
    assert_eq!(edit["diffShown"], true, "{edit}");
    let diff = edit["diff"].as_str().unwrap();
    assert!(diff.contains("-   \"amount\": 800,\n"), "{diff}");
    assert!(diff.contains("+   \"amount\": 5000,\n"), "{diff}");
    assert!(diff.contains("    \"customer\": \"c-4\"\n"), "{diff}");
    // The agent's last calls, newest first: those decided before this one.
    let recent = edit["recent"].as_array().unwrap();
    assert!(recent.len() >= 4 && recent.len() <= 10, "{recent:?}");
    assert_eq!(recent[0], "hold", "{recent:?}");
    assert_eq!(edit["editStatus"], 422);
    assert!(
        edit["refused"]
            .as_str()
            .unwrap()
            .contains("refunds over 1000"),
        "{edit}"
    );
    assert_eq!(edit["statusAfterRefusal"], "pending");

    // 6: an approver of another group neither sees nor decides it.
    let outsider = &seen["outsider"];
    let edit_id = edit["id"].as_str().unwrap();
    assert!(!outsider["listed"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i == edit_id));
    assert_eq!(outsider["byUrlStatus"], 404);
    assert_eq!(outsider["postStatus"], 404);
    assert_eq!(edit["agentStatus"], 403, "denied once the outsider gave up");
    let after = show(&env.airlock, edit_id).await;
    assert_eq!(after["decided_by"], "alice");

    // Keyboard: `j` selects the held call, `a` approves it; at 375 px no
    // page scrolls sideways; both screenshots are saved.
    let keys = &seen["keyboard"];
    assert_eq!(keys["selected"], keys["id"], "{keys}");
    assert_eq!(keys["agentStatus"], 200, "{keys}");
    assert_eq!(
        show(&env.airlock, keys["id"].as_str().unwrap()).await["decided_by"],
        "alice"
    );
    assert_eq!(
        (keys["helpShown"].as_bool(), keys["helpHidden"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(
        keys["wide"],
        json!({"held": false, "history": false, "pending": false}),
        "{keys}"
    );
    assert!(keys["scrollWidth"].as_u64().unwrap() <= 375, "{keys}");
    for name in ["inbox-pending.png", "inbox-held.png"] {
        let png = std::fs::read(shots.path().join(name)).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    }

    // 7: an operator pauses the agent from the Agents tab; its next call
    // gets the paused refusal, audited as the API's pause is.
    let pause = &seen["pause"];
    assert!(
        pause["shown"].as_str().unwrap().contains("runaway refunds"),
        "{pause}"
    );
    assert_eq!(pause["agentStatus"], 403, "{pause}");
    let refused: Value = serde_json::from_str(pause["agentBody"].as_str().unwrap()).unwrap();
    assert_eq!(refused["error"], "paused", "{refused}");
    assert_eq!(refused["reasons"], json!(["runaway refunds"]));
    let audited = env.airlock.audit_where("the inbox's pause", |r| {
        r["event"] == "override" && r["verdict"] == "pause"
    });
    assert_eq!(audited["approver"], "admin");
    assert_eq!(audited["agent"], "bot");
    assert!(pause["afterResume"].as_str().unwrap().contains("Running"));
}

/// Where the screenshots go: docs/img with `AIRLOCK_SCREENSHOTS=1` (to
/// refresh the README's), a scratch directory otherwise.
enum Screenshots {
    Docs(PathBuf),
    Scratch(tempfile::TempDir),
}

impl Screenshots {
    fn path(&self) -> &Path {
        match self {
            Screenshots::Docs(p) => p,
            Screenshots::Scratch(t) => t.path(),
        }
    }
}

fn screenshots_dir() -> Screenshots {
    if std::env::var_os("AIRLOCK_SCREENSHOTS").is_some() {
        return Screenshots::Docs(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img"));
    }
    Screenshots::Scratch(tempfile::tempdir().unwrap())
}

/// A signed-in session: its cookie and its CSRF token.
pub(crate) struct SignedIn {
    pub cookie: String,
    pub csrf: String,
}

pub(crate) async fn sign_in(airlock: &Airlock, token: &str) -> SignedIn {
    let resp = no_redirects()
        .post(airlock.admin_url("/signin"))
        .header("origin", origin(airlock))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    let cookie = set.split(';').next().unwrap().to_string();
    let page = page(airlock, &cookie, "/").await;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token in the page")
        .to_string();
    SignedIn { cookie, csrf }
}

pub(crate) fn origin(airlock: &Airlock) -> String {
    airlock.admin_url("").trim_end_matches('/').to_string()
}

pub(crate) fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub(crate) async fn page(airlock: &Airlock, cookie: &str, path: &str) -> String {
    client()
        .get(airlock.admin_url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Posts a form from the inbox's own origin with the session's cookie and
/// CSRF token; answers the status and the page.
pub(crate) async fn post_form(
    airlock: &Airlock,
    s: &SignedIn,
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let mut form = vec![("csrf", s.csrf.as_str())];
    form.extend_from_slice(fields);
    let resp = no_redirects()
        .post(airlock.admin_url(path))
        .header("cookie", &s.cookie)
        .header("origin", origin(airlock))
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

async fn post_approve(
    airlock: &Airlock,
    id: &str,
    s: &SignedIn,
    origin: &str,
    csrf: Option<&str>,
) -> u16 {
    let mut form = vec![("reason", "looks fine")];
    if let Some(c) = csrf {
        form.push(("csrf", c));
    }
    no_redirects()
        .post(airlock.admin_url(&format!("/approvals/{id}/approve")))
        .header("cookie", &s.cookie)
        .header("origin", origin)
        .form(&form)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn forged_and_tokenless_forms_change_nothing() {
    let env = env_with("200ms", None).await;
    let id = &pending_id(&env.airlock, json!({"amount": 500})).await;
    let alice = sign_in(&env.airlock, APPROVER_TOKEN).await;
    assert!(!page(&env.airlock, &alice.cookie, "/")
        .await
        .contains(APPROVER_TOKEN));

    // 5: another site's form, and a form without the session's token.
    let evil = "http://evil.example";
    assert_eq!(
        post_approve(&env.airlock, id, &alice, evil, Some(&alice.csrf)).await,
        403
    );
    let own = origin(&env.airlock);
    assert_eq!(
        post_approve(&env.airlock, id, &alice, &own, None).await,
        403
    );
    assert_eq!(
        post_approve(&env.airlock, id, &alice, &own, Some("guessed")).await,
        403
    );
    assert_eq!(show(&env.airlock, id).await["status"], "pending");

    // A sign-in from another site is refused too.
    let forged = no_redirects()
        .post(env.airlock.admin_url("/signin"))
        .header("origin", evil)
        .form(&[("token", APPROVER_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(forged.headers().get("set-cookie").is_none());

    // An agent's key, or a token nobody holds, signs nobody in.
    for token in [AGENT_KEY, "not-a-token"] {
        let refused = no_redirects()
            .post(env.airlock.admin_url("/signin"))
            .header("origin", &own)
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
        assert!(refused.headers().get("set-cookie").is_none());
        assert!(!refused.text().await.unwrap().contains(token));
    }

    // The live view takes the session cookie.
    let events = client()
        .get(env.airlock.admin_url("/v1/events"))
        .header("cookie", &alice.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    drop(events);

    // The same form from the inbox itself decides.
    assert_eq!(
        post_approve(&env.airlock, id, &alice, &own, Some(&alice.csrf)).await,
        303
    );
    assert_eq!(show(&env.airlock, id).await["status"], "approved");

    // Signing out ends the session on the server: the old cookie is dead.
    let out = no_redirects()
        .post(env.airlock.admin_url("/signout"))
        .header("cookie", &alice.cookie)
        .header("origin", &own)
        .form(&[("csrf", alice.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(page(&env.airlock, &alice.cookie, "/")
        .await
        .contains("id=\"signin\""));
    let events = client()
        .get(env.airlock.admin_url("/v1/events"))
        .header("cookie", &alice.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 401);
}
