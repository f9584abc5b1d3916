//! Inclusion proof generation and verification at a million entries.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark setup: a failure must abort loudly"
)]

use std::hint::black_box;

use clearance_log::{MemoryTree, inclusion_proof, leaf_hash, verify_inclusion};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let size = 1_000_000u64;
    let mut tree = MemoryTree::default();
    for i in 0..size {
        tree.push(leaf_hash(&i.to_be_bytes()));
    }
    let root = tree.root(size).unwrap();
    let mut group = c.benchmark_group("log_1m");
    group.bench_function("inclusion_proof", |b| {
        b.iter(|| inclusion_proof(&tree, black_box(777_777), size).unwrap())
    });
    let proof = inclusion_proof(&tree, 777_777, size).unwrap();
    let leaf = leaf_hash(&777_777u64.to_be_bytes());
    group.bench_function("verify_inclusion", |b| {
        b.iter(|| verify_inclusion(black_box(777_777), size, &leaf, &proof, &root).unwrap())
    });
    group.bench_function("floor_leaf_hash", |b| {
        b.iter(|| leaf_hash(black_box(b"a 300-byte decision entry")))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(60).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
