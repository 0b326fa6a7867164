//! TLS on both sides, with certificates made at test time.

use serde_json::Value;

use crate::support::tls::{https_upstream, TestPki};
use crate::support::*;

const OPEN: &str = "permit(principal, action, resource);";

#[tokio::test]
async fn an_https_upstream_with_a_private_ca_works_and_is_never_trusted_blindly() {
    let pki = TestPki::new();
    let upstream = https_upstream(&pki).await;
    let builder = AirlockBuilder::new().policy("open.cedar", OPEN);
    let (ca, _, _) = pki.write(builder.dir());
    let airlock = builder
        .route_yaml(&format!(
            "  - name: private\n    prefix: /private\n    upstream: https://127.0.0.1:{}/v1\n    ca_file: {}",
            upstream.port(),
            ca.display()
        ))
        .route("untrusted", "/untrusted", &format!("https://127.0.0.1:{}/v1", upstream.port()))
        .start();

    let resp = client()
        .get(airlock.url("/private/things"))
        .header("authorization", bearer(AGENT_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["tls"], true);
    assert_eq!(body["path"], "/v1/things");

    // Without the private CA the certificate cannot be verified: 502 with a
    // message that says so, never a silent downgrade.
    let resp = client()
        .get(airlock.url("/untrusted/things"))
        .header("authorization", bearer(AGENT_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "upstream_unavailable");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("TLS") || message.contains("certificate"),
        "{message}"
    );
}

#[tokio::test]
async fn a_self_signed_upstream_named_in_ca_file_is_trusted_as_curl_cacert_trusts_it() {
    let pki = TestPki::self_signed();
    let upstream = https_upstream(&pki).await;
    let stranger = https_upstream(&TestPki::self_signed()).await;
    let builder = AirlockBuilder::new().policy("open.cedar", OPEN);
    let (ca, _, _) = pki.write(builder.dir());
    let route = |name: &str, port: u16| {
        format!(
            "  - name: {name}\n    prefix: /{name}\n    upstream: https://127.0.0.1:{port}/v1\n    ca_file: {}",
            ca.display()
        )
    };
    let airlock = builder
        .route_yaml(&route("selfsigned", upstream.port()))
        .route_yaml(&route("stranger", stranger.port()))
        .start();

    let resp = client()
        .get(airlock.url("/selfsigned/things"))
        .header("authorization", bearer(AGENT_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["tls"], true);

    // Another self-signed certificate is not the one in `ca_file`: refused,
    // with the route and what to do.
    let resp = client()
        .get(airlock.url("/stranger/things"))
        .header("authorization", bearer(AGENT_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("`stranger`"), "{message}");
    assert!(message.contains("`ca_file`"), "{message}");
}

#[tokio::test]
async fn agents_can_reach_airlock_over_tls() {
    let pki = TestPki::new();
    let upstream = Upstream::start().await;
    let builder = AirlockBuilder::new().policy("open.cedar", OPEN);
    let (_, cert, key) = pki.write(builder.dir());
    let airlock = builder
        .route("crm", "/crm", &upstream.url("/"))
        .yaml(&format!(
            "tls:\n  cert: {}\n  key: {}",
            cert.display(),
            key.display()
        ))
        .start();
    assert!(airlock.url("/").starts_with("https://"));

    // ALPN picks the protocol: HTTP/2 for a client that offers it (as
    // reqwest does by default), HTTP/1.1 for one that does not.
    for (client, version) in [
        (reqwest::Client::builder(), reqwest::Version::HTTP_2),
        (
            reqwest::Client::builder().http2_prior_knowledge(),
            reqwest::Version::HTTP_2,
        ),
        (
            reqwest::Client::builder().http1_only(),
            reqwest::Version::HTTP_11,
        ),
    ] {
        let c = client
            .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
            .build()
            .unwrap();
        let resp = airlock.agent_get_via(&c, "/crm/hello").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), version);
        assert_eq!(upstream.last().path, "/hello");
    }

    // A client that does not trust the CA cannot connect.
    let strict = reqwest::Client::builder().build().unwrap();
    assert!(strict.get(airlock.url("/crm/hello")).send().await.is_err());
}
