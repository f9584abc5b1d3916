//! The decision path end to end, against the real binary on a loopback port.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test setup: a failure must abort loudly"
)]

mod common;

use common::{ADMIN_KEY, POLICIES, SCHEMA, Server, refund};
use serde_json::{Value, json};

fn reasons(body: &Value) -> Vec<&str> {
    body["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect()
}

#[test]
fn allow_deny_forbid_and_policy_error() {
    let server = Server::start();
    let bot = server.agent("billing-bot");
    let version = server.activate(SCHEMA, POLICIES);

    let (status, allow) = server.authorize(&bot, "refund", refund(120));
    assert_eq!(status, 200, "{allow}");
    assert_eq!(allow["decision"], "allow");
    assert_eq!(reasons(&allow), Vec::<&str>::new());
    assert_eq!(allow["policies"], json!(["small-refunds"]));
    assert_eq!(allow["policy_version"], version);
    assert!(allow["clearance"].as_str().unwrap().starts_with("eyJ"));
    assert!(allow["log_index"].is_u64());
    assert!(allow["expires_at"].as_str().unwrap().ends_with('Z'));

    let (status, denied) = server.authorize(&bot, "refund", refund(700));
    assert_eq!((status, denied["decision"].as_str()), (200, Some("deny")));
    assert_eq!(reasons(&denied), ["policy_denied"]);
    assert!(denied.get("clearance").is_none());

    let (status, forbidden) = server.authorize(&bot, "refund", refund(5000));
    assert_eq!(status, 200);
    assert_eq!(reasons(&forbidden), ["policy_forbidden"]);
    assert_eq!(forbidden["policies"], json!(["no-large-refunds"]));
    assert_eq!(forbidden["message"], "forbidden by policy `no-large-refunds`");
    assert!(forbidden.get("clearance").is_none());

    // Cedar alone would skip the erroring forbid and allow through `overflow-bait`.
    let (status, errored) = server.authorize(&bot, "refund", refund(777));
    assert_eq!(status, 200);
    assert_eq!(reasons(&errored), ["policy_error"]);
    assert_eq!(errored["policies"], json!(["overflowing-check"]));
    assert!(errored.get("clearance").is_none());

    // Every decision got its own log index.
    let indexes: Vec<u64> = [&allow, &denied, &forbidden, &errored]
        .iter()
        .map(|b| b["log_index"].as_u64().unwrap())
        .collect();
    assert!(indexes.windows(2).all(|w| w[0] < w[1]), "{indexes:?}");

    let (_, metrics) = server.call("GET", "/metrics", None, None);
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains(r#"clearance_decisions_total{decision="deny",reason="policy_forbidden"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"clearance_decisions_total{decision="allow",reason="none"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("clearance_authorize_duration_seconds_count 4"),
        "{metrics}"
    );
}

#[test]
fn no_active_policy_denies_everything() {
    let server = Server::start();
    let bot = server.agent("bot");
    let (status, body) = server.authorize(&bot, "refund", refund(1));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "deny");
    assert_eq!(reasons(&body), ["no_active_policy"]);
    assert!(body["policy_version"].is_null());
    assert!(body.get("clearance").is_none());
}

#[test]
fn invalid_api_keys_missing_wrong_revoked() {
    let server = Server::start();
    let bot = server.agent("bot");
    server.activate(SCHEMA, POLICIES);
    let request = json!({"action": "refund", "resource": {"type": "Tool", "id": "x"}, "arguments": refund(1)});

    for key in [
        None,
        Some("clr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        Some("not-even-a-key"),
        Some(""),
    ] {
        let (status, body) = server.post("/v1/authorize", key, &request);
        assert_eq!(status, 401, "{key:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid_api_key");
        assert_eq!(body["error"]["reasons"], json!(["invalid_api_key"]));
    }

    let (_, keys) = server.call("GET", "/v1/principals/bot/keys", Some(ADMIN_KEY), None);
    let key_id = keys["keys"][0]["key_id"].as_str().unwrap().to_owned();
    assert_eq!(server.post("/v1/authorize", Some(&bot), &request).0, 200);
    let (status, _) = server.call("DELETE", &format!("/v1/keys/{key_id}"), Some(ADMIN_KEY), None);
    assert_eq!(status, 204);
    let (status, body) = server.post("/v1/authorize", Some(&bot), &request);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_api_key")),
        "{body}"
    );
    let (_, keys) = server.call("GET", "/v1/principals/bot/keys", Some(ADMIN_KEY), None);
    assert!(keys["keys"][0]["revoked_at"].is_string());
    // The key never appears in the server's logs.
    assert!(!server.logs().contains(&bot));
    assert!(!server.logs().contains(ADMIN_KEY));
}

#[test]
fn wrong_role_is_403_and_recorded() {
    let server = Server::start();
    server.activate(SCHEMA, POLICIES);
    let (status, body) = server.post(
        "/v1/principals",
        Some(ADMIN_KEY),
        &json!({"id": "watcher", "roles": ["auditor"]}),
    );
    assert_eq!(status, 201, "{body}");
    let (_, key) = server.post("/v1/principals/watcher/keys", Some(ADMIN_KEY), &json!({}));
    let auditor = key["key"].as_str().unwrap();

    let (status, body) = server.authorize(auditor, "refund", refund(1));
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized_role");
    assert_eq!(body["error"]["reasons"], json!(["unauthorized_role"]));
    assert!(body["error"]["log_index"].is_u64(), "recorded: {body}");

    // And an agent cannot use the admin API.
    let bot = server.agent("bot");
    let (status, body) = server.post("/v1/principals", Some(&bot), &json!({"id": "x", "roles": ["admin"]}));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("unauthorized_role")),
        "{body}"
    );
}

