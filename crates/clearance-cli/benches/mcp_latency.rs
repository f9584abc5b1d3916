//! Latency the MCP proxy adds per tools/call, measured in the same run: an agent on the
//! official TypeScript SDK calls `echo` on the reference server-everything directly
//! (baseline) and through `clearance mcp-proxy` (authorize, local admission with the
//! durable replay cache, start, forward; completion is reported after the answer), over
//! stdio and over streamable HTTP on both sides.
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
use std::process::{Child, Command, Stdio};

use common::{BIN, Server, announced};

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

/// Kills the process it holds when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Row {
    path: &'static str,
    baseline: Vec<f64>,
    proxied: Vec<f64>,
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
    let replay = dir.path().join("replay").display().to_string();
    let keys = [
        ("CLEARANCE_SERVER", server.url.as_str()),
        ("CLEARANCE_API_KEY", agent.as_str()),
        ("CLEARANCE_ENFORCER_KEY", enforcer.as_str()),
        ("CLEARANCE_REPLAY_CACHE", replay.as_str()),
    ];

    // stdio on both sides: the proxy starts the server.
    let stdio_direct = run(&interop, &["node".into(), everything.clone()], &[], calls);
    let stdio_proxied = run(
        &interop,
        &[
            BIN.into(),
            "mcp-proxy".into(),
            "--name".into(),
            "everything".into(),
            "--upstream-cmd".into(),
            "node".into(),
            "--".into(),
            everything.clone(),
        ],
        &keys,
        calls,
    );

    // Streamable HTTP on both sides: the server listens, the proxy listens in front.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut upstream = Command::new("node")
        .args([everything.as_str(), "streamableHttp"])
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    announced(&mut upstream, "MCP Streamable HTTP Server listening on port");
    let upstream = Running(upstream);
    let upstream_url = format!("http://127.0.0.1:{port}/mcp");
    let mut proxy = Command::new(BIN)
        .args(["mcp-proxy", "--listen", "127.0.0.1:0", "--name", "everything"])
        .args(["--upstream-url", &upstream_url])
        .envs(keys.iter().copied().filter(|(k, _)| *k != "CLEARANCE_API_KEY"))
        .env("CLEARANCE_REPLAY_CACHE", dir.path().join("replay-http"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let proxy_url = announced(&mut proxy, "clearance mcp-proxy: listening on ");
    let proxy = Running(proxy);
    let http_direct = run(&interop, &[upstream_url], &[], calls);
    let http_proxied = run(&interop, &[proxy_url], &[("AGENT_KEY", agent.as_str())], calls);
    drop((proxy, upstream));

    let rows = [
        Row {
            path: "stdio",
            baseline: stdio_direct,
            proxied: stdio_proxied,
        },
        Row {
            path: "streamable HTTP",
            baseline: http_direct,
            proxied: http_proxied,
        },
    ];
    println!("{calls} sequential tools/call (echo) each, official TypeScript SDK agent, same run\n");
    println!(
        "{:<16} {:>14} {:>14} {:>14} {:>14} {:>12} {:>9}",
        "transport", "direct median", "direct p99", "proxy median", "proxy p99", "added median", "ratio"
    );
    for row in &rows {
        let (d50, d99) = (percentile(&row.baseline, 0.5), percentile(&row.baseline, 0.99));
        let (p50, p99) = (percentile(&row.proxied, 0.5), percentile(&row.proxied, 0.99));
        println!(
            "{:<16} {:>12.3}ms {:>12.3}ms {:>12.3}ms {:>12.3}ms {:>10.3}ms {:>8.1}x",
            row.path,
            d50,
            d99,
            p50,
            p99,
            p50 - d50,
            p50 / d50
        );
        println!("{:<16} added p99: {:.3} ms", "", p99 - d99);
    }
}
