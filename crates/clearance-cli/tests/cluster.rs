//! Three real `clearance serve` nodes on one PostgreSQL database: agents spread over them,
//! the checkpointer killed mid-load and then a second node, and afterwards one log with
//! every answered clearance provable, single use, revocation and policy across nodes.
//!
//! Needs PostgreSQL (`CLEARANCE_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`); without one it says it skipped, except
//! under CI (`CI` set), where it fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "end-to-end tests: a failure must abort loudly"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clearance_log::{Checkpoint, NoteVerifier};
use common::{ADMIN_KEY, BIN, Load, Server, assert_all_proven};
use serde_json::{Value, json};

const ORIGIN: &str = "http://cluster.test";
const LEASE: &str = "3";

const SCHEMA: &str = r#"
entity Agent;
entity Command;
entity Tool;
action refund appliesTo { principal: Agent, resource: Tool, context: { arguments: { amount: Long } } };
action exec appliesTo {
    principal: Agent, resource: Command,
    context: { arguments: { argv: Set<String>, cwd: String } }
};
action orchestrate appliesTo { principal: Agent, resource: Tool };
"#;

const POLICIES: &str = r#"
@id("refunds") permit (principal, action == Action::"refund", resource) when { context.arguments.amount <= 500 };
@id("shell") permit (principal, action == Action::"exec", resource) when { resource == Command::"sh" };
@id("orchestrate") permit (principal, action == Action::"orchestrate", resource);
"#;

