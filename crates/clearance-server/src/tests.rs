//! The router in process (no socket) over the real SQLite store.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};

use clearance_store::{SqliteStore, StoreOptions};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;

use crate::{AppState, router};

struct Harness {
    app: axum::Router,
    admin: String,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("c.db"), StoreOptions::default())
        .await
        .unwrap();
    let plane = clearance_store::testkit::plane(Arc::new(store), "http://test")
        .await
        .unwrap();
    let admin = plane.bootstrap(None).await.unwrap().unwrap().expose().to_owned();
    Harness {
        app: router(AppState::new(plane)),
        admin,
        _dir: dir,
    }
}

impl Harness {
    /// Push and activate a bundle (its JSON body); returns its version.
    async fn activate(&self, bundle: &str) -> String {
        let (status, pushed) = self.call("POST", "/v1/policies", Some(&self.admin), Some(bundle)).await;
        assert_eq!(status, StatusCode::CREATED, "{pushed}");
        let version = pushed["version"].as_str().unwrap().to_owned();
        let uri = format!("/v1/policies/{version}/activate");
        let (status, body) = self.call("POST", &uri, Some(&self.admin), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        version
    }

    async fn call(&self, method: &str, uri: &str, key: Option<&str>, body: Option<&str>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(k) = key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let req = req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.unwrap_or("").to_owned()))
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into())),
        )
    }
}

/// A JSON body sent as something else is refused before it is parsed.
#[tokio::test]
async fn bodies_must_be_declared_json() {
    let h = harness().await;
    let body = r#"{"id": "bot", "roles": ["agent"]}"#;
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let mut req = Request::builder()
            .method("POST")
            .uri("/v1/principals")
            .header(header::AUTHORIZATION, format!("Bearer {}", h.admin))
            .header(header::CONTENT_LENGTH, body.len());
        if let Some(t) = content_type {
            req = req.header(header::CONTENT_TYPE, t);
        }
        let res = h
            .app
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type:?}");
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"]["code"], "unsupported_media_type");
    }
    let (status, _) = h.call("POST", "/v1/principals", Some(&h.admin), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "the same body as JSON is taken");
    let (status, listed) = h.call("GET", "/v1/principals", Some(&h.admin), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["principals"].as_array().map(Vec::len), Some(2), "{listed}");
}

/// Only signing keys this control plane knows can be revoked.
#[tokio::test]
async fn revoking_an_unknown_signing_key_is_not_found() {
    let h = harness().await;
    let (status, body) = h
        .call("POST", "/v1/signing-keys/no-such-kid/revoke", Some(&h.admin), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "{body}"
    );
    let (_, revocations) = h.call("GET", "/v1/revocations?since=0", Some(&h.admin), None).await;
    assert_eq!(revocations["revocations"], serde_json::json!([]), "nothing recorded");
}

