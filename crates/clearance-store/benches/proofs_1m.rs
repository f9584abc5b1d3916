//! Inclusion proofs served from SQLite at a million entries: `ControlPlane::inclusion_proof`
//! (size check, node fetches, assembly) beside one node fetch, measured in the same run;
//! then `clearance log verify`'s walk over the same log beside hashing its entries alone.
//! Entries are padded to 600 bytes, about a decision entry's size.
//!
//! `cargo bench -p clearance-store --bench proofs_1m` (ENTRIES env var changes the size).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark setup: a failure must abort loudly"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use clearance_core::{LogAppend, LogPort};
use clearance_log::NodeId;
use clearance_store::{SqliteStore, StoreOptions};

fn median_p99(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort_unstable();
    (v[v.len() / 2], v[(v.len() - 1) * 99 / 100])
}

/// User plus system CPU time of this process so far (Linux `/proc`, 100 ticks a second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which may hold spaces) start after the last `)`.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    (fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()) as f64 / 100.0
}

/// Entry `n`: 600 bytes of JSON.
fn entry(n: u64) -> Vec<u8> {
    let head = format!(r#"{{"n":{n},"pad":""#);
    let mut e = head.into_bytes();
    e.resize(598, b'x');
    e.extend_from_slice(b"\"}");
    e
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let entries: u64 = std::env::var("ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let store = SqliteStore::open(
        &path,
        StoreOptions {
            max_batch: 4096,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut appended = 0u64;
    while appended < entries {
        let chunk = (entries - appended).min(8192);
        let handles: Vec<_> = (0..chunk)
            .map(|i| {
                let s = store.clone();
                let entry = entry(appended + i);
                tokio::spawn(async move {
                    s.append(LogAppend {
                        entry,
                        time: clearance_model::Timestamp(0),
                        execution: None,
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        appended += chunk;
    }
    println!("appended {entries} entries in {:.1} s", started.elapsed().as_secs_f64());

    let plane = clearance_store::testkit::plane(Arc::new(store.clone()), "http://bench")
        .await
        .unwrap();

    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % entries
    };
    let mut proof_times = Vec::new();
    let mut node_times = Vec::new();
    for _ in 0..2000 {
        let index = next();
        let t = Instant::now();
        let p = plane.inclusion_proof(index, entries).await.unwrap();
        proof_times.push(t.elapsed());
        assert!(!p.proof.is_empty());
        let t = Instant::now();
        store
            .log_nodes(&[NodeId {
                level: 0,
                index: next(),
            }])
            .await
            .unwrap();
        node_times.push(t.elapsed());
    }
    let (pm, p99) = median_p99(proof_times);
    let (nm, n99) = median_p99(node_times);
    println!("inclusion proof at {entries} entries: median {pm:.2?}, p99 {p99:.2?}");
    println!("floor, one node fetch:               median {nm:.2?}, p99 {n99:.2?}");
    println!(
        "ratio (medians): {:.1}x one node fetch (a proof needs about 2 log2 n nodes)",
        pm.as_secs_f64() / nm.as_secs_f64()
    );

    // `clearance log verify`: every entry read and hashed, the tree rebuilt, checkpoints
    // checked; beside the floor, hashing the same entries alone.
    plane.checkpoint().await.unwrap();
    let reader = SqliteStore::open_read_only(&path).await.unwrap();
    let verifier = clearance_log::NoteSigner::new(
        "bench/log",
        clearance_artifact::SigningKey::from_bytes(&clearance_store::testkit::LOG_KEY),
    )
    .unwrap()
    .verifier();
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let report = clearance_store::verify_log(&reader, &verifier, |_| {}).await.unwrap();
    let (walk, walk_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    assert_eq!(
        (report.entries, report.checkpoints, report.divergence),
        (entries, 1, None)
    );
    let t = Instant::now();
    for n in 0..entries {
        std::hint::black_box(clearance_log::leaf_hash(&entry(n)));
    }
    let hashing = t.elapsed().as_secs_f64();
    let rate = |s: f64| entries as f64 / s;
    println!(
        "log verify:                          {:.0} entries/s, {:.0} per CPU second (all threads)",
        rate(walk),
        rate(walk_cpu)
    );
    println!("floor, hashing the entries alone:    {:.0} entries/s", rate(hashing));
    println!("ratio: {:.2}x the floor's time", walk / hashing);
}
