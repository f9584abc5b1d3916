//! `clearance proxy` end to end: the real control plane, the real proxy binary, and a
//! small real HTTP service behind it that counts what reaches it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "end-to-end tests: a failure must abort loudly"
)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{ADMIN_KEY, Broken, Proxy, Server, Upstream, broken_plane};
use serde_json::{Value, json};

const SCHEMA: &str = r#"
entity Agent;
entity Api;
action "POST /charges/{id}/refund" appliesTo {
    principal: Agent, resource: Api,
    context: { arguments: { method: String, path: String, params: { id: String }, body: { amount: Long } } }
};
action "GET /charges" appliesTo {
    principal: Agent, resource: Api,
    context: { arguments: { method: String, path: String, query?: { limit: String } } }
};
"#;

const POLICIES: &str = r#"
@id("small-refunds")
permit (principal, action == Action::"POST /charges/{id}/refund", resource == Api::"payments")
when { context.arguments.body.amount <= 500 };

@id("list-charges")
permit (principal, action == Action::"GET /charges", resource == Api::"payments");
"#;

const ROUTES: [&str; 4] = ["--route", "POST /charges/{id}/refund", "--route", "GET /charges"];
/// Matches `--revocation-staleness` in `proxy` below.
/// Matches `--revocation-staleness` in `proxy` below.
const STALENESS: u64 = 4;

struct Keys {
    agent: String,
    enforcer: String,
}

fn setup() -> (Server, Keys, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(&dir.path().join("data"), &[]);
    let keys = Keys {
        agent: server.principal("gateway", &["agent"]),
        enforcer: server.principal("proxy", &["enforcer"]),
    };
    server.activate(SCHEMA, POLICIES);
    (server, keys, dir)
}

fn proxy(server_url: &str, upstream: &str, mode: &str, keys: &Keys, dir: &std::path::Path, extra: &[&str]) -> Proxy {
    let staleness = STALENESS.to_string();
    let mut flags = vec!["--timeout", "1", "--revocation-staleness", &staleness];
    flags.extend(ROUTES);
    flags.extend(extra);
    Proxy::start(server_url, upstream, mode, &keys.agent, &keys.enforcer, dir, &flags)
}

