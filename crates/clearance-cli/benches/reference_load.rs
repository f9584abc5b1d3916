//! Clearance beside a reference decision server, on the same generated policy sets, driven
//! by the same load generator (`wrk`) over loopback: decisions/s, p50, p99 and server CPU
//! per decision for each, and the ratio, at 1, 16 and 64 connections.
//!
//! The reference is `cedar-agent` (a bare Cedar decision server: no authentication, no
//! signing, no audit). It is never a dependency of the product: set `CEDAR_AGENT` to its
//! binary, or the benchmark builds it from crates.io into `target/reference/` the first
//! time (a few minutes). `wrk` comes from Debian's packages (`apt-get install wrk`).
//!
//! `cargo bench -p clearance-cli --bench reference_load`; `SECONDS` (per run, default 5)
//! and `SETS` (`small`, `medium`, `large`, comma-separated; default all) change the run,
//! and `CLEARANCE_BIN` runs another build of Clearance (an earlier commit's, say) against
//! the same reference. Loopback only; bounded in time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark setup: a failure must abort loudly"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Server, env_or};
use serde_json::json;

/// A generated bundle: `policies` spread evenly over `actions`.
struct PolicySet {
    name: &'static str,
    policies: usize,
    actions: usize,
}

const SETS: [PolicySet; 3] = [
    PolicySet {
        name: "small",
        policies: 10,
        actions: 2,
    },
    PolicySet {
        name: "medium",
        policies: 1_000,
        actions: 100,
    },
    PolicySet {
        name: "large",
        policies: 10_000,
        actions: 1_000,
    },
];

impl PolicySet {
    fn schema(&self) -> String {
        let mut s = String::from("entity Agent;\nentity Tool;\n");
        for a in 0..self.actions {
            writeln!(
                s,
                "action a{a} appliesTo {{ principal: Agent, resource: Tool, context: {{ arguments: {{ amount: Long }} }} }};"
            )
            .unwrap();
        }
        s
    }

    /// Per action: permits with rising limits, and every fifth a forbid on large amounts.
    /// A request for amount 10 is allowed by the first permit of its action.
    fn policies(&self) -> Vec<(String, String)> {
        (0..self.policies)
            .map(|i| {
                let action = i % self.actions;
                let text = if i % 5 == 4 {
                    format!(
                        "forbid (principal, action == Action::\"a{action}\", resource) when {{ context.arguments.amount > {} }};",
                        100_000 + i
                    )
                } else {
                    format!(
                        "permit (principal, action == Action::\"a{action}\", resource) when {{ context.arguments.amount <= {} }};",
                        100 + i
                    )
                };
                (format!("p{i}"), text)
            })
            .collect()
    }

    fn bundle_text(&self) -> String {
        self.policies()
            .iter()
            .map(|(id, text)| format!("@id(\"{id}\")\n{text}\n"))
            .collect()
    }
}