#[test]
fn invalid_requests_are_400_with_clear_messages() {
    let server = Server::start();
    let bot = server.agent("bot");
    server.activate(SCHEMA, POLICIES);

    let (status, body) = server.call("POST", "/v1/authorize", Some(&bot), Some("{\"action\": ".into()));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );

    let (status, body) = server.authorize(&bot, "teleport", json!({}));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");
    assert_eq!(body["error"]["reasons"], json!(["invalid_request"]));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`teleport` is not declared"),
        "{body}"
    );

    let (status, body) = server.authorize(&bot, "refund", json!({"amount": "lots", "currency": "EUR"}));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");
    assert!(body["error"]["message"].as_str().unwrap().contains("amount"), "{body}");

    let (status, body) = server.post(
        "/v1/authorize",
        Some(&bot),
        &json!({"action": "refund", "resource": {"type": "Tool", "id": "x"}, "arguments": refund(1), "amount": 5}),
    );
    assert_eq!(status, 400, "unknown fields are rejected: {body}");

    let huge =
        json!({"action": "refund", "resource": {"type": "Tool", "id": "x"}, "arguments": {"blob": "x".repeat(70_000)}});
    let (status, body) = server.post("/v1/authorize", Some(&bot), &huge);
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "request_too_large");
}

#[test]
fn bad_policy_push_is_rejected_and_active_version_kept() {
    let server = Server::start();
    let bot = server.agent("bot");
    let version = server.activate(SCHEMA, POLICIES);
    let bad = "permit (principal, action == Action::\"refund\", resource) when { context.arguments.amont > 1 };";
    let (status, body) = server.post(
        "/v1/policies",
        Some(ADMIN_KEY),
        &json!({"schema": SCHEMA, "policies": bad}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "policy_invalid");
    assert!(body["error"]["message"].as_str().unwrap().contains("amont"), "{body}");
    let (_, allow) = server.authorize(&bot, "refund", refund(1));
    assert_eq!(allow["policy_version"], version);
    let (_, list) = server.call("GET", "/v1/policies", Some(ADMIN_KEY), None);
    assert_eq!(list["policies"].as_array().unwrap().len(), 1);
}

/// Another process takes the database's write lock: decisions cannot be recorded, so
/// they fail with `audit_unavailable` and no clearance; service resumes when it lets go.
#[test]
fn unwritable_database_means_audit_unavailable_and_recovery() {
    use sqlx::Connection as _;
    let server = Server::start();
    let bot = server.agent("bot");
    server.activate(SCHEMA, POLICIES);
    assert_eq!(server.authorize(&bot, "refund", refund(1)).0, 200);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = server.data_dir.join("clearance.db");
    let mut locker = rt
        .block_on(sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())))
        .unwrap();
    rt.block_on(sqlx::query("BEGIN EXCLUSIVE").execute(&mut locker))
        .unwrap();

    for _ in 0..2 {
        let (status, body) = server.authorize(&bot, "refund", refund(1));
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "audit_unavailable");
        assert_eq!(body["error"]["reasons"], json!(["audit_unavailable"]));
        assert!(body.get("clearance").is_none() && body["error"].get("clearance").is_none());
    }
    let (status, ready) = server.call("GET", "/readyz", None, None);
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["checks"]["storage"]["ok"], false);

    rt.block_on(sqlx::query("ROLLBACK").execute(&mut locker)).unwrap();
    drop(locker);

    let (status, body) = server.authorize(&bot, "refund", refund(1));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "allow");
    assert_eq!(server.call("GET", "/readyz", None, None).0, 200);
}

#[test]
fn restart_reuses_key_database_and_policy() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_in(&data, &[]);
    let bot = server.agent("bot");
    let version = server.activate(SCHEMA, POLICIES);
    let (_, jwks_before) = server.call("GET", "/.well-known/jwks.json", None, None);
    server.stop();

    let server = Server::start_in(&data, &[]);
    let (_, jwks_after) = server.call("GET", "/.well-known/jwks.json", None, None);
    assert_eq!(jwks_before, jwks_after);
    let (status, body) = server.authorize(&bot, "refund", refund(3));
    assert_eq!((status, body["decision"].as_str()), (200, Some("allow")), "{body}");
    assert_eq!(body["policy_version"], version);
}

#[test]
fn refuses_a_signing_key_readable_by_others() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    Server::start_in(&data, &[]).stop();
    let key = data.join("signing-key.pem");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Server::try_start_in(&data, &[]).expect_err("start must fail");
    assert!(err.contains("readable by others"), "{err}");
}

#[test]
fn decisions_are_deterministic_across_requests() {
    let server = Server::start();
    let bot = server.agent("bot");
    server.activate(SCHEMA, POLICIES);
    for amount in [1, 700, 777, 5000] {
        let (_, first) = server.authorize(&bot, "refund", refund(amount));
        for _ in 0..3 {
            let (_, again) = server.authorize(&bot, "refund", refund(amount));
            for field in ["decision", "reasons", "policies", "policy_version"] {
                assert_eq!(first[field], again[field], "amount {amount}, {field}");
            }
        }
    }
}