#[tokio::test]
async fn every_error_is_a_json_body() {
    let h = harness().await;
    let cases = [
        ("GET", "/v1/nope", None, None, StatusCode::NOT_FOUND, "not_found"),
        (
            "GET",
            "/v1/authorize",
            None,
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "POST",
            "/v1/authorize",
            None,
            Some("{}"),
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
        ),
        (
            "POST",
            "/v1/principals",
            Some(h.admin.as_str()),
            Some("{not json"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/policies/sha256:zz/activate",
            Some(h.admin.as_str()),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (method, uri, key, body, status, code) in cases {
        let (got, json) = h.call(method, uri, key, body).await;
        assert_eq!(got, status, "{method} {uri}: {json}");
        assert_eq!(json["error"]["code"], code, "{method} {uri}: {json}");
        assert!(json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let big = format!("{{\"id\":\"{}\"}}", "x".repeat(70 * 1024));
    let (got, json) = h.call("POST", "/v1/principals", Some(&h.admin), Some(&big)).await;
    assert_eq!(
        (got, json["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("request_too_large"))
    );
}

/// Policy bundles have their own body limit: 10,000 policies over 1,000 actions are
/// pushed, activated and decided on, while other routes keep the small default and a
/// bundle past its own limit is refused with the same error.
#[tokio::test]
async fn a_bundle_of_ten_thousand_policies_is_accepted() {
    let h = harness().await;
    let mut schema = String::from("entity Agent;\nentity Tool;\n");
    let mut policies = String::new();
    for a in 0..1_000 {
        schema.push_str(&format!(
            "action a{a} appliesTo {{ principal: Agent, resource: Tool, context: {{ arguments: {{ amount: Long }} }} }};\n"
        ));
    }
    for i in 0..10_000 {
        policies.push_str(&format!(
            "@id(\"p{i}\")\npermit (principal, action == Action::\"a{}\", resource) when {{ context.arguments.amount <= {} }};\n",
            i % 1_000,
            100 + i
        ));
    }
    let bundle = serde_json::json!({"schema": schema, "policies": policies}).to_string();
    assert!(bundle.len() > clearance_model::limits::MAX_REQUEST_BYTES * 10);
    h.activate(&bundle).await;
    let (status, body) = h
        .call(
            "POST",
            "/v1/principals",
            Some(&h.admin),
            Some(r#"{"id": "bot", "roles": ["agent"]}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, key) = h
        .call("POST", "/v1/principals/bot/keys", Some(&h.admin), Some("{}"))
        .await;
    let request = r#"{"action": "a999", "resource": {"type": "Tool", "id": "t"}, "arguments": {"amount": 1000}}"#;
    let (status, decided) = h
        .call("POST", "/v1/authorize", key["key"].as_str(), Some(request))
        .await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    assert_eq!(decided["decision"], "allow", "{decided}");
    assert_eq!(
        decided["policies"],
        serde_json::json!([
            "p1999", "p2999", "p3999", "p4999", "p5999", "p6999", "p7999", "p8999", "p999", "p9999"
        ])
    );

    let too_big = format!(
        "{{\"schema\": \"\", \"policies\": \"{}\"}}",
        " ".repeat(clearance_model::limits::MAX_POLICY_REQUEST_BYTES)
    );
    let (status, body) = h.call("POST", "/v1/policies", Some(&h.admin), Some(&too_big)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("request_too_large"))
    );
}

#[tokio::test]
async fn openapi_lists_the_api() {
    let h = harness().await;
    let (status, doc) = h.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/authorize",
        "/v1/principals",
        "/v1/policies",
        "/v1/policies/{version}/activate",
        "/v1/whoami",
        "/v1/authorize/permitted",
        "/.well-known/jwks.json",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert!(doc["components"]["schemas"].get("AuthorizeRequest").is_some());
}

/// Counters documented as int64 refuse what int64 cannot hold, instead of answering for
/// a value the document says cannot be sent (schemathesis found `start=2^63` accepted).
#[tokio::test]
async fn query_counters_above_int64_are_refused() {
    let h = harness().await;
    let big = 9_223_372_036_854_775_808_u64;
    for path in [
        format!("/v1/log/entries?start={big}&end={big}"),
        format!("/v1/log/proof/inclusion?index=0&size={big}"),
        format!("/v1/log/proof/consistency?from=0&to={big}"),
        format!("/v1/revocations?since={big}"),
        "/v1/revocations?limit=0".to_owned(),
    ] {
        let (status, body) = h.call("GET", &path, Some(&h.admin), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{path}: {body}");
    }
}

/// Every operation lists the refusals of the layers around it, and every id in a path
/// has its format: clients generated from the document (and schemathesis) see the API
/// as it answers.
#[tokio::test]
async fn openapi_lists_every_answer_and_every_id_format() {
    let h = harness().await;
    let (_, doc) = h.call("GET", "/openapi.json", None, None).await;
    let mut secured = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let has = |code: &str| responses.contains_key(code);
            if op.get("security").is_some_and(|s| !s.as_array().unwrap().is_empty()) {
                secured += 1;
                for code in ["401", "403", "429"] {
                    assert!(has(code), "{method} {path} lacks {code}");
                }
            }
            if path.starts_with("/v1/") {
                assert!(has("503"), "{method} {path} lacks 503");
            }
            if op.get("requestBody").is_some() {
                assert!(has("413") && has("415"), "{method} {path} lacks 413 or 415");
            }
            for param in op["parameters"].as_array().into_iter().flatten() {
                if param["in"] == "path" {
                    assert!(has("404"), "{method} {path} lacks 404");
                    assert!(
                        param["schema"]["pattern"].as_str().is_some(),
                        "{method} {path}: `{}` has no format",
                        param["name"]
                    );
                }
            }
        }
    }
    assert!(secured > 20, "only {secured} secured operations");
}

#[tokio::test]
async fn repeated_invalid_keys_are_rate_limited() {
    let h = harness().await;
    let mut statuses = Vec::new();
    for _ in 0..55 {
        statuses.push(
            h.call(
                "GET",
                "/v1/principals",
                Some("clr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                None,
            )
            .await
            .0,
        );
    }
    assert_eq!(statuses[0], StatusCode::UNAUTHORIZED);
    assert_eq!(statuses[54], StatusCode::TOO_MANY_REQUESTS);
    let (_, json) = h
        .call(
            "GET",
            "/v1/principals",
            Some("clr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            None,
        )
        .await;
    assert_eq!(json["error"]["code"], "rate_limited");
    // The 429 says when to come back.
    let req = Request::builder()
        .uri("/v1/principals")
        .header(header::AUTHORIZATION, "Bearer clr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .body(Body::empty())
        .unwrap();
    let res = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = res.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // From the same address, a valid key still gets through.
    let (status, _) = h.call("GET", "/v1/principals", Some(&h.admin), None).await;
    assert_eq!(status, StatusCode::OK, "a flood of bad keys locked out a good one");
    let (_, metrics) = h.call("GET", "/metrics", None, None).await;
    assert!(
        metrics.as_str().unwrap().contains("clearance_auth_failures_total 50"),
        "{metrics}"
    );
}

#[tokio::test]
async fn readyz_and_jwks() {
    let h = harness().await;
    let (status, body) = h.call("GET", "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["storage"]["ok"], true);
    let (_, jwks) = h.call("GET", "/.well-known/jwks.json", None, None).await;
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    assert_eq!(jwks["keys"][0]["kid"], body["checks"]["signing_key"]["kid"]);
}

#[tokio::test]
async fn whoami_names_the_keys_principal_and_roles() {
    let h = harness().await;
    let (status, me) = h.call("GET", "/v1/whoami", Some(&h.admin), None).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["roles"], serde_json::json!(["admin"]));
    assert!(me["id"].is_string(), "{me}");
    for key in [None, Some("clr_not_a_key")] {
        let (status, body) = h.call("GET", "/v1/whoami", key, None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_api_key"))
        );
    }
}

#[tokio::test]
async fn permitted_lists_the_actions_a_permit_could_grant_the_caller() {
    let h = harness().await;
    let principal = |id: &'static str, role: &'static str| {
        let h = &h;
        async move {
            let body = serde_json::json!({"id": id, "roles": [role]}).to_string();
            let (s, _) = h.call("POST", "/v1/principals", Some(&h.admin), Some(&body)).await;
            assert_eq!(s, StatusCode::CREATED);
            let (s, k) = h
                .call("POST", &format!("/v1/principals/{id}/keys"), Some(&h.admin), Some("{}"))
                .await;
            assert_eq!(s, StatusCode::CREATED);
            k["key"].as_str().unwrap().to_owned()
        }
    };
    let ops = principal("ops", "agent").await;
    let bot = principal("bot", "agent").await;
    let auditor = principal("audit", "auditor").await;
    let ask = serde_json::json!({
        "resource": {"type": "McpServer", "id": "files"},
        "actions": ["tool:read", "tool:delete", "tool:undeclared"],
    })
    .to_string();
    // No active policy: nothing is permitted.
    let (s, none) = h.call("POST", "/v1/authorize/permitted", Some(&ops), Some(&ask)).await;
    assert_eq!((s, none["permitted"].clone()), (StatusCode::OK, serde_json::json!([])));
    let bundle = serde_json::json!({
        "schema": "entity Agent; entity McpServer;
                   action \"tool:read\" appliesTo { principal: Agent, resource: McpServer, context: { arguments: { path: String } } };
                   action \"tool:delete\" appliesTo { principal: Agent, resource: McpServer };",
        "policies": "permit(principal, action == Action::\"tool:read\", resource) when { context.arguments.path like \"/tmp/*\" };
                     permit(principal == Agent::\"ops\", action == Action::\"tool:delete\", resource == McpServer::\"files\");",
    })
    .to_string();
    let version = h.activate(&bundle).await;
    for (key, expected) in [
        (&ops, serde_json::json!(["tool:read", "tool:delete"])),
        (&bot, serde_json::json!(["tool:read"])),
    ] {
        let (s, body) = h.call("POST", "/v1/authorize/permitted", Some(key), Some(&ask)).await;
        assert_eq!((s, body["permitted"].clone()), (StatusCode::OK, expected), "{body}");
        assert_eq!(body["policy_version"], version);
    }
    // Agents only; a malformed or oversized question is a 400.
    let (s, body) = h
        .call("POST", "/v1/authorize/permitted", Some(&auditor), Some(&ask))
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("unauthorized_role"))
    );
    let many = serde_json::json!({
        "resource": {"type": "McpServer", "id": "files"},
        "actions": vec!["tool:read"; 1025],
    })
    .to_string();
    for body in [many.as_str(), "{\"actions\": []}"] {
        let (s, e) = h.call("POST", "/v1/authorize/permitted", Some(&ops), Some(body)).await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request"))
        );
    }
}
