//! Executions end to end with the real binary: single use, leases, revocation that stops
//! running work, lineage, and `clearance exec` failing closed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "end-to-end tests: a failure must abort loudly"
)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ADMIN_KEY, BIN, Broken, Server, broken_plane};
use serde_json::{Value, json};

const SCHEMA: &str = r#"
entity Agent;
entity Command;
entity Tool;
action exec appliesTo {
    principal: Agent, resource: Command,
    context: { arguments: { argv: Set<String>, cwd: String }, lineage: { depth: Long, root: String } }
};
action refund appliesTo {
    principal: Agent, resource: Tool,
    context: { arguments: { amount: Long, currency: String } }
};
action orchestrate appliesTo { principal: Agent, resource: Tool };
"#;

const POLICIES: &str = r#"
@id("shell-and-sleep")
permit (principal, action == Action::"exec", resource)
when { resource == Command::"sh" || resource == Command::"sleep" };

@id("no-sudo")
forbid (principal, action == Action::"exec", resource)
when { context.arguments.argv.contains("sudo") };

@id("small-refunds")
permit (principal, action == Action::"refund", resource)
when { context.arguments.amount <= 500 };

@id("orchestrate")
permit (principal, action == Action::"orchestrate", resource);
"#;

struct Setup {
    server: Server,
    agent: String,
    enforcer: String,
    dir: tempfile::TempDir,
}

fn setup(extra: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(&dir.path().join("data"), extra);
    let agent = server.principal("worker", &["agent"]);
    let enforcer = server.principal("runner", &["enforcer"]);
    server.activate(SCHEMA, POLICIES);
    Setup {
        server,
        agent,
        enforcer,
        dir,
    }
}

impl Setup {
    /// `clearance exec` against `url` with this setup's keys and its own replay cache.
    fn exec_at(&self, url: &str, flags: &[&str], command: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("exec")
            .args(flags)
            .arg("--")
            .args(command)
            .current_dir(self.dir.path())
            .env("CLEARANCE_SERVER", url)
            .env("CLEARANCE_API_KEY", &self.agent)
            .env("CLEARANCE_ENFORCER_KEY", &self.enforcer)
            .env("CLEARANCE_REPLAY_CACHE", self.dir.path().join("replay"))
            .stdin(Stdio::null());
        cmd
    }

    fn exec(&self, flags: &[&str], command: &[&str]) -> Output {
        self.exec_at(&self.server.url, flags, command).output().unwrap()
    }

    fn authorize(&self, body: Value) -> Value {
        let (s, b) = self.server.post("/v1/authorize", Some(&self.agent), &body);
        assert_eq!(s, 200, "{b}");
        b
    }

    fn start(&self, id: &str, token: &str) -> (u16, Value) {
        self.server.post(
            &format!("/v1/executions/{id}/start"),
            Some(&self.enforcer),
            &json!({"clearance": token}),
        )
    }
}

impl Setup {
    /// `POST /v1/executions/authorize-and-start` as `caller`, for the agent `agent`.
    fn authorize_and_start(&self, caller: &str, agent: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = reqwest::blocking::Client::new()
            .post(format!("{}/v1/executions/authorize-and-start", self.server.url))
            .bearer_auth(caller)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(agent) = agent {
            req = req.header("clearance-agent-key", agent);
        }
        let res = req.send().unwrap();
        let status = res.status().as_u16();
        (status, res.json().unwrap())
    }
}

