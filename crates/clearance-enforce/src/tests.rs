use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clearance_artifact::{ClearanceSigner, Jwks};
use clearance_model::{ClearanceClaims, Digest, ExecutionId, LogIndex, PolicyVersion, ResourceRef, argument_digest};
use ed25519_dalek::Signer as _;
use hmac::Mac as _;
use serde_json::{Value, json};

use crate::{ExpectedCall, Verifier, VerifyError};

const ISS: &str = "https://clearance.test";
const NOW: i64 = 1_795_428_000;

struct Fixture {
    signer: ClearanceSigner,
    verifier: Verifier,
    claims: ClearanceClaims,
    args: Value,
    resource: ResourceRef,
}

fn fixture() -> Fixture {
    let signer = ClearanceSigner::generate().unwrap();
    let args = json!({"amount": 120, "currency": "EUR", "charge": "ch_123"});
    let resource = ResourceRef::new("Tool", "stripe");
    let claims = ClearanceClaims {
        iss: ISS.into(),
        sub: "billing-bot".into(),
        aud: Some("payments-runner-1".into()),
        jti: ExecutionId::random().unwrap(),
        iat: NOW,
        nbf: NOW,
        exp: NOW + 60,
        act: "refund".into(),
        res: resource.clone(),
        args: argument_digest(&args).unwrap(),
        env: None,
        pol: PolicyVersion::from_digest(Digest::of(b"bundle")),
        log: LogIndex(42),
        par: None,
        dep: 0,
        dlg: None,
    };
    let verifier = Verifier::new(
        Jwks {
            keys: vec![signer.jwk()],
        },
        ISS,
        Some("payments-runner-1".into()),
    );
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
    fn verify_at(&self, token: &str, now: i64) -> Result<(), VerifyError> {
        let call = ExpectedCall::new("refund", &self.resource, &self.args)?;
        self.verifier.verify(token, &call, now).map(|_| ())
    }
    fn verify(&self, token: &str) -> Result<(), VerifyError> {
        self.verify_at(token, NOW + 1)
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn accepts_the_exact_call() {
    let f = fixture();
    assert_eq!(f.verify(&f.token()), Ok(()));
}

#[test]
fn every_single_byte_change_is_rejected() {
    let f = fixture();
    let token = f.token().into_bytes();
    let mut checked = 0;
    for i in 0..token.len() {
        for replacement in [b'A', b'B', b'_', b'-', b'.', b'0', b'=', b' '] {
            if token[i] == replacement {
                continue;
            }
            let mut changed = token.clone();
            changed[i] = replacement;
            let changed = String::from_utf8(changed).unwrap();
            assert!(
                f.verify(&changed).is_err(),
                "changing byte {i} to {:?} was accepted",
                replacement as char
            );
            checked += 1;
        }
    }
    assert!(checked > 1000);
}

#[test]
fn alg_none_is_rejected() {
    let f = fixture();
    let header = b64(br#"{"alg":"none","typ":"clearance+jwt","kid":"x"}"#);
    let payload = b64(&serde_json::to_vec(&f.claims).unwrap());
    assert_eq!(
        f.verify(&format!("{header}.{payload}.")),
        Err(VerifyError::WrongAlgorithm { alg: "none".into() })
    );
    // Without the empty signature part it is not even a JWS.
    assert!(matches!(
        f.verify(&format!("{header}.{payload}")),
        Err(VerifyError::Malformed(_))
    ));
}

/// The classic algorithm-confusion attack: HMAC keyed with the public key.
#[test]
fn hs256_with_public_key_as_secret_is_rejected() {
    let f = fixture();
    let kid = f.signer.kid();
    let header = b64(format!(r#"{{"alg":"HS256","typ":"clearance+jwt","kid":"{kid}"}}"#).as_bytes());
    let payload = b64(&serde_json::to_vec(&f.claims).unwrap());
    let signing_input = format!("{header}.{payload}");
    for secret in [
        f.signer.verifying_key().to_bytes().to_vec(),
        f.signer.jwk().x.into_bytes(),
    ] {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret).unwrap();
        mac.update(signing_input.as_bytes());
        let token = format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()));
        assert_eq!(
            f.verify(&token),
            Err(VerifyError::WrongAlgorithm { alg: "HS256".into() })
        );
    }
}

fn resign(header: &str, claims: &ClearanceClaims, key: &ed25519_dalek::SigningKey) -> String {
    let input = format!(
        "{}.{}",
        b64(header.as_bytes()),
        b64(&serde_json::to_vec(claims).unwrap())
    );
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&sig.to_bytes()))
}

