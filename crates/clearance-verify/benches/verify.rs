//! Enforcement-point verification beside bare Ed25519 verification, in the same run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark setup: a failure must abort loudly"
)]

use std::hint::black_box;

use clearance_verify::{ExpectedCall, Sample, Verifier};
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::Signer as _;

fn bench(c: &mut Criterion) {
    let now = 1_795_428_000;
    let mut sample = Sample::refund("https://clearance.example", now).unwrap();
    sample.claims.aud = Some("payments-runner-1".into());
    let token = sample.token().unwrap();
    let verifier = Verifier::new(
        sample.jwks(),
        "https://clearance.example",
        Some("payments-runner-1".into()),
    );
    let (resource, args) = (&sample.resource, &sample.args);

    let mut group = c.benchmark_group("verification");
    group.bench_function("clearance_verify_with_call_binding", |b| {
        b.iter(|| {
            let call = ExpectedCall::new("refund", resource, args).unwrap();
            verifier.verify(black_box(&token), &call, now).unwrap()
        })
    });
    let call = ExpectedCall::new("refund", resource, args).unwrap();
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