/// A gateway asks for the clearance and starts it in one request: the decision and the
/// start are consecutive entries of one commit, the execution is started with its lease,
/// and its clearance cannot be started again. A deny starts nothing; the caller must be
/// an enforcer and the agent an agent, each with a valid key.
#[test]
fn a_gateway_authorizes_and_starts_in_one_request() {
    let s = setup(&[]);
    let ask = json!({"request": refund_request(), "lease_seconds": 20});
    let (status, body) = s.authorize_and_start(&s.enforcer, Some(&s.agent), &ask);
    assert_eq!(status, 200, "{body}");
    let decision = &body["authorization"];
    assert_eq!(decision["decision"], "allow", "{body}");
    let (id, token) = (
        decision["execution_id"].as_str().unwrap(),
        decision["clearance"].as_str().unwrap(),
    );
    let lease = &body["lease"];
    assert_eq!(lease["execution_id"], id);
    assert_eq!(
        lease["log_index"].as_u64().unwrap(),
        decision["log_index"].as_u64().unwrap() + 1,
        "the start's entry follows the decision's"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let until = lease["lease_expires"].as_u64().unwrap();
    assert!(until > now && until <= now + 21, "{lease}");
    let (status, entries) = s.server.call(
        "GET",
        &format!(
            "/v1/log/entries?start={}&end={}",
            decision["log_index"],
            decision["log_index"].as_u64().unwrap() + 2
        ),
        Some(ADMIN_KEY),
        None,
    );
    assert_eq!(status, 200, "{entries}");
    use base64::Engine as _;
    let kinds: Vec<String> = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(e["entry"].as_str().unwrap())
                .unwrap();
            serde_json::from_slice::<Value>(&raw).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, ["decision", "execution_started"]);
    // Started already: a second start of the same clearance is a replay.
    let (status, again) = s.start(id, token);
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("replayed")),
        "{again}"
    );
    // It renews like any started execution.
    let (status, renewed) = s
        .server
        .post(&format!("/v1/executions/{id}/renew"), Some(&s.enforcer), &json!({}));
    assert_eq!((status, renewed["renewed"].as_bool()), (200, Some(true)), "{renewed}");

    // A deny is answered as by /v1/authorize, with nothing started.
    let mut too_much = refund_request();
    too_much["arguments"]["amount"] = json!(9000);
    let (status, body) = s.authorize_and_start(&s.enforcer, Some(&s.agent), &json!({"request": too_much}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["authorization"]["decision"], "deny");
    assert_eq!(body["authorization"]["reasons"], json!(["policy_denied"]));
    assert_eq!(body.get("lease"), None, "{body}");

    // The caller must be an enforcer, the agent an agent, and both keys valid.
    for (caller, agent, status, code) in [
        (s.agent.as_str(), Some(s.agent.as_str()), 403, "unauthorized_role"),
        (s.enforcer.as_str(), None, 401, "invalid_api_key"),
        (
            s.enforcer.as_str(),
            Some("clr_not-a-key-at-all-0000000000"),
            401,
            "invalid_api_key",
        ),
        (s.enforcer.as_str(), Some(s.enforcer.as_str()), 403, "unauthorized_role"),
    ] {
        let (got, body) = s.authorize_and_start(caller, agent, &ask);
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{body}");
    }
}

fn refund_request() -> Value {
    json!({"action": "refund", "resource": {"type": "Tool", "id": "stripe"},
           "arguments": {"amount": 120, "currency": "EUR"}})
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_clearance_starts_once_even_under_20_concurrent_starts() {
    let s = setup(&[]);
    let allowed = s.authorize(refund_request());
    let (id, token) = (
        allowed["execution_id"].as_str().unwrap(),
        allowed["clearance"].as_str().unwrap(),
    );
    // Only an enforcer starts executions.
    let (status, body) = s.server.post(
        &format!("/v1/executions/{id}/start"),
        Some(&s.agent),
        &json!({"clearance": token}),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("unauthorized_role"))
    );
    let (status, lease) = s.start(id, token);
    assert_eq!(status, 200, "{lease}");
    // The lease never outlives the clearance.
    let exp = clearance_claims(token)["exp"].as_i64().unwrap();
    assert!(lease["lease_expires"].as_i64().unwrap() <= exp, "{lease}");
    let (status, again) = s.start(id, token);
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("replayed")),
        "{again}"
    );
    // A clearance presented for another execution id is not accepted either.
    let other = s.authorize(refund_request());
    let (status, body) = s.start(other["execution_id"].as_str().unwrap(), token);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("clearance_invalid"))
    );

    let fresh = s.authorize(refund_request());
    let (id, token) = (
        fresh["execution_id"].as_str().unwrap().to_owned(),
        fresh["clearance"].as_str().unwrap().to_owned(),
    );
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(20));
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let (url, key, id, token, barrier) = (
                s.server.url.clone(),
                s.enforcer.clone(),
                id.clone(),
                token.clone(),
                std::sync::Arc::clone(&barrier),
            );
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                barrier.wait();
                let res = http
                    .post(format!("{url}/v1/executions/{id}/start"))
                    .bearer_auth(key)
                    .json(&json!({"clearance": token}))
                    .send()
                    .unwrap();
                let status = res.status().as_u16();
                let body: Value = res.json().unwrap();
                (status, body["error"]["code"].as_str().map(str::to_owned))
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let won = results.iter().filter(|(s, _)| *s == 200).count();
    let replayed = results
        .iter()
        .filter(|(s, c)| *s == 409 && c.as_deref() == Some("replayed"))
        .count();
    assert_eq!((won, replayed), (1, 19), "{results:?}");
    // Exactly one start is in the log for it.
    let starts = s
        .server
        .log_events()
        .into_iter()
        .filter(|e| e["type"] == "execution_started" && e["execution_id"] == id.as_str())
        .count();
    assert_eq!(starts, 1);
}