#[test]
fn unknown_kid_and_foreign_key_are_rejected() {
    let f = fixture();
    let other = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let token = resign(
        r#"{"alg":"EdDSA","typ":"clearance+jwt","kid":"nope"}"#,
        &f.claims,
        &other,
    );
    assert_eq!(f.verify(&token), Err(VerifyError::UnknownKey { kid: "nope".into() }));
    // Right kid, wrong key: the signature fails.
    let header = format!(r#"{{"alg":"EdDSA","typ":"clearance+jwt","kid":"{}"}}"#, f.signer.kid());
    let token = resign(&header, &f.claims, &other);
    assert_eq!(f.verify(&token), Err(VerifyError::BadSignature));
}

#[test]
fn wrong_typ_is_rejected() {
    let f = fixture();
    let other = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    for (typ, got) in [(r#","typ":"JWT""#, "JWT"), ("", "")] {
        let header = format!(r#"{{"alg":"EdDSA"{typ},"kid":"{}"}}"#, f.signer.kid());
        let token = resign(&header, &f.claims, &other);
        assert_eq!(f.verify(&token), Err(VerifyError::WrongType { typ: got.into() }));
    }
}

#[test]
fn unknown_header_fields_are_rejected() {
    let f = fixture();
    let other = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let header = format!(
        r#"{{"alg":"EdDSA","typ":"clearance+jwt","kid":"{}","crit":["exp"]}}"#,
        f.signer.kid()
    );
    let token = resign(&header, &f.claims, &other);
    assert!(matches!(f.verify(&token), Err(VerifyError::Malformed(_))));
}

#[test]
fn issuer_and_audience_must_match() {
    let f = fixture();
    let mut claims = f.claims.clone();
    claims.iss = "https://evil.test".into();
    let token = f.signer.sign(&claims).unwrap();
    assert_eq!(
        f.verify(&token),
        Err(VerifyError::WrongIssuer {
            got: "https://evil.test".into(),
            want: ISS.into()
        })
    );

    let mut claims = f.claims.clone();
    claims.aud = Some("other-runner".into());
    let token = f.signer.sign(&claims).unwrap();
    assert_eq!(
        f.verify(&token),
        Err(VerifyError::WrongAudience {
            got: Some("other-runner".into()),
            want: Some("payments-runner-1".into())
        })
    );
    claims.aud = None;
    let token = f.signer.sign(&claims).unwrap();
    assert_eq!(
        f.verify(&token),
        Err(VerifyError::WrongAudience {
            got: None,
            want: Some("payments-runner-1".into())
        })
    );
}

#[test]
fn time_window_with_leeway() {
    let f = fixture();
    let token = f.token();
    // nbf = NOW, exp = NOW + 60, leeway 5.
    assert_eq!(f.verify_at(&token, NOW - 5), Ok(()));
    assert_eq!(
        f.verify_at(&token, NOW - 6),
        Err(VerifyError::NotYetValid {
            nbf: NOW,
            now: NOW - 6,
            leeway: 5
        })
    );
    assert_eq!(f.verify_at(&token, NOW + 64), Ok(()));
    assert_eq!(
        f.verify_at(&token, NOW + 65),
        Err(VerifyError::Expired {
            exp: NOW + 60,
            now: NOW + 65,
            leeway: 5
        })
    );
    let strict = f.verifier.clone().with_leeway(0);
    let call = ExpectedCall::new("refund", &f.resource, &f.args).unwrap();
    assert!(matches!(
        strict.verify(&token, &call, NOW + 60),
        Err(VerifyError::Expired { .. })
    ));
}

#[test]
fn call_binding() {
    let f = fixture();
    let token = f.token();
    let mut changed = f.args.clone();
    changed["amount"] = json!(121);
    let call = ExpectedCall::new("refund", &f.resource, &changed).unwrap();
    assert_eq!(
        f.verifier.verify(&token, &call, NOW).map(|_| ()),
        Err(VerifyError::ArgumentsMismatch {
            got: f.claims.args,
            want: argument_digest(&changed).unwrap()
        })
    );
    // Key order does not matter: the digest is over the canonical form.
    let reordered: Value = serde_json::from_str(r#"{"charge":"ch_123","currency":"EUR","amount":120}"#).unwrap();
    let call = ExpectedCall::new("refund", &f.resource, &reordered).unwrap();
    assert!(f.verifier.verify(&token, &call, NOW).is_ok());

    let call = ExpectedCall::new("charge", &f.resource, &f.args).unwrap();
    assert_eq!(
        f.verifier.verify(&token, &call, NOW).map(|_| ()),
        Err(VerifyError::ActionMismatch {
            got: "refund".into(),
            want: "charge".into()
        })
    );
    let other = ResourceRef::new("Tool", "paypal");
    let call = ExpectedCall::new("refund", &other, &f.args).unwrap();
    assert!(matches!(
        f.verifier.verify(&token, &call, NOW),
        Err(VerifyError::ResourceMismatch { .. })
    ));
}

#[test]
fn oversize_token_is_rejected_before_parsing() {
    let f = fixture();
    let big = "a".repeat(clearance_model::limits::MAX_TOKEN_BYTES + 1);
    assert!(matches!(f.verify(&big), Err(VerifyError::Oversize { .. })));
}

/// Wycheproof Ed25519 vectors against the strict verification clearances use.
#[test]
fn wycheproof_ed25519_vectors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/wycheproof/ed25519_test.json"
    );
    let data: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut counted = 0;
    for group in data["testGroups"].as_array().unwrap() {
        let pk = hex::decode(group["publicKey"]["pk"].as_str().unwrap()).unwrap();
        let key = <[u8; 32]>::try_from(pk.as_slice())
            .ok()
            .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok());
        for case in group["tests"].as_array().unwrap() {
            let msg = hex::decode(case["msg"].as_str().unwrap()).unwrap();
            let sig = hex::decode(case["sig"].as_str().unwrap()).unwrap();
            let accepted = match (&key, ed25519_dalek::Signature::from_slice(&sig)) {
                (Some(k), Ok(s)) => k.verify_strict(&msg, &s).is_ok(),
                _ => false,
            };
            let want = case["result"].as_str().unwrap() == "valid";
            assert_eq!(accepted, want, "tcId {} ({})", case["tcId"], case["comment"]);
            counted += 1;
        }
    }
    assert_eq!(counted, data["numberOfTests"].as_u64().unwrap());
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
