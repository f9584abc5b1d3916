//! The enforcement point's own state (replay cache, revocation view, the gate over them)
//! and the runtime's parsing; the verifier's tests are in `clearance-verify`.

use clearance_artifact::{ClearanceSigner, Jwks};
use clearance_model::{ClearanceClaims, ExecutionId, ResourceRef};
use serde_json::{Value, json};

use clearance_verify::Sample;

use crate::{ExpectedCall, Verifier, VerifyError};

const NOW: i64 = 1_795_428_000;

/// A signed refund clearance and a verifier that trusts its key.
struct Fixture {
    signer: ClearanceSigner,
    verifier: Verifier,
    claims: ClearanceClaims,
    args: Value,
    resource: ResourceRef,
}

fn fixture() -> Fixture {
    let Sample {
        signer,
        claims,
        args,
        resource,
    } = Sample::refund("https://clearance.test", NOW).unwrap();
    let jwks = Jwks {
        keys: vec![signer.jwk()],
    };
    let verifier = Verifier::new(jwks, "https://clearance.test", None);
    Fixture {
        signer,
        verifier,
        claims,
        args,
        resource,
    }
}

impl Fixture {
    fn token(&self) -> String {
        self.signer.sign(&self.claims).unwrap()
    }
}

mod state {
    use std::sync::Arc;
    use std::time::Duration;

    use clearance_model::execution::{RevocationKind, RevocationRecord};

    use super::*;
    use crate::{Gate, ReplayCache, RevocationView};

    fn record(seq: u64, kind: RevocationKind, id: &str) -> RevocationRecord {
        RevocationRecord {
            seq,
            kind,
            id: id.into(),
            reason: "test".into(),
            time: NOW,
        }
    }

    #[test]
    fn replay_cache_survives_a_restart_and_forgets_expired_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        {
            let cache = ReplayCache::open(&path, NOW).unwrap();
            cache.consume("a", NOW + 60, NOW).unwrap();
            cache.consume("b", NOW + 5, NOW).unwrap();
            assert_eq!(
                cache.consume("a", NOW + 60, NOW),
                Err(VerifyError::Replayed { jti: "a".into() })
            );
        }
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // Reopened later: `a` is still consumed, `b` expired and was compacted away.
        let cache = ReplayCache::open(&path, NOW + 10).unwrap();
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.consume("a", NOW + 60, NOW + 10).unwrap_err().code(), "replayed");
        cache.consume("b", NOW + 70, NOW + 10).unwrap();
    }

    #[test]
    fn replay_cache_is_exclusive_and_refuses_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        std::fs::write(&path, "not a replay cache at all\n").unwrap();
        assert_eq!(
            ReplayCache::open(&path, NOW).unwrap_err().code(),
            "replay_cache_unavailable"
        );
    }

    #[test]
    fn revocation_view_denies_when_stale_or_revoked() {
        let f = fixture();
        let other = ExecutionId::random().unwrap();
        let view = RevocationView::new(Duration::from_millis(200));
        // Never heard from the control plane: stale.
        assert_eq!(
            view.check(&f.claims, "kid").unwrap_err().code(),
            "revocation_view_stale"
        );
        view.heard(0);
        assert_eq!(view.check(&f.claims, "kid"), Ok(()));
        // A heartbeat that says records are missing does not freshen the view.
        std::thread::sleep(Duration::from_millis(250));
        view.heard(3);
        assert_eq!(
            view.check(&f.claims, "kid").unwrap_err().code(),
            "revocation_view_stale"
        );
        for (seq, kind, id) in [
            (1, RevocationKind::Principal, "someone-else"),
            (2, RevocationKind::SigningKey, "old-kid"),
            (3, RevocationKind::Execution, other.as_str()),
        ] {
            view.apply(&record(seq, kind, id));
        }
        view.heard(3);
        assert_eq!(view.seq(), 3);
        assert_eq!(view.check(&f.claims, "kid"), Ok(()));
        assert_eq!(view.check(&f.claims, "old-kid").unwrap_err().code(), "revoked");
        let mut child = f.claims.clone();
        child.par = Some(other.clone());
        assert_eq!(view.check(&child, "kid").unwrap_err().code(), "revoked");
        view.apply(&record(4, RevocationKind::Principal, "billing-bot"));
        view.heard(4);
        assert_eq!(view.check(&f.claims, "kid").unwrap_err().code(), "revoked");
        view.apply(&record(5, RevocationKind::Execution, f.claims.jti.as_str()));
        assert!(matches!(view.check(&f.claims, "kid"), Err(VerifyError::Revoked(_))));
    }

    #[test]
    fn gate_admits_once_in_order_of_checks() {
        let f = fixture();
        let dir = tempfile::tempdir().unwrap();
        let view = Arc::new(RevocationView::new(Duration::from_secs(30)));
        view.heard(0);
        let gate = Gate::new(
            f.verifier.clone(),
            ReplayCache::open(&dir.path().join("r"), NOW).unwrap(),
            Some(Arc::clone(&view)),
        );
        let call = ExpectedCall::new("refund", &f.resource, &f.args).unwrap();
        let token = f.token();
        // A clearance for another call is refused without being consumed.
        let other = json!({"amount": 9999});
        let wrong = ExpectedCall::new("refund", &f.resource, &other).unwrap();
        assert_eq!(
            gate.admit(&token, &wrong, NOW).unwrap_err().code(),
            "arguments_mismatch"
        );
        assert!(gate.admit(&token, &call, NOW).is_ok());
        assert_eq!(gate.admit(&token, &call, NOW).unwrap_err().code(), "replayed");
        assert_eq!(gate.replay_cache().len(), 1);
    }
}