#[test]
fn exec_passes_output_and_exit_code_through_byte_for_byte() {
    let s = setup(&[]);
    let out = s.exec(
        &[],
        &["sh", "-c", r#"printf 'out\000bytes\n\377'; printf 'err\n' >&2; exit 7"#],
    );
    assert_eq!(code(&out), 7, "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"out\0bytes\n\xff");
    assert_eq!(out.stderr, b"err\n");
    // The log tells the whole story: decision, start, completion with the exit code and
    // the digest of exactly what the command wrote.
    let events = s.server.log_events();
    let completed = events
        .iter()
        .find(|e| e["type"] == "execution_completed")
        .expect("a completion event");
    let id = completed["execution_id"].as_str().unwrap();
    assert_eq!(completed["status"], "failed");
    assert_eq!(completed["exit_code"], 7);
    let digest = {
        use sha2::Digest as _;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(b"out\0bytes\n\xff")))
    };
    assert_eq!(completed["output_digest"], digest.as_str());
    let story: Vec<&str> = events
        .iter()
        .filter(|e| e["execution_id"] == id)
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(story, ["decision", "execution_started", "execution_completed"]);
    // Its evidence bundle carries all three and verifies offline.
    let file = s.dir.path().join("evidence.json");
    let out = s.server.cli(
        Some(ADMIN_KEY),
        &["evidence", "export", id, "-o", file.to_str().unwrap()],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let bundle: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(bundle["entries"].as_array().unwrap().len(), 3);
    let out = Command::new(BIN)
        .args(["evidence", "verify", "--json"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}{}", text(&out.stdout), text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["lifecycle"], json!(["started", "completed: failed (exit 7)"]));

    // A zero exit is `succeeded`, and the cwd and argv were what policy saw.
    let ok = s.exec(&[], &["sh", "-c", "echo hi"]);
    assert_eq!((code(&ok), ok.stdout.as_slice()), (0, &b"hi\n"[..]));
}

#[test]
fn a_denied_exec_is_never_spawned() {
    let s = setup(&[]);
    let marker = s.dir.path().join("marker");
    let m = marker.to_str().unwrap();
    // No policy permits `touch`.
    let out = s.exec(&[], &["touch", m]);
    assert_eq!(code(&out), 120, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("policy_denied"), "{}", text(&out.stderr));
    // A forbid on the command line.
    let out = s.exec(&[], &["sh", "-c", &format!("touch {m}"), "sudo"]);
    assert_eq!(code(&out), 120);
    assert!(text(&out.stderr).contains("policy_forbidden"), "{}", text(&out.stderr));
    // A clearance for another command line is refused locally.
    let other = s.authorize(json!({"action": "exec", "resource": {"type": "Command", "id": "sh"},
        "arguments": {"argv": ["sh", "-c", "true"], "cwd": s.dir.path().to_str().unwrap()}}));
    let out = s.exec(
        &["--clearance", other["clearance"].as_str().unwrap()],
        &["sh", "-c", &format!("touch {m}")],
    );
    assert_eq!(code(&out), 121, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("arguments_mismatch"),
        "{}",
        text(&out.stderr)
    );
    // And a clearance used once is refused the second time, here and at the server.
    let argv = ["sh", "-c", "true"];
    let exact = s.authorize(json!({"action": "exec", "resource": {"type": "Command", "id": "sh"},
        "arguments": {"argv": argv, "cwd": s.dir.path().canonicalize().unwrap().to_str().unwrap()}}));
    let token = exact["clearance"].as_str().unwrap();
    assert_eq!(code(&s.exec(&["--clearance", token], &argv)), 0);
    let again = s.exec(&["--clearance", token], &argv);
    assert_eq!(code(&again), 121);
    assert!(text(&again.stderr).contains("replayed"), "{}", text(&again.stderr));
    assert!(!marker.exists(), "a refused command ran");
}

#[test]
fn children_cannot_exceed_their_parent() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "max_lineage_depth = 3\n").unwrap();
    let s = setup(&["--config", config.to_str().unwrap()]);
    let parent = s.authorize(json!({
        "action": "orchestrate", "resource": {"type": "Tool", "id": "fleet"}, "ttl_seconds": 60,
        "delegate": {"actions": ["refund"], "resources": [{"type": "Tool", "id": "stripe"}], "ttl_seconds": 30, "depth": 1}
    }));
    assert_eq!(parent["decision"], "allow", "{parent}");
    let token = parent["clearance"].as_str().unwrap();
    let child = |extra: Value| {
        let mut body = refund_request();
        body["parent"] = json!(token);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        s.authorize(body)
    };
    let ok = child(json!({}));
    assert_eq!(ok["decision"], "allow", "{ok}");
    let claims = clearance_claims(ok["clearance"].as_str().unwrap());
    assert_eq!(
        (claims["dep"].as_u64(), claims["par"].as_str()),
        (Some(1), parent["execution_id"].as_str())
    );
    assert!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() <= 30);

    let reason = |v: &Value| v["reasons"][0].as_str().unwrap().to_owned();
    // More than the parent's `dlg`: another action, another resource.
    let other_action =
        child(json!({"action": "orchestrate", "resource": {"type": "Tool", "id": "stripe"}, "arguments": {}}));
    assert_eq!(reason(&other_action), "scope_exceeds_parent");
    let other_resource = child(json!({"resource": {"type": "Tool", "id": "paypal"}}));
    assert_eq!(reason(&other_resource), "scope_exceeds_parent");
    // A longer lifetime than the parent allows.
    let longer = child(json!({"ttl_seconds": 45}));
    assert_eq!(reason(&longer), "scope_exceeds_parent");
    // Deeper than the parent's delegation, or than the configured bound.
    let deeper = child(json!({"delegate": {"actions": ["refund"], "depth": 1}}));
    assert_eq!(reason(&deeper), "lineage_too_deep");
    let too_deep_root = s.authorize(json!({
        "action": "orchestrate", "resource": {"type": "Tool", "id": "fleet"},
        "delegate": {"actions": ["refund"], "depth": 4}
    }));
    assert_eq!(reason(&too_deep_root), "lineage_too_deep");
    // A parent that does not verify, and a revoked one.
    let forged = {
        let mut t = token.to_owned();
        t.pop();
        t.push(if token.ends_with('A') { 'B' } else { 'A' });
        t
    };
    let mut body = refund_request();
    body["parent"] = json!(forged);
    assert_eq!(reason(&s.authorize(body)), "parent_invalid");
    let (status, _) = s.server.post(
        &format!("/v1/executions/{}/revoke", parent["execution_id"].as_str().unwrap()),
        Some(ADMIN_KEY),
        &json!({"reason": "test"}),
    );
    assert_eq!(status, 200);
    assert_eq!(reason(&child(json!({}))), "parent_revoked");
    // Every deny is in the log with its parent.
    let denies = s
        .server
        .log_events()
        .into_iter()
        .filter(|e| e["type"] == "decision" && e["decision"] == "deny" && e["parent"] == parent["execution_id"])
        .count();
    assert!(denies >= 5, "{denies}");
}

