//! Latency the proxy adds, against the real control plane and a real upstream on
//! loopback, measured in the same run: the upstream called directly (baseline), through
//! `clearance proxy --mode verify` (the caller holds a clearance: local checks, start,
//! forward, complete), and through `--mode gateway` (the proxy also asks for the
//! clearance). Requests are sequential, so each figure is one request's latency.
//!
//! `cargo bench -p clearance-cli --bench proxy_latency` (REQUESTS changes the count).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark setup: a failure must abort loudly"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Proxy, Server, Upstream, percentile};
use serde_json::json;

const SCHEMA: &str = r#"
entity Agent;
entity Api;
action "POST /charges/{id}/refund" appliesTo {
    principal: Agent, resource: Api,
    context: { arguments: { method: String, path: String, params: { id: String }, body: { amount: Long } } }
};
"#;
const POLICIES: &str = r#"
@id("small-refunds")
permit (principal, action == Action::"POST /charges/{id}/refund", resource == Api::"payments")
when { context.arguments.body.amount <= 500 };
"#;

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let requests: usize = std::env::var("REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(&dir.path().join("data"), &[]);
    let agent = server.principal("gateway", &["agent"]);
    let enforcer = server.principal("proxy", &["enforcer"]);
    server.activate(SCHEMA, POLICIES);
    let upstream = Upstream::start();
    let route = ["--route", "POST /charges/{id}/refund"];
    let gateway = Proxy::start(
        &server.url,
        &upstream.url,
        "gateway",
        &agent,
        &enforcer,
        dir.path(),
        &route,
    );
    let verify = Proxy::start(
        &server.url,
        &upstream.url,
        "verify",
        &agent,
        &enforcer,
        dir.path(),
        &route,
    );
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let body = json!({"amount": 120});
    let path = "/charges/ch_1/refund";
    // Clearances for verify mode, obtained just before each timed request: asking is
    // the caller's cost, not the proxy's.
    let authorize = || {
        let res = http
            .post(format!("{}/v1/authorize", server.url))
            .bearer_auth(&agent)
            .json(
                &json!({"action": "POST /charges/{id}/refund", "resource": {"type": "Api", "id": "payments"},
                    "arguments": {"method": "POST", "path": path, "params": {"id": "ch_1"}, "body": body}}),
            )
            .send()
            .unwrap();
        let b: serde_json::Value = res.json().unwrap();
        b["clearance"].as_str().unwrap().to_owned()
    };
    let run = |name: &str, base: &str, with_token: bool| {
        let mut latencies = Vec::with_capacity(requests);
        for i in 0..requests + 50 {
            let mut req = http.post(format!("{base}{path}")).json(&body);
            if with_token {
                req = req.header("clearance", authorize());
            }
            let t = Instant::now();
            let res = req.send().unwrap();
            let status = res.status();
            let answer = res.bytes().unwrap();
            let took = t.elapsed();
            assert!(
                status.is_success(),
                "{name}: {status} {}",
                String::from_utf8_lossy(&answer)
            );
            if i >= 50 {
                latencies.push(took); // the first 50 warm connections and caches
            }
        }
        latencies.sort_unstable();
        (percentile(&latencies, 0.5), percentile(&latencies, 0.99))
    };
    let direct = run("direct", &upstream.url, false);
    let verified = run("verify", &verify.url, true);
    let gated = run("gateway", &gateway.url, false);
    println!("{requests} sequential requests each, same machine and run (loopback)\n");
    println!(
        "{:<34} {:>10} {:>10} {:>16} {:>16}",
        "path", "median", "p99", "added (median)", "added (p99)"
    );
    for (name, (p50, p99)) in [
        ("upstream directly (baseline)", direct),
        ("proxy --mode verify", verified),
        ("proxy --mode gateway", gated),
    ] {
        println!(
            "{name:<34} {p50:>10.2?} {p99:>10.2?} {:>16.2?} {:>16.2?}",
            p50.saturating_sub(direct.0),
            p99.saturating_sub(direct.1)
        );
    }
    println!(
        "\nratio to baseline (median): verify {:.1}x, gateway {:.1}x",
        verified.0.as_secs_f64() / direct.0.as_secs_f64(),
        gated.0.as_secs_f64() / direct.0.as_secs_f64()
    );
    assert_eq!(upstream.count(), 3 * (requests + 50));
}
