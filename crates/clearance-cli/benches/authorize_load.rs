//! A load run against the real server over HTTP on loopback: authorize throughput and
//! latency with group commit, and with one commit (one fsync) per decision, measured in
//! the same run. Then `clearance log verify` over the log the run produced.
//!
//! `cargo bench -p clearance-cli --bench authorize_load` (CLIENTS and SECONDS env vars
//! change the load). Loopback only; bounded in time.

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

use common::{BIN, POLICIES, SCHEMA, Server, env_or, percentile, refund};
use serde_json::json;

struct Run {
    decisions: usize,
    seconds: f64,
    latencies: Vec<Duration>,
}

fn load(batch: usize, clients: usize, seconds: u64, dir: &std::path::Path) -> Run {
    let config = dir.join(format!("batch-{batch}.toml"));
    std::fs::write(&config, format!("log_max_batch = {batch}\n")).unwrap();
    let data = dir.join(format!("data-{batch}"));
    let server = Server::start_in(&data, &["--config", config.to_str().unwrap()]);
    let bot = server.agent("bot");
    server.activate(SCHEMA, POLICIES);
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (url, bot, latencies) = (server.url.clone(), bot.clone(), Arc::clone(&latencies));
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
                let mut mine = Vec::new();
                let mut n = 0i64;
                while Instant::now() < deadline {
                    n += 1;
                    let body = json!({"action": "refund", "resource": {"type": "Tool", "id": "t"}, "arguments": refund(n % 400 + c as i64)});
                    let t = Instant::now();
                    let res = http.post(format!("{url}/v1/authorize")).bearer_auth(&bot).json(&body).send().unwrap();
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
    server.stop();
    let mut latencies = Arc::try_unwrap(latencies).unwrap().into_inner().unwrap();
    latencies.sort_unstable();
    Run {
        decisions: latencies.len(),
        seconds,
        latencies,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` and `--list` probes: nothing to run.
    }
    let clients = env_or("CLIENTS", 64) as usize;
    let seconds = env_or("SECONDS", 8);
    let dir = tempfile::tempdir().unwrap();
    println!("authorize over HTTP, {clients} concurrent clients, {seconds} s each, same machine and run\n");
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>12}",
        "log commit", "decisions/s", "median", "p99", "decisions"
    );
    let mut rates = Vec::new();
    for (name, batch) in [("group commit (batch <= 512)", 512), ("one fsync per decision", 1)] {
        let r = load(batch, clients, seconds, dir.path());
        let rate = r.decisions as f64 / r.seconds;
        rates.push(rate);
        println!(
            "{name:<28} {rate:>12.0} {:>12.2?} {:>12.2?} {:>12}",
            percentile(&r.latencies, 0.5),
            percentile(&r.latencies, 0.99),
            r.decisions
        );
    }
    println!(
        "\ngroup commit / one fsync per decision: {:.2}x throughput",
        rates[0] / rates[1]
    );

    let out = std::process::Command::new(BIN)
        .args(["log", "verify", "--json", "--data-dir"])
        .arg(dir.path().join("data-512"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!(
        "\nclearance log verify: {} entries in {:.3} s = {:.0} entries/s (ok: {})",
        v["entries"],
        v["seconds"].as_f64().unwrap_or(0.0),
        v["entries_per_second"].as_f64().unwrap_or(0.0),
        v["ok"]
    );
}