struct Cluster {
    url: String,
    schema: String,
    dirs: Vec<PathBuf>,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// Node `i` (0, 1 or 2), started on its own data directory with the shared keys.
    fn node(&self, i: usize) -> Server {
        let dir = self.dirs[i].as_path();
        Server::start_in(
            dir,
            &[
                "--database",
                &self.url,
                "--database-schema",
                &self.schema,
                "--origin",
                ORIGIN,
                "--lease-seconds",
                LEASE,
            ],
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        common::drop_schema(&self.url, &self.schema);
    }
}

/// The database, or `None` (said on stderr) outside CI when there is none.
fn cluster() -> Option<Cluster> {
    let url = common::pg_url();
    if !common::pg_reachable(&url) {
        assert!(
            std::env::var_os("CI").is_none(),
            "PostgreSQL is required under CI: {url}"
        );
        eprintln!("skipped: the cluster test needs PostgreSQL at {url}");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dirs = (0..3).map(|i| tmp.path().join(format!("node{i}"))).collect();
    let schema = format!("cluster_{}", std::process::id());
    Some(Cluster {
        url,
        schema,
        dirs,
        _tmp: tmp,
    })
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[test]
fn three_nodes_on_one_database_keep_one_truth() {
    let Some(c) = cluster() else { return };
    let first = c.node(0);
    common::share_keys(&c.dirs[0], &c.dirs[1..]);
    let mut nodes = vec![Some(first), Some(c.node(1)), Some(c.node(2))];
    let node = |nodes: &[Option<Server>], i: usize| -> String { nodes[i].as_ref().unwrap().url.clone() };
    let n0 = nodes[0].as_ref().unwrap();
    let bot = n0.principal("bot", &["agent"]);
    let runner = n0.principal("runner", &["enforcer"]);

    // Every node publishes the same keys.
    let jwks: Vec<Value> = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().call("GET", "/.well-known/jwks.json", None, None).1)
        .collect();
    assert!(jwks.windows(2).all(|w| w[0] == w[1]), "{jwks:?}");

    // A node with keys of its own, or another origin, refuses to join, saying which.
    let stranger = c._tmp.path().join("stranger");
    let db = ["--database", &c.url, "--database-schema", &c.schema];
    let refused = Server::try_start_in(&stranger, &[&db[..], &["--origin", ORIGIN]].concat()).unwrap_err();
    assert!(refused.contains("signing key (signing-key.pem) differs"), "{refused}");
    common::share_keys(&c.dirs[0], std::slice::from_ref(&stranger));
    let refused =
        Server::try_start_in(&stranger, &[&db[..], &["--origin", "http://elsewhere.test"]].concat()).unwrap_err();
    assert!(refused.contains("origin (--origin) differs"), "{refused}");

    // A policy activated on node 1 governs nodes 0 and 2 within a second.
    let version = nodes[1].as_ref().unwrap().activate(SCHEMA, POLICIES);
    for i in [0, 2] {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let (_, r) = nodes[i].as_ref().unwrap().post(
                "/v1/authorize",
                Some(&bot),
                &json!({"action": "refund", "resource": {"type": "Tool", "id": "t"}, "arguments": {"amount": 7}}),
            );
            if r["policy_version"] == version.as_str() {
                assert_eq!(r["decision"], "allow", "{r}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} still decides with {}",
                r["policy_version"]
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // Load over all three nodes; a client whose node fails carries on with the next.
    let urls: Vec<String> = (0..3).map(|i| node(&nodes, i)).collect();
    let load = Load::start(&urls, &bot, 6, |n| json!({"amount": n % 400}));
    let (_, vkey) = nodes[0]
        .as_ref()
        .unwrap()
        .call("GET", "/v1/log/verifier-key", None, None);
    let verifier = NoteVerifier::parse(vkey.as_str().unwrap().trim()).unwrap();
    let size_of = |url: &str| -> u64 {
        let note = http()
            .get(format!("{url}/v1/log/checkpoint"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        Checkpoint::open(&note, &verifier).unwrap().size
    };

    // Kill the checkpointer, then a second node; the survivor signs on within 5 s.
    std::thread::sleep(Duration::from_millis(800));
    for round in 0..2 {
        let leader = (0..3)
            .find(|i| {
                nodes[*i]
                    .as_ref()
                    .is_some_and(|n| n.logs().contains("holds the checkpointer role"))
            })
            .unwrap_or_else(|| (0..3).find(|i| nodes[*i].is_some()).unwrap());
        let killed = nodes[leader].take().unwrap();
        let _ = Command::new("kill").args(["-KILL", &killed.pid().to_string()]).status();
        drop(killed);
        let survivor = (0..3).find(|i| nodes[*i].is_some()).unwrap();
        let url = node(&nodes, survivor);
        let before = size_of(&url);
        let killed_at = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            if size_of(&url) > before {
                break;
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(5),
                "round {round}: no checkpoint after the kill"
            );
        }
        eprintln!(
            "round {round}: killed node {leader}; node {survivor} signed after {:?}",
            killed_at.elapsed()
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let (answered, notes) = load.stop();

    // Bring the killed nodes back: they rejoin the same log.
    for (i, slot) in nodes.iter_mut().enumerate() {
        if slot.is_none() {
            *slot = Some(c.node(i));
        }
    }
    let n0 = nodes[0].as_ref().unwrap();
    let (_, final_note) = n0.call("POST", "/v1/log/checkpoint", Some(ADMIN_KEY), None);
    let last = Checkpoint::open(final_note.as_str().unwrap(), &verifier).unwrap();
    // Every answered clearance provable, every checkpoint any client saw (from any node)
    // consistent with the final one; read through another node than the one that signed.
    assert_all_proven(nodes[1].as_ref().unwrap(), &answered, &notes, &verifier, &last);
    let verify = Command::new(BIN)
        .args([
            "log",
            "verify",
            "--database",
            &c.url,
            "--schema",
            &c.schema,
            "--data-dir",
        ])
        .arg(&c.dirs[0])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    eprintln!(
        "{} answered clearances and {} checkpoints checked against size {}",
        answered.len(),
        notes.len(),
        last.size
    );

    // Single use across nodes: started on node 1, replayed on nodes 2 and 0.
    let (_, allowed) = nodes[0].as_ref().unwrap().post(
        "/v1/authorize",
        Some(&bot),
        &json!({"action": "orchestrate", "resource": {"type": "Tool", "id": "fleet"}}),
    );
    let (id, token) = (
        allowed["execution_id"].as_str().unwrap(),
        allowed["clearance"].as_str().unwrap(),
    );
    let start = |i: usize| {
        nodes[i].as_ref().unwrap().post(
            &format!("/v1/executions/{id}/start"),
            Some(&runner),
            &json!({"clearance": token}),
        )
    };
    assert_eq!(start(1).0, 200);
    for i in [2, 0] {
        let (status, body) = start(i);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("replayed")),
            "node {i}"
        );
    }

    // A revocation made on node 0 stops an exec whose enforcement point follows node 2.
    let (_, parent) = nodes[0].as_ref().unwrap().post(
        "/v1/authorize",
        Some(&bot),
        &json!({"action": "orchestrate", "resource": {"type": "Tool", "id": "fleet"},
                "delegate": {"actions": ["exec"], "resources": [{"type": "Command", "id": "sh"}]}}),
    );
    let work = tempfile::tempdir().unwrap();
    let (running, pidfile) = common::governed_sleeper(
        &node(&nodes, 2),
        (&bot, &runner),
        parent["clearance"].as_str().unwrap(),
        work.path(),
        "child",
        Some(ORIGIN),
    );
    let (status, _) = nodes[0].as_ref().unwrap().post(
        &format!("/v1/executions/{}/revoke", parent["execution_id"].as_str().unwrap()),
        Some(ADMIN_KEY),
        &json!({}),
    );
    assert_eq!(status, 200);
    let revoked_at = Instant::now();
    let out = running.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(123), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        revoked_at.elapsed() < Duration::from_secs(5),
        "stopped after {:?}",
        revoked_at.elapsed()
    );
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    assert!(
        !Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "the command still runs"
    );

    // A key another node knows (it authenticated it a moment ago, and keeps it in
    // memory) stops working there once revoked here, as soon as the change is heard.
    let n2 = nodes[2].as_ref().unwrap();
    let n0 = nodes[0].as_ref().unwrap();
    let orchestrate = json!({"action": "orchestrate", "resource": {"type": "Tool", "id": "fleet"}});
    let ask = || n2.post("/v1/authorize", Some(&bot), &orchestrate).0;
    assert_eq!(ask(), 200);
    let (_, keys) = n0.call("GET", "/v1/principals/bot/keys", Some(ADMIN_KEY), None);
    let key_id = keys["keys"][0]["key_id"].as_str().unwrap().to_owned();
    let (status, _) = n0.call("DELETE", &format!("/v1/keys/{key_id}"), Some(ADMIN_KEY), None);
    assert_eq!(status, 204);
    let revoked_at = Instant::now();
    while ask() != 401 {
        assert!(
            revoked_at.elapsed() < Duration::from_secs(2),
            "the revoked key still works on another node"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
