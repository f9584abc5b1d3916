//! Revoke to stopped: how long a running `clearance exec` keeps running after its
//! execution is revoked, over loopback. Each round starts a command under a fresh
//! clearance (its parent delegates `exec`), revokes the parent once the command runs, and
//! times from the revoke's answer to the exec's exit. The lease is 30 s (renewal every
//! 10 s), so a stop well under that comes from the revocation stream, not the renewal.
//!
//! `cargo bench -p clearance-cli --bench revoke_latency` (ROUNDS env var, default 30).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark setup: a failure must abort loudly"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{ADMIN_KEY, Server, env_or, percentile};
use serde_json::json;

const SCHEMA: &str = r#"
entity Agent;
entity Command;
entity Tool;
action exec appliesTo {
    principal: Agent, resource: Command,
    context: { arguments: { argv: Set<String>, cwd: String } }
};
action orchestrate appliesTo { principal: Agent, resource: Tool };
"#;
const POLICIES: &str = r#"
@id("shell") permit (principal, action == Action::"exec", resource) when { resource == Command::"sh" };
@id("orchestrate") permit (principal, action == Action::"orchestrate", resource);
"#;

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` and `--list` probes: nothing to run.
    }
    let rounds = env_or("ROUNDS", 30) as usize;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(&dir.path().join("data"), &["--lease-seconds", "30"]);
    let agent = server.principal("worker", &["agent"]);
    let enforcer = server.principal("runner", &["enforcer"]);
    server.activate(SCHEMA, POLICIES);
    let mut took = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let (_, parent) = server.post(
            "/v1/authorize",
            Some(&agent),
            &json!({"action": "orchestrate", "resource": {"type": "Tool", "id": "fleet"},
                    "delegate": {"actions": ["exec"], "resources": [{"type": "Command", "id": "sh"}]}}),
        );
        let (mut child, _) = common::governed_sleeper(
            &server.url,
            (&agent, &enforcer),
            parent["clearance"].as_str().unwrap(),
            dir.path(),
            &format!("round-{round}"),
            None,
        );
        // The stream is connected by the time the command has run a little.
        std::thread::sleep(Duration::from_millis(300));
        let (status, _) = server.post(
            &format!("/v1/executions/{}/revoke", parent["execution_id"].as_str().unwrap()),
            Some(ADMIN_KEY),
            &json!({}),
        );
        assert_eq!(status, 200);
        let revoked = Instant::now();
        let exit = child.wait().unwrap();
        took.push(revoked.elapsed());
        assert_eq!(exit.code(), Some(123), "round {round}");
    }
    took.sort_unstable();
    let at = |p: f64| percentile(&took, p);
    println!("revoke to stopped, `clearance exec`, {rounds} rounds, lease 30 s (renewal every 10 s):");
    println!(
        "  p50 {:.1?}   p99 {:.1?}   max {:.1?}",
        at(0.5),
        at(0.99),
        took[took.len() - 1]
    );
}
