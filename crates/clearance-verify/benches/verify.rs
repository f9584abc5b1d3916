//! Enforcement-point verification beside bare Ed25519 verification, in the same run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark setup: a failure must abort loudly"
)]

use std::hint::black_box;

use clearance_artifact::{ClearanceSigner, Jwks};
use clearance_model::{ClearanceClaims, Digest, ExecutionId, LogIndex, PolicyVersion, ResourceRef, argument_digest};
use clearance_verify::{ExpectedCall, Verifier};
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::Signer as _;
use serde_json::json;

fn bench(c: &mut Criterion) {
    let signer = ClearanceSigner::generate().unwrap();
    let args = json!({"amount": 120, "currency": "EUR", "charge": "ch_123"});
    let resource = ResourceRef::new("Tool", "stripe");
    let now = 1_795_428_000;
    let claims = ClearanceClaims {
        iss: "https://clearance.example".into(),
        sub: "billing-bot".into(),
        aud: Some("payments-runner-1".into()),
        jti: ExecutionId::random().unwrap(),
        iat: now,
        nbf: now,
        exp: now + 60,
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
    let token = signer.sign(&claims).unwrap();
    let verifier = Verifier::new(
        Jwks {
            keys: vec![signer.jwk()],
        },
        "https://clearance.example",
        Some("payments-runner-1".into()),
    );

    let mut group = c.benchmark_group("verification");
    group.bench_function("clearance_verify_with_call_binding", |b| {
        b.iter(|| {
            let call = ExpectedCall::new("refund", &resource, &args).unwrap();
            verifier.verify(black_box(&token), &call, now).unwrap()
        })
    });
    let call = ExpectedCall::new("refund", &resource, &args).unwrap();
    group.bench_function("clearance_verify_precomputed_call", |b| {
        b.iter(|| verifier.verify(black_box(&token), &call, now).unwrap())
    });

    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let message = vec![b'x'; token.len() - 87];
    let signature = key.sign(&message);
    let public = key.verifying_key();
    group.bench_function("floor_ed25519_verify_strict", |b| {
        b.iter(|| public.verify_strict(black_box(&message), &signature).unwrap())
    });
    group.bench_function("floor_ed25519_verify", |b| {
        b.iter(|| ed25519_dalek::Verifier::verify(&public, black_box(&message), &signature).unwrap())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(60).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