mod sse_and_http {
    use crate::client::{ClientOptions, ControlPlaneClient, SseParser};
    use crate::proxy::{RouteTemplate, http_call};

    #[test]
    fn a_client_never_prints_its_key() {
        let client =
            ControlPlaneClient::new("http://127.0.0.1:1", "clr_secret_one", &ClientOptions::default()).unwrap();
        let other = client.with_key("clr_secret_two");
        for shown in [format!("{client:?}"), format!("{other:?}")] {
            assert!(!shown.contains("clr_secret"), "{shown}");
            assert!(shown.contains("127.0.0.1:1"), "{shown}");
        }
    }

    #[test]
    fn parses_events_split_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: revocation\nid: 1\ndata: {\"a\"").is_empty());
        let events = p.push(b":1}\n\n: keep-alive\n\nevent: heartbeat\r\ndata: {}\r\n\r\n");
        assert_eq!(events.len(), 2);
        assert_eq!(
            (events[0].name.as_str(), events[0].data.as_str()),
            ("revocation", "{\"a\":1}")
        );
        assert_eq!(events[1].name, "heartbeat");
    }

    #[test]
    fn maps_requests_to_calls() {
        let routes: Vec<RouteTemplate> = ["POST /charges/{id}/refund", "GET /charges"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        let call = http_call(
            "POST",
            "/charges/ch_1/refund",
            Some("note=a%20b&x=1"),
            Some("application/json; charset=utf-8"),
            br#"{"amount": 120}"#,
            &routes,
        )
        .unwrap();
        assert_eq!(call.action, "POST /charges/{id}/refund");
        assert_eq!(
            call.arguments,
            serde_json::json!({
                "method": "POST", "path": "/charges/ch_1/refund", "params": {"id": "ch_1"},
                "query": {"note": "a b", "x": "1"}, "body": {"amount": 120}
            })
        );
        // Unknown routes, duplicate query names and broken JSON are refused.
        assert!(http_call("DELETE", "/charges", None, None, b"", &routes).is_err());
        assert!(http_call("GET", "/charges", Some("a=1&a=2"), None, b"", &routes).is_err());
        assert!(
            http_call(
                "POST",
                "/charges/x/refund",
                None,
                Some("application/json"),
                b"{",
                &routes
            )
            .is_err()
        );
        // Without templates the literal path is the action; a binary body is digested.
        let raw = http_call("PUT", "/blob", None, Some("application/octet-stream"), b"\x00\x01", &[]).unwrap();
        assert_eq!(raw.action, "PUT /blob");
        assert!(raw.arguments["body_sha256"].as_str().unwrap().starts_with("sha256:"));
        assert!("POST charges".parse::<RouteTemplate>().is_err());
    }
}
