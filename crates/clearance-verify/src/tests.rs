use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clearance_artifact::{ClearanceSigner, Jwks};
use clearance_model::{ClearanceClaims, ResourceRef, argument_digest};
use ed25519_dalek::Signer as _;
use hmac::Mac as _;
use serde_json::{Value, json};

use crate::{ExpectedCall, Sample, Verifier, VerifyError};

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
    let Sample {
        signer,
        mut claims,
        args,
        resource,
    } = Sample::refund(ISS, NOW).unwrap();
    claims.aud = Some("payments-runner-1".into());
    let jwks = Jwks {
        keys: vec![signer.jwk()],
    };
    let verifier = Verifier::new(jwks, ISS, Some("payments-runner-1".into()));
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
