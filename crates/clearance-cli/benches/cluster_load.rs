//! Scale-out: authorize throughput and latency over HTTP on loopback with 1, 2 and 3
//! `clearance serve` nodes on one PostgreSQL database, against 1 node on SQLite, driven
//! by the same load generator in the same run (clients spread round-robin over the
//! nodes). On a 2-core machine the nodes, PostgreSQL and the load generator share the
//! same cores: the figures show what the shared database costs, not added capacity.
//!
//! `cargo bench -p clearance-cli --bench cluster_load` (CLIENTS, SECONDS env vars).
//! Needs PostgreSQL (`CLEARANCE_TEST_DATABASE_URL`). Loopback only; bounded in time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark setup: a failure must abort loudly"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{POLICIES, SCHEMA, Server, env_or, percentile, refund};
use serde_json::json;

/// Drive `nodes` with `clients` threads for `seconds`; decisions/s, p50, p99.
fn drive(nodes: &[Server], clients: usize, seconds: u64) -> (f64, Duration, Duration) {
    let bot = nodes[0].agent("bot");
    nodes[0].activate(SCHEMA, POLICIES);
    // Let every node follow the activation before the clock starts.
    std::thread::sleep(Duration::from_millis(500));
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (url, bot, latencies) = (urls[c % urls.len()].clone(), bot.clone(), Arc::clone(&latencies));
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut mine = Vec::new();
                let mut n = 0i64;
                while Instant::now() < deadline {
                    n += 1;
                    let body = json!({"action": "refund", "resource": {"type": "Tool", "id": "t"},
                                      "arguments": refund(n % 400 + c as i64)});
                    let t = Instant::now();
                    let res = http
                        .post(format!("{url}/v1/authorize"))
                        .bearer_auth(&bot)
                        .json(&body)
                        .send()
                        .unwrap();
                    assert!(res.status().is_success(), "{}", res.status());
                    mine.push(t.elapsed());
                }
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut latencies = Arc::try_unwrap(latencies).unwrap().into_inner().unwrap();
    latencies.sort_unstable();
    (
        latencies.len() as f64 / seconds,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` and `--list` probes: nothing to run.
    }
    let url = common::pg_url();
    assert!(common::pg_reachable(&url), "this benchmark needs PostgreSQL at {url}");
    let clients = env_or("CLIENTS", 32) as usize;
    let seconds = env_or("SECONDS", 8);
    let dir = tempfile::tempdir().unwrap();
    println!("authorize over HTTP, {clients} concurrent clients, {seconds} s each, same machine and run\n");
    println!(
        "{:<22} {:>12} {:>10} {:>10} {:>14}",
        "storage", "decisions/s", "p50", "p99", "vs SQLite x1"
    );
    let sqlite = Server::start_in(&dir.path().join("sqlite"), &[]);
    let baseline = drive(std::slice::from_ref(&sqlite), clients, seconds);
    sqlite.stop();
    let row = |name: &str, (rate, p50, p99): (f64, Duration, Duration)| {
        println!(
            "{name:<22} {rate:>12.0} {p50:>10.2?} {p99:>10.2?} {:>13.2}x",
            rate / baseline.0
        );
    };
    row("SQLite, 1 node", baseline);
    for count in 1..=3 {
        let schema = format!("bench_cluster_{}_{count}", std::process::id());
        let nodes = common::start_cluster(
            &dir.path().join(format!("pg{count}")),
            &url,
            &schema,
            "http://bench.test",
            count,
            &[],
        );
        let figures = drive(&nodes, clients, seconds);
        for n in nodes {
            n.stop();
        }
        common::drop_schema(&url, &schema);
        row(
            &format!("PostgreSQL, {count} node{}", if count > 1 { "s" } else { "" }),
            figures,
        );
    }
}