fn send(url: &str, method: &str, path: &str, body: Option<Value>, clearance: Option<&str>) -> (u16, Value) {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut req = http.request(method.parse().unwrap(), format!("{url}{path}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    if let Some(c) = clearance {
        req = req.header("clearance", c);
    }
    let res = req.send().unwrap();
    let status = res.status().as_u16();
    let text = res.text().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

fn claims(token: &str) -> Value {
    common::jws_part(token, 1)
}

#[test]
fn gateway_mode_lets_through_only_what_policy_allows() {
    let (server, keys, dir) = setup();
    let upstream = Upstream::start();
    let p = proxy(&server.url, &upstream.url, "gateway", &keys, dir.path(), &[]);

    let (status, body) = send(
        &p.url,
        "POST",
        "/charges/ch_1/refund",
        Some(json!({"amount": 120})),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["upstream"], "payments");
    // The upstream got the request with a clearance for exactly it.
    let seen = &body["seen"];
    assert_eq!(
        (seen["method"].as_str(), seen["target"].as_str()),
        (Some("POST"), Some("/charges/ch_1/refund"))
    );
    let c = claims(seen["headers"]["clearance"].as_str().unwrap());
    assert_eq!(c["act"], "POST /charges/{id}/refund");
    assert_eq!(c["res"], json!({"type": "Api", "id": "payments"}));

    let (status, body) = send(
        &p.url,
        "POST",
        "/charges/ch_1/refund",
        Some(json!({"amount": 900})),
        None,
    );
    assert_eq!((status, code(&body)), (403, "policy_denied"), "{body}");
    assert!(body["error"]["execution_id"].is_string());
    let (status, body) = send(&p.url, "DELETE", "/charges/ch_1", None, None);
    assert_eq!((status, code(&body)), (403, "invalid_request"), "{body}");
    let (status, body) = send(&p.url, "GET", "/charges?limit=5", None, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["seen"]["target"], "/charges?limit=5");

    // Denied requests never arrived.
    assert_eq!(upstream.count(), 2);
    // Each allowed request is an execution with its whole story in the log (the
    // completion is reported just after the answer).
    let completed = || {
        server
            .log_events()
            .into_iter()
            .filter(|e| e["type"] == "execution_completed" && e["status"] == "succeeded")
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while completed() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(completed(), 2);
}

fn refund_clearance(server: &Server, keys: &Keys, amount: i64) -> String {
    let (status, body) = server.post(
        "/v1/authorize",
        Some(&keys.agent),
        &json!({
            "action": "POST /charges/{id}/refund", "resource": {"type": "Api", "id": "payments"},
            "arguments": {"method": "POST", "path": "/charges/ch_1/refund", "params": {"id": "ch_1"},
                          "body": {"amount": amount}}
        }),
    );
    assert_eq!((status, body["decision"].as_str()), (200, Some("allow")), "{body}");
    body["clearance"].as_str().unwrap().to_owned()
}

#[test]
fn verify_mode_binds_the_clearance_to_method_path_and_body() {
    let (server, keys, dir) = setup();
    let upstream = Upstream::start();
    let p = proxy(&server.url, &upstream.url, "verify", &keys, dir.path(), &[]);
    let path = "/charges/ch_1/refund";

    let token = refund_clearance(&server, &keys, 100);
    let (status, body) = send(&p.url, "POST", path, Some(json!({"amount": 100})), Some(&token));
    assert_eq!(status, 200, "{body}");
    // Used once: refused the second time.
    let (status, body) = send(&p.url, "POST", path, Some(json!({"amount": 100})), Some(&token));
    assert_eq!((status, code(&body)), (403, "replayed"), "{body}");
    // A valid clearance with a changed body.
    let token = refund_clearance(&server, &keys, 100);
    let (status, body) = send(&p.url, "POST", path, Some(json!({"amount": 400})), Some(&token));
    assert_eq!((status, code(&body)), (403, "arguments_mismatch"), "{body}");
    // The same clearance on another path.
    let (status, body) = send(
        &p.url,
        "POST",
        "/charges/ch_2/refund",
        Some(json!({"amount": 100})),
        Some(&token),
    );
    assert_eq!((status, code(&body)), (403, "arguments_mismatch"), "{body}");
    // No clearance at all.
    let (status, body) = send(&p.url, "POST", path, Some(json!({"amount": 100})), None);
    assert_eq!((status, code(&body)), (403, "clearance_required"), "{body}");
    // Revoked after issue: the stream tells the proxy.
    let token = refund_clearance(&server, &keys, 100);
    let id = claims(&token)["jti"].as_str().unwrap().to_owned();
    let (status, _) = server.post(&format!("/v1/executions/{id}/revoke"), Some(ADMIN_KEY), &json!({}));
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(500));
    let (status, body) = send(&p.url, "POST", path, Some(json!({"amount": 100})), Some(&token));
    assert_eq!((status, code(&body)), (403, "revoked"), "{body}");

    assert_eq!(upstream.count(), 1, "only the one valid request reached the upstream");
}

#[test]
fn the_proxy_fails_closed() {
    let (server, keys, dir) = setup();
    let upstream = Upstream::start();
    let jwks = dir.path().join("jwks.json");
    let (_, keys_json) = server.call("GET", "/.well-known/jwks.json", None, None);
    std::fs::write(&jwks, keys_json.to_string()).unwrap();
    let trust = ["--jwks", jwks.to_str().unwrap(), "--issuer", &server.url];

    // Broken control planes: nothing reaches the upstream.
    // (Started side by side: each waits a few seconds for a heartbeat that never comes.)
    let broken: Vec<(Broken, Proxy)> = std::thread::scope(|scope| {
        let handles: Vec<_> = [Broken::Down, Broken::Slow, Broken::ServerError, Broken::Malformed]
            .into_iter()
            .map(|kind| {
                let (upstream, keys, dir, trust) = (&upstream, &keys, dir.path(), &trust);
                scope.spawn(move || {
                    (
                        kind,
                        proxy(&broken_plane(kind), &upstream.url, "gateway", keys, dir, trust),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (kind, p) in &broken {
        let (status, body) = send(&p.url, "POST", "/charges/ch_1/refund", Some(json!({"amount": 1})), None);
        assert_eq!(
            (status, code(&body)),
            (503, "control_plane_unavailable"),
            "{kind:?}: {body}"
        );
    }

    // A healthy start, then the control plane goes away.
    let gateway = proxy(&server.url, &upstream.url, "gateway", &keys, dir.path(), &[]);
    let verify = proxy(&server.url, &upstream.url, "verify", &keys, dir.path(), &[]);
    let held = refund_clearance(&server, &keys, 100);
    let _ = Command::new("kill").args(["-KILL", &server.pid().to_string()]).status();
    let (status, body) = send(
        &gateway.url,
        "POST",
        "/charges/ch_1/refund",
        Some(json!({"amount": 1})),
        None,
    );
    assert_eq!((status, code(&body)), (503, "control_plane_unavailable"), "{body}");
    // The verify proxy holds a valid clearance but its revocation stream is cut: once
    // the view is older than its bound, it refuses before even trying the control plane.
    std::thread::sleep(Duration::from_secs(STALENESS + 1));
    let (status, body) = send(
        &verify.url,
        "POST",
        "/charges/ch_1/refund",
        Some(json!({"amount": 100})),
        Some(&held),
    );
    assert_eq!((status, code(&body)), (503, "revocation_view_stale"), "{body}");

    assert_eq!(
        upstream.count(),
        0,
        "requests reached the upstream without a working control plane"
    );
}

/// A proxy started before the control plane rotated its signing key learns the new key
/// on its own (it fetches the JWKS again for an unknown key id) and goes on letting
/// allowed calls through, in gateway and verify mode alike.
#[test]
fn a_running_proxy_follows_a_signing_key_rotation() {
    let (server, keys, dir) = setup();
    let upstream = Upstream::start();
    let gateway = proxy(&server.url, &upstream.url, "gateway", &keys, dir.path(), &[]);
    let verify = proxy(&server.url, &upstream.url, "verify", &keys, dir.path(), &[]);
    let refund = || Some(json!({"amount": 120}));
    let (status, body) = send(&gateway.url, "POST", "/charges/ch_1/refund", refund(), None);
    assert_eq!(status, 200, "{body}");
    let before = claims(body["seen"]["headers"]["clearance"].as_str().unwrap());

    let out = server.cli(Some(ADMIN_KEY), &["key", "rotate", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rotated: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(rotated["kid"], rotated["previous"]);

    let (status, body) = send(&gateway.url, "POST", "/charges/ch_2/refund", refund(), None);
    assert_eq!(status, 200, "{body}");
    let token = body["seen"]["headers"]["clearance"].as_str().unwrap();
    assert_eq!(common::jws_part(token, 0)["kid"], rotated["kid"]);
    assert_ne!(before["jti"], claims(token)["jti"]);
    let fresh = refund_clearance(&server, &keys, 120);
    assert_eq!(common::jws_part(&fresh, 0)["kid"], rotated["kid"]);
    let (status, body) = send(&verify.url, "POST", "/charges/ch_1/refund", refund(), Some(&fresh));
    assert_eq!(status, 200, "{body}");
}
