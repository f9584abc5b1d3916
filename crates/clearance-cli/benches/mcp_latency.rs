//! Latency the MCP proxy adds per tools/call, measured in the same run: an agent on the
//! official TypeScript SDK calls `echo` on the reference server-everything directly
//! (baseline) and through `clearance mcp-proxy` (authorize, local admission with the
//! durable replay cache, start, forward; completion is reported after the answer).
//!
//! `npm ci --prefix tests/interop/mcp`, then
//! `cargo bench -p clearance-cli --bench mcp_latency` (CALLS changes the count).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark setup: a failure must abort loudly"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;

use common::{BIN, Server};

const SCHEMA: &str = r#"
entity Agent;
entity McpServer;
action "tool:echo" appliesTo {
    principal: Agent, resource: McpServer, context: { arguments: { message: String } }
};
"#;
const POLICIES: &str = r#"
@id("echo")
permit (principal, action == Action::"tool:echo", resource == McpServer::"everything");
"#;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn run(interop: &Path, command: &[String], env: &[(&str, &str)], calls: usize) -> Vec<f64> {
    let out = Command::new("node")
        .arg(interop.join("agent.mjs"))
        .args(command)
        .current_dir(interop)
        .envs(env.iter().copied())
        .env("BENCH", calls.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    let mut l: Vec<f64> = v["latencies_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    l.sort_by(f64::total_cmp);
    l
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let interop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/mcp");
    let everything = interop.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    if !everything.exists() {
        eprintln!("run `npm ci --prefix tests/interop/mcp` first");
        return;
    }
    let calls: usize = std::env::var("CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(&dir.path().join("data"), &[]);
    let agent = server.principal("mcp-agent", &["agent"]);
    let enforcer = server.principal("mcp-runner", &["enforcer"]);
    server.activate(SCHEMA, POLICIES);
    let everything = everything.display().to_string();
    let direct = run(&interop, &["node".into(), everything.clone()], &[], calls);
    let replay = dir.path().join("replay").display().to_string();
    let proxied = run(
        &interop,
        &[
            BIN.into(),
            "mcp-proxy".into(),
            "--name".into(),
            "everything".into(),
            "--upstream-cmd".into(),
            "node".into(),
            "--".into(),
            everything,
        ],
        &[
            ("CLEARANCE_SERVER", &server.url),
            ("CLEARANCE_API_KEY", &agent),
            ("CLEARANCE_ENFORCER_KEY", &enforcer),
            ("CLEARANCE_REPLAY_CACHE", &replay),
        ],
        calls,
    );
    println!("{calls} sequential tools/call (echo) each, official TypeScript SDK agent, same run\n");
    println!("{:<36} {:>10} {:>10}", "path", "median", "p99");
    let (d50, d99) = (percentile(&direct, 0.5), percentile(&direct, 0.99));
    let (p50, p99) = (percentile(&proxied, 0.5), percentile(&proxied, 0.99));
    println!("{:<36} {:>8.3}ms {:>8.3}ms", "server-everything directly", d50, d99);
    println!("{:<36} {:>8.3}ms {:>8.3}ms", "through clearance mcp-proxy", p50, p99);
    println!(
        "\nadded: median {:.3} ms, p99 {:.3} ms; ratio to baseline (median) {:.1}x",
        p50 - d50,
        p99 - d99,
        p50 / d50
    );
}
