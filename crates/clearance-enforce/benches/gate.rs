//! The whole local admission check (verify, revocation view, durable replay cache)
//! beside verification alone, in the same run. Each admitted clearance is fresh, since
//! the replay cache refuses a second one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark setup: a failure must abort loudly"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use clearance_enforce::{ExpectedCall, Gate, ReplayCache, RevocationView, Sample, Verifier};
use clearance_model::ExecutionId;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

const NOW: i64 = 1_795_428_000;

fn bench(c: &mut Criterion) {
    let sample = Sample::refund("https://clearance.example", NOW).unwrap();
    let verifier = Verifier::new(sample.jwks(), "https://clearance.example", None);
    let (resource, args) = (&sample.resource, &sample.args);
    let fresh_token = || sample.fresh_token().unwrap();
    let call = ExpectedCall::new("refund", resource, args).unwrap();
    // A view with ten thousand revocations in it, current.
    let view = Arc::new(RevocationView::new(Duration::from_secs(3600)));
    for seq in 1..=10_000u64 {
        view.apply(&clearance_model::execution::RevocationRecord {
            seq,
            kind: clearance_model::execution::RevocationKind::Execution,
            id: ExecutionId::random().unwrap().to_string(),
            reason: "bench".into(),
            time: NOW,
        });
    }
    view.heard(10_000);
    let dir = tempfile::tempdir().unwrap();
    let gate = Gate::new(
        verifier.clone(),
        ReplayCache::open(&dir.path().join("replay"), NOW).unwrap(),
        Some(Arc::clone(&view)),
    );

    let mut group = c.benchmark_group("admission");
    group.bench_function("baseline_verify_only", |b| {
        b.iter_batched(
            fresh_token,
            |t| verifier.verify(black_box(&t), &call, NOW).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("gate_admit_verify_revocations_durable_replay_cache", |b| {
        b.iter_batched(
            fresh_token,
            |t| gate.admit(black_box(&t), &call, NOW).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let replay = ReplayCache::open(&dir.path().join("replay-only"), NOW).unwrap();
    group.bench_function("replay_cache_consume_alone", |b| {
        b.iter_batched(
            || ExecutionId::random().unwrap().to_string(),
            |jti| replay.consume(black_box(&jti), NOW, NOW + 60, NOW).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(40).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