/// What one `wrk` run measured, and the server's CPU time over it.
struct Measured {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_decision: f64,
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` and `--list` probes: nothing to run.
    }
    let seconds = env_or("SECONDS", 5);
    let wanted = std::env::var("SETS").unwrap_or_else(|_| "small,medium,large".into());
    assert!(
        Command::new("wrk").arg("--version").output().is_ok(),
        "`wrk` is needed as the load generator: apt-get install wrk"
    );
    let reference = reference_binary();
    let dir = tempfile::tempdir().unwrap();
    println!(
        "Clearance (governed: auth, policy, durable log, signed clearance) beside cedar-agent (bare Cedar), \
         wrk over loopback, {seconds} s per run, same machine and run\n"
    );
    println!(
        "{:<8} {:>6} {:<10} {:>10} {:>9} {:>9} {:>10}",
        "set", "conns", "server", "decisions/s", "p50 ms", "p99 ms", "CPU us/dec"
    );
    for set in SETS.iter().filter(|s| wanted.split(',').any(|w| w == s.name)) {
        let server = Server::start_in(&dir.path().join(set.name), &[]);
        let key = server.agent("bot");
        server.activate(&set.schema(), &set.bundle_text());
        let agent = Reference::start(&reference, set);
        // Resident memory with the set loaded and idle, once the compile's garbage is gone.
        std::thread::sleep(std::time::Duration::from_secs(3));
        println!(
            "{:<8} resident memory with the set loaded, idle: clearance {:.1} MB, reference {:.1} MB",
            set.name,
            resident_mb(server.pid()),
            resident_mb(agent.child.id())
        );
        for conns in [1, 16, 64] {
            let body = |action: usize| json!({"action": format!("a{action}"), "resource": {"type": "Tool", "id": "t"}, "arguments": {"amount": 10}});
            let ours = wrk(
                &format!("{}/v1/authorize", server.url),
                Some(&key),
                set.actions,
                &body,
                conns,
                seconds,
                server.pid(),
            );
            let theirs = wrk(
                &format!("{}/v1/is_authorized", agent.url),
                None,
                set.actions,
                &|action| json!({"principal": "Agent::\"bot\"", "action": format!("Action::\"a{action}\""), "resource": "Tool::\"t\"", "context": {"arguments": {"amount": 10}}}),
                conns,
                seconds,
                agent.child.id(),
            );
            for (who, m) in [("clearance", &ours), ("reference", &theirs)] {
                println!(
                    "{:<8} {conns:>6} {who:<10} {:>10.0} {:>9.2} {:>9.2} {:>10.0}",
                    set.name, m.per_second, m.p50_ms, m.p99_ms, m.cpu_us_per_decision
                );
            }
            println!(
                "{:<8} {conns:>6} {:<10} {:>9.2}x {:>8.2}x {:>8.2}x {:>9.2}x",
                set.name,
                "ratio",
                ours.per_second / theirs.per_second,
                ours.p50_ms / theirs.p50_ms,
                ours.p99_ms / theirs.p99_ms,
                ours.cpu_us_per_decision / theirs.cpu_us_per_decision,
            );
        }
        drop(agent);
        server.stop();
    }
    println!("\n(ratio: Clearance over the reference; above 1 is better for decisions/s, below 1 for the rest)");
}

/// The reference server's binary: `CEDAR_AGENT`, or built once from crates.io into
/// `target/reference/`.
fn reference_binary() -> PathBuf {
    if let Ok(path) = std::env::var("CEDAR_AGENT") {
        return PathBuf::from(path);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/reference");
    let bin = root.join("bin/cedar-agent");
    if !bin.exists() {
        eprintln!(
            "building the reference server (cargo install cedar-agent) into {} ...",
            root.display()
        );
        let status = Command::new(env!("CARGO"))
            .args(["install", "--locked", "--quiet", "cedar-agent", "--root"])
            .arg(&root)
            .status()
            .unwrap();
        assert!(status.success(), "building cedar-agent failed: {status}");
    }
    bin
}

struct Reference {
    child: Child,
    url: String,
}

impl Reference {
    fn start(bin: &Path, set: &PolicySet) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .args([
                "--addr",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--log-level",
                "error",
            ])
            // Its web framework takes JSON bodies of 1 MiB by default: too small for the
            // large set.
            .env("ROCKET_LIMITS", "{json=\"64 MiB\"}")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::new();
        let policies: Vec<_> = set
            .policies()
            .into_iter()
            .map(|(id, content)| json!({"id": id, "content": content}))
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match http.put(format!("{url}/v1/policies")).json(&policies).send() {
                Ok(res) => {
                    assert!(
                        res.status().is_success(),
                        "cedar-agent refused the policies: {}",
                        res.status()
                    );
                    break;
                }
                Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("cedar-agent did not start: {e}"),
            }
        }
        Self { child, url }
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Drive `url` with `wrk` (POSTs cycling over the actions) and read the server's CPU time
/// over the run from `/proc`.
fn wrk(
    url: &str,
    key: Option<&str>,
    actions: usize,
    body: &dyn Fn(usize) -> serde_json::Value,
    conns: usize,
    seconds: u64,
    pid: u32,
) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("post.lua");
    let bodies: Vec<String> = (0..actions.min(1_000))
        .map(|a| format!("[==[{}]==]", body(a)))
        .collect();
    let auth = key.map_or(String::new(), |k| {
        format!("wrk.headers[\"Authorization\"] = \"Bearer {k}\"\n")
    });
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n{auth}\
             local bodies = {{ {} }}\nlocal n = 0\n\
             request = function()\n  n = n + 1\n  return wrk.format(nil, nil, nil, bodies[(n % #bodies) + 1])\nend\n\
             response = function(status, headers, body)\n  if status ~= 200 then\n    print(\"unexpected status \" .. status .. \": \" .. body)\n    os.exit(1)\n  end\nend\n",
            bodies.join(", ")
        ),
    )
    .unwrap();
    let threads = conns.min(2);
    let before = cpu_ticks(pid);
    let out = Command::new("wrk")
        .args(["--latency", "-t", &threads.to_string(), "-c", &conns.to_string(), "-d"])
        .arg(format!("{seconds}s"))
        .arg("-s")
        .arg(&script)
        .arg(url)
        .output()
        .unwrap();
    let ticks = cpu_ticks(pid) - before;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("Non-2xx"), "some answers were not 200:\n{text}");
    let field = |label: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .unwrap_or_else(|| panic!("no `{label}` in wrk's output:\n{text}"))
            .trim()
            .to_owned()
    };
    let per_second: f64 = field("Requests/sec:").parse().unwrap();
    let requests = per_second * seconds as f64;
    Measured {
        per_second,
        p50_ms: millis(&field("50%")),
        p99_ms: millis(&field("99%")),
        cpu_us_per_decision: ticks as f64 * 1e6 / clock_ticks_per_second() / requests,
    }
}

/// A wrk duration (`812.00us`, `1.23ms`, `2.01s`) in milliseconds.
fn millis(text: &str) -> f64 {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap();
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().unwrap();
    match unit {
        "us" => number / 1e3,
        "ms" => number,
        "s" => number * 1e3,
        "m" => number * 60e3,
        other => panic!("unknown wrk unit `{other}`"),
    }
}

/// A process's resident set size (`VmRSS`), in MB.
fn resident_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

/// User plus system CPU time of a process so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last `)`.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 of `rest`.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_second() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}