fn clearance_claims(token: &str) -> Value {
    common::jws_part(token, 1)
}

/// Spawn `clearance exec` running a shell that records its pid, then sleeps.
fn spawn_sleeper(s: &Setup, url: &str, flags: &[&str], pidfile: &Path) -> std::process::Child {
    let script = format!("echo $$ > {}; exec sleep 60", pidfile.display());
    let child = s
        .exec_at(url, flags, &["sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pidfile.exists() || std::fs::read_to_string(pidfile).unwrap().trim().is_empty() {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn alive(pidfile: &Path) -> bool {
    let pid = std::fs::read_to_string(pidfile).unwrap();
    Path::new(&format!("/proc/{}", pid.trim())).exists()
}

/// Wait for `clearance exec` to exit; returns its output and how long it took.
fn wait_exit(child: std::process::Child, within: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(within)
        .unwrap_or_else(|_| panic!("exec still running after {within:?}"))
        .unwrap();
    (out, started.elapsed())
}

const LEASE: u64 = 3;

#[test]
fn revoking_a_root_stops_its_running_grandchild_within_the_lease() {
    let s = setup(&["--lease-seconds", &LEASE.to_string()]);
    let root = s.authorize(json!({
        "action": "orchestrate", "resource": {"type": "Tool", "id": "fleet"},
        "delegate": {"actions": ["exec"], "resources": [{"type": "Command", "id": "sh"}], "depth": 2}
    }));
    let child = s.authorize(json!({
        "action": "exec", "resource": {"type": "Command", "id": "sh"},
        "arguments": {"argv": ["sh"], "cwd": "/"}, "parent": root["clearance"],
        "delegate": {"actions": ["exec"], "depth": 1}
    }));
    assert_eq!(child["decision"], "allow", "{child}");
    let pidfile = s.dir.path().join("grandchild.pid");
    let running = spawn_sleeper(
        &s,
        &s.server.url,
        &["--parent", child["clearance"].as_str().unwrap()],
        &pidfile,
    );
    // Let it renew a few times: it keeps running while nothing is revoked.
    std::thread::sleep(Duration::from_secs(LEASE + 1));
    assert!(alive(&pidfile));
    let root_id = root["execution_id"].as_str().unwrap();
    let revoked = s.server.cli(
        Some(ADMIN_KEY),
        &["revoke", "execution", root_id, "--reason", "incident 42"],
    );
    assert_eq!(code(&revoked), 0, "{}", text(&revoked.stderr));
    // Root, child and grandchild each get a revocation record.
    assert_eq!(
        text(&revoked.stdout).matches("revoked execution").count(),
        3,
        "{}",
        text(&revoked.stdout)
    );
    let (out, took) = wait_exit(running, Duration::from_secs(30));
    assert_eq!(code(&out), 123, "{}", text(&out.stderr));
    assert!(
        took <= Duration::from_secs(LEASE + 1),
        "stopped after {took:?}, lease {LEASE} s"
    );
    assert!(text(&out.stderr).contains("execution_revoked"), "{}", text(&out.stderr));
    assert!(!alive(&pidfile), "the command outlived its revocation");

    // The lineage shows the whole tree revoked.
    let (status, lineage) = s.server.call(
        "GET",
        &format!("/v1/executions/{root_id}/lineage"),
        Some(&s.enforcer),
        None,
    );
    assert_eq!(status, 200, "{lineage}");
    assert_eq!(lineage["execution"]["state"], "revoked");
    let states: Vec<(u64, &str)> = lineage["descendants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["depth"].as_u64().unwrap(), d["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [(1, "revoked"), (2, "revoked")]);
    // The revocations reached the list enforcement points read, in sequence.
    let (_, list) = s.server.call("GET", "/v1/revocations?since=0", Some(&s.enforcer), None);
    let seqs: Vec<u64> = list["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(list["latest"], 3);
}

/// Revoking a parent stops its running child at once: `exec` follows the revocation
/// stream, so with a 30 s lease (renewal every 10 s) it stops long before any renewal
/// could have told it (#13 item 1). Renewal stays the fallback when the stream is down.
#[test]
fn revoking_a_parent_stops_a_running_child_exec() {
    let s = setup(&["--lease-seconds", "30"]);
    let parent = s.authorize(json!({
        "action": "orchestrate", "resource": {"type": "Tool", "id": "fleet"},
        "delegate": {"actions": ["exec"], "resources": [{"type": "Command", "id": "sh"}]}
    }));
    let pidfile = s.dir.path().join("child.pid");
    let running = spawn_sleeper(
        &s,
        &s.server.url,
        &["--parent", parent["clearance"].as_str().unwrap()],
        &pidfile,
    );
    // Let the stream connect and catch up.
    std::thread::sleep(Duration::from_millis(500));
    let (status, _) = s.server.post(
        &format!("/v1/executions/{}/revoke", parent["execution_id"].as_str().unwrap()),
        Some(ADMIN_KEY),
        &json!({}),
    );
    assert_eq!(status, 200);
    let (out, took) = wait_exit(running, Duration::from_secs(30));
    assert_eq!(code(&out), 123, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("execution_revoked"), "{}", text(&out.stderr));
    assert!(
        took < Duration::from_secs(9),
        "stopped after {took:?}: that is the renewal, not the stream"
    );
    assert!(!alive(&pidfile));
}

#[test]
fn a_running_exec_stops_when_the_control_plane_disappears() {
    let s = setup(&["--lease-seconds", &LEASE.to_string()]);
    let pidfile = s.dir.path().join("orphan.pid");
    let running = spawn_sleeper(&s, &s.server.url, &[], &pidfile);
    let _ = Command::new("kill")
        .args(["-KILL", &s.server.pid().to_string()])
        .status();
    let (out, took) = wait_exit(running, Duration::from_secs(30));
    assert_eq!(code(&out), 123, "{}", text(&out.stderr));
    assert!(took <= Duration::from_secs(LEASE + 1), "stopped after {took:?}");
    assert!(text(&out.stderr).contains("lease ran out"), "{}", text(&out.stderr));
    assert!(!alive(&pidfile));
}

#[test]
fn exec_fails_closed_when_the_control_plane_misbehaves() {
    let s = setup(&[]);
    // A real clearance for the command, and the real keys in a file, so that the cases
    // below also cover an executor that has everything but a working `start`.
    let jwks = s.dir.path().join("jwks.json");
    let (_, keys) = s.server.call("GET", "/.well-known/jwks.json", None, None);
    std::fs::write(&jwks, keys.to_string()).unwrap();
    let marker = s.dir.path().join("marker");
    let argv = ["sh", "-c", "touch marker"];
    let mut ran = 0;
    for kind in [Broken::Down, Broken::Slow, Broken::ServerError, Broken::Malformed] {
        let url = broken_plane(kind);
        // Asking for a clearance.
        let out = s.exec_at(&url, &["--timeout", "1"], &argv).output().unwrap();
        assert_eq!(code(&out), 122, "{kind:?}: {}", text(&out.stderr));
        ran += usize::from(marker.exists());
        // Holding a valid clearance: `start` must still succeed first.
        let token = s.authorize(json!({"action": "exec", "resource": {"type": "Command", "id": "sh"},
            "arguments": {"argv": argv, "cwd": s.dir.path().canonicalize().unwrap().to_str().unwrap()}}))["clearance"]
            .as_str()
            .unwrap()
            .to_owned();
        let flags = [
            "--timeout",
            "1",
            "--clearance",
            &token,
            "--jwks",
            jwks.to_str().unwrap(),
            "--issuer",
            &s.server.url,
        ];
        let out = s.exec_at(&url, &flags, &argv).output().unwrap();
        assert_eq!(code(&out), 122, "{kind:?}: {}", text(&out.stderr));
        ran += usize::from(marker.exists());
    }
    assert_eq!(ran, 0, "commands ran without a working control plane");
}

#[test]
fn revoking_a_principal_stops_its_keys_and_executions() {
    let s = setup(&[]);
    let allowed = s.authorize(refund_request());
    let out = s.server.cli(Some(ADMIN_KEY), &["revoke", "principal", "worker"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let (status, body) = s.start(
        allowed["execution_id"].as_str().unwrap(),
        allowed["clearance"].as_str().unwrap(),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("execution_revoked"))
    );
    let (status, body) = s.server.post("/v1/authorize", Some(&s.agent), &refund_request());
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_api_key")));
    let (_, list) = s.server.call("GET", "/v1/revocations?since=0", Some(&s.enforcer), None);
    let kinds: Vec<&str> = list["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["principal", "execution"]);
}

#[test]
fn renewal_re_evaluates_the_active_policy() {
    let s = setup(&[]);
    let allowed = s.authorize(refund_request());
    let (id, token) = (
        allowed["execution_id"].as_str().unwrap(),
        allowed["clearance"].as_str().unwrap(),
    );
    assert_eq!(s.start(id, token).0, 200);
    let renew = || {
        s.server
            .post(&format!("/v1/executions/{id}/renew"), Some(&s.enforcer), &json!({}))
    };
    let (status, first) = renew();
    assert_eq!((status, first["renewed"].as_bool()), (200, Some(true)), "{first}");
    // Refunds are no longer permitted: the next renewal says stop, with the reason, and
    // the execution is revoked for every enforcement point.
    s.server
        .activate(SCHEMA, &POLICIES.replace("amount <= 500", "amount <= 50"));
    let (status, stop) = renew();
    assert_eq!(status, 200);
    assert_eq!(
        (stop["renewed"].as_bool(), stop["reason"].as_str()),
        (Some(false), Some("policy_denied")),
        "{stop}"
    );
    let (_, list) = s.server.call("GET", "/v1/revocations?since=0", Some(&s.enforcer), None);
    assert_eq!(list["revocations"][0]["id"], id);
    let (_, again) = renew();
    assert_eq!(again["reason"], "execution_revoked");
    // It may still report how it stopped.
    let (status, done) = s.server.post(
        &format!("/v1/executions/{id}/complete"),
        Some(&s.enforcer),
        &json!({"status": "stopped", "exit_code": 143}),
    );
    assert_eq!((status, done["state"].as_str()), (200, Some("revoked")), "{done}");
}

#[test]
fn revoking_the_signing_key_revokes_its_clearances_and_stops_issuance() {
    let s = setup(&[]);
    let allowed = s.authorize(refund_request());
    let token = allowed["clearance"].as_str().unwrap();
    let kid = common::jws_part(token, 0)["kid"].as_str().unwrap().to_owned();
    let out = s.server.cli(
        Some(ADMIN_KEY),
        &["revoke", "signing-key", &kid, "--reason", "key leaked"],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let (status, body) = s.start(allowed["execution_id"].as_str().unwrap(), token);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("execution_revoked"))
    );
    let (status, body) = s.server.post("/v1/authorize", Some(&s.agent), &refund_request());
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("signing_key_revoked")),
        "{body}"
    );
    let (_, list) = s.server.call("GET", "/v1/revocations?since=0", Some(&s.enforcer), None);
    assert_eq!(list["revocations"][0]["kind"], "signing_key");
    assert_eq!(list["revocations"][0]["id"], kid.as_str());
    let (status, ready) = s.server.call("GET", "/readyz", None, None);
    assert_eq!(
        (status, &ready["checks"]["signing_key"]["ok"]),
        (503, &json!(false)),
        "{ready}"
    );
    // Still refused after a restart.
    let Setup { server, agent, dir, .. } = s;
    server.stop();
    let again = Server::start_in(&dir.path().join("data"), &[]);
    let (status, body) = again.post("/v1/authorize", Some(&agent), &refund_request());
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("signing_key_revoked")),
        "{body}"
    );
}
