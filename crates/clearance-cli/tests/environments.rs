//! Environments end to end: register, attest from the environment, authorize, execute;
//! a changed measured file, bad attestations, quarantine, and policies over labels.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "end-to-end tests: a failure must abort loudly"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clearance_artifact::Signer as _;
use common::{ADMIN_KEY, BIN, Server};
use serde_json::{Value, json};

const SCHEMA: &str = r#"
entity Agent;
entity Command;
entity Tool;
type Env = { id: String, labels: Set<String>, measurements: Set<String> };
action exec appliesTo {
    principal: Agent, resource: Command,
    context: { arguments: { argv: Set<String>, cwd: String }, environment: Env }
};
action run appliesTo {
    principal: Agent, resource: Command,
    context: { arguments: { argv: Set<String>, cwd: String, program: String, program_sha256: String }, environment: Env }
};
action refund appliesTo {
    principal: Agent, resource: Tool,
    context: { arguments: { amount: Long }, environment: Env }
};
"#;

const POLICIES: &str = r#"
@id("shell")
permit (principal, action == Action::"exec", resource == Command::"sh");

@id("payments-only-from-pci")
permit (principal, action == Action::"refund", resource)
when { context.environment.labels.contains("pci=true") };
"#;

struct Env {
    server: Server,
    agent: String,
    enforcer: String,
    dir: tempfile::TempDir,
    key: PathBuf,
    app: PathBuf,
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sha256_file(path: &Path) -> String {
    use sha2::Digest as _;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
    )
}

/// A control plane that requires environments, with `runner-1` (pci=true) registered
/// and expecting the current digest of `app.bin`.
fn setup(extra: &[&str]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = vec!["--require-environment", "true"];
    flags.extend(extra);
    let server = Server::start_in(&dir.path().join("data"), &flags);
    let agent = server.principal("worker", &["agent"]);
    let enforcer = server.principal("runner", &["enforcer"]);
    server.activate(SCHEMA, POLICIES);
    let app = dir.path().join("app.bin");
    std::fs::write(&app, b"release 1.0").unwrap();
    let key = dir.path().join("attest.pem");
    let env = Env {
        server,
        agent,
        enforcer,
        dir,
        key,
        app,
    };
    env.register("runner-1", "pci=true");
    env
}

impl Env {
    fn cli(&self, key: &str, args: &[&str]) -> Output {
        self.server.cli(Some(key), args)
    }

    fn public_key(&self) -> String {
        let out = self.cli(ADMIN_KEY, &["env", "keygen", "--out", self.key.to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    }

    fn register(&self, id: &str, label: &str) {
        let expect = format!("app={}", sha256_file(&self.app));
        let out = self.cli(
            ADMIN_KEY,
            &[
                "env",
                "register",
                id,
                "--attestation-key",
                &self.public_key(),
                "--expect",
                &expect,
                "--label",
                label,
            ],
        );
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    }

    /// `clearance env attest` from the environment, measuring `app.bin`.
    fn attest(&self, id: &str) -> Output {
        let measure = format!("app={}", self.app.display());
        self.cli(
            &self.enforcer,
            &[
                "env",
                "attest",
                "--id",
                id,
                "--key",
                self.key.to_str().unwrap(),
                "--measure",
                &measure,
                "--json",
            ],
        )
    }

    fn authorize(&self, body: Value) -> (u16, Value) {
        self.server.post("/v1/authorize", Some(&self.agent), &body)
    }

    fn exec(&self, flags: &[&str], command: &[&str]) -> Command {
        let measure = format!("app={}", self.app.display());
        let mut cmd = Command::new(BIN);
        cmd.arg("exec")
            .args(["--environment", "runner-1", "--measure", &measure])
            .args(flags)
            .arg("--")
            .args(command)
            .current_dir(self.dir.path())
            .env("CLEARANCE_SERVER", &self.server.url)
            .env("CLEARANCE_API_KEY", &self.agent)
            .env("CLEARANCE_ENFORCER_KEY", &self.enforcer)
            .env("CLEARANCE_REPLAY_CACHE", self.dir.path().join("replay"))
            .stdin(Stdio::null());
        cmd
    }

    fn exec_request(&self, argv: &[&str]) -> Value {
        json!({"action": "exec", "resource": {"type": "Command", "id": "sh"}, "environment": "runner-1",
               "arguments": {"argv": argv, "cwd": self.dir.path().canonicalize().unwrap().to_str().unwrap()}})
    }
}

fn reason(v: &Value) -> String {
    v["reasons"][0]
        .as_str()
        .or(v["error"]["code"].as_str())
        .unwrap_or("<none>")
        .to_owned()
}

#[test]
fn attest_authorize_execute_then_a_changed_file_is_refused() {
    let e = setup(&[]);
    let argv = ["sh", "-c", "echo ran"];
    // Stage 5 before any attestation, without an environment, and for an unknown one.
    let (_, stale) = e.authorize(e.exec_request(&argv));
    assert_eq!(reason(&stale), "attestation_stale", "{stale}");
    let mut unbound = e.exec_request(&argv);
    unbound.as_object_mut().unwrap().remove("environment");
    assert_eq!(reason(&e.authorize(unbound).1), "invalid_request");
    let mut unknown = e.exec_request(&argv);
    unknown["environment"] = json!("runner-9");
    assert_eq!(reason(&e.authorize(unknown).1), "environment_unknown");

    let out = e.attest("runner-1");
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let attested: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(attested["matches"], true);

    // Attested: the command runs, and its clearance binds the measurement digest.
    let out = e.exec(&[], &argv).output().unwrap();
    assert_eq!(
        (code(&out), text(&out.stdout).as_str()),
        (0, "ran\n"),
        "{}",
        text(&out.stderr)
    );
    let (_, held) = e.authorize(e.exec_request(&["sh", "-c", "touch marker"]));
    assert_eq!(held["decision"], "allow", "{held}");
    let token = held["clearance"].as_str().unwrap().to_owned();
    let claims = common::jws_part(&token, 1);
    assert_eq!(claims["aud"], "runner-1");
    assert_eq!(claims["env"]["measurements"], attested["measurement_digest"]);

    // The measured file changes on the environment.
    std::fs::write(&e.app, b"release 1.0 plus a backdoor").unwrap();
    // An existing clearance is refused by the executor, which measured it itself.
    let out = e
        .exec(&["--clearance", &token], &["sh", "-c", "touch marker"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 121, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("measurement_mismatch"),
        "{}",
        text(&out.stderr)
    );
    assert!(!e.dir.path().join("marker").exists());
    // After the next attestation, new authorizations are denied. The attestation itself
    // is recorded, and reported as failed (exit code 4).
    let out = e.attest("runner-1");
    assert_eq!(code(&out), 4, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("does not match its expectations (app)"),
        "{}",
        text(&out.stderr)
    );
    let mismatch: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (mismatch["matches"].as_bool(), &mismatch["mismatched"]),
        (Some(false), &json!(["app"]))
    );
    let (_, denied) = e.authorize(e.exec_request(&argv));
    assert_eq!(reason(&denied), "measurement_mismatch", "{denied}");

    // Both attestation results are in the log, and the executed command's evidence
    // bundle carries the attestation it relied on and verifies offline.
    let events = e.server.log_events();
    let results: Vec<bool> = events
        .iter()
        .filter(|ev| ev["type"] == "environment_attested")
        .map(|ev| ev["matches"].as_bool().unwrap())
        .collect();
    assert_eq!(results, [true, false]);
    let ran = events.iter().find(|ev| ev["type"] == "execution_completed").unwrap()["execution_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let file = e.dir.path().join("evidence.json");
    let out = e.cli(ADMIN_KEY, &["evidence", "export", &ran, "-o", file.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let out = Command::new(BIN)
        .args(["evidence", "verify", "--json"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}{}", text(&out.stdout), text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let lifecycle: Vec<&str> = report["lifecycle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(lifecycle[0].starts_with("attested: runner-1 sha256:"), "{lifecycle:?}");
    assert_eq!(&lifecycle[1..], ["started", "completed: succeeded (exit 0)"]);
}

/// Build and sign evidence by hand, as a misbehaving environment would.
fn evidence(env: &str, challenge: &str, app: &Path, key: &clearance_artifact::SigningKey) -> Value {
    let now = clearance_model::Timestamp::now().seconds();
    let ev = clearance_model::environment::AttestationEvidence {
        environment: env.to_owned(),
        measurements: [("app".to_owned(), sha256_file(app).parse().unwrap())].into(),
        time: now,
        challenge: challenge.to_owned(),
    };
    let sig = URL_SAFE_NO_PAD.encode(key.sign(&ev.signed_bytes().unwrap()).to_bytes());
    json!({"evidence": ev, "signature": sig})
}

#[test]
fn bad_attestations_are_rejected_with_their_own_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "challenge_ttl_seconds = 1\n").unwrap();
    let e = setup(&["--config", config.to_str().unwrap()]);
    let key = clearance_artifact::load_key(&e.key).unwrap();
    let challenge = || {
        let (s, c) = e
            .server
            .post("/v1/environments/runner-1/challenge", Some(&e.enforcer), &json!({}));
        assert_eq!(s, 200, "{c}");
        c["challenge"].as_str().unwrap().to_owned()
    };
    let attest = |body: &Value| {
        e.server
            .post("/v1/environments/runner-1/attest", Some(&e.enforcer), body)
    };

    // A good one, then the same evidence again: the challenge is single use.
    let good = evidence("runner-1", &challenge(), &e.app, &key);
    assert_eq!(attest(&good).0, 200);
    let (s, b) = attest(&good);
    assert_eq!((s, reason(&b).as_str()), (409, "challenge_replayed"), "{b}");
    // An expired challenge.
    let late = challenge();
    std::thread::sleep(Duration::from_millis(2100));
    let (s, b) = attest(&evidence("runner-1", &late, &e.app, &key));
    assert_eq!((s, reason(&b).as_str()), (409, "challenge_expired"), "{b}");
    // A signature by a key that is not the registered one.
    let stranger = clearance_artifact::SigningKey::from_bytes(&[7u8; 32]);
    let (s, b) = attest(&evidence("runner-1", &challenge(), &e.app, &stranger));
    assert_eq!((s, reason(&b).as_str()), (409, "attestation_signature_invalid"), "{b}");
    // Evidence for another environment, even one signed by that environment's key.
    e.register("runner-2", "pci=false");
    let (s, b) = attest(&evidence("runner-2", &challenge(), &e.app, &key));
    assert_eq!((s, reason(&b).as_str()), (409, "attestation_wrong_environment"), "{b}");
    // A challenge issued for another environment.
    let (_, other) = e
        .server
        .post("/v1/environments/runner-2/challenge", Some(&e.enforcer), &json!({}));
    let (s, b) = attest(&evidence(
        "runner-1",
        other["challenge"].as_str().unwrap(),
        &e.app,
        &key,
    ));
    assert_eq!((s, reason(&b).as_str()), (409, "challenge_unknown"), "{b}");
    // Base64url keys may start with `-`: taken as the value, and checked as a key.
    let out = e.cli(
        ADMIN_KEY,
        &[
            "env",
            "register",
            "runner-3",
            "--attestation-key",
            "-cAbc",
            "--expect",
            &format!("app={}", sha256_file(&e.app)),
        ],
    );
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("attestation key"), "{}", text(&out.stderr));
    // Agents cannot attest.
    let (s, b) = e
        .server
        .post("/v1/environments/runner-1/challenge", Some(&e.agent), &json!({}));
    assert_eq!((s, reason(&b).as_str()), (403, "unauthorized_role"));
    // Only the one good attestation is in the log.
    let attested = e
        .server
        .log_events()
        .iter()
        .filter(|ev| ev["type"] == "environment_attested")
        .count();
    assert_eq!(attested, 1);
}

#[test]
fn quarantine_stops_a_running_exec_and_denies_new_requests() {
    let lease = 3;
    let e = setup(&["--lease-seconds", &lease.to_string()]);
    assert_eq!(code(&e.attest("runner-1")), 0);
    let pidfile = e.dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 60", pidfile.display());
    let child = e
        .exec(&[], &["sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&pidfile).map_or(true, |p| p.trim().is_empty()) {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = e.cli(ADMIN_KEY, &["env", "quarantine", "runner-1", "--reason", "compromised"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 live executions revoked"),
        "{}",
        text(&out.stdout)
    );
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 123, "{}", text(&out.stderr));
    assert!(
        started.elapsed() <= Duration::from_secs(lease + 1),
        "{:?}",
        started.elapsed()
    );
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    assert!(!Path::new(&format!("/proc/{}", pid.trim())).exists());

    let (_, denied) = e.authorize(e.exec_request(&["sh"]));
    assert_eq!(reason(&denied), "environment_untrusted", "{denied}");
    let out = e.cli(ADMIN_KEY, &["env", "release", "runner-1"]);
    assert_eq!(code(&out), 0);
    // The attestation from before the quarantine does not count any more.
    let (_, stale) = e.authorize(e.exec_request(&["sh"]));
    assert_eq!(reason(&stale), "attestation_stale", "{stale}");
    assert!(
        stale["message"].as_str().unwrap().contains("released from quarantine"),
        "{stale}"
    );
    assert_eq!(code(&e.attest("runner-1")), 0);
    let (_, allowed) = e.authorize(e.exec_request(&["sh"]));
    assert_eq!(allowed["decision"], "allow", "{allowed}");
}

#[test]
fn a_policy_over_environment_labels_allows_and_denies() {
    let e = setup(&[]);
    e.register("runner-2", "pci=false");
    assert_eq!(code(&e.attest("runner-1")), 0);
    assert_eq!(code(&e.attest("runner-2")), 0);
    let refund = |env: &str| {
        e.authorize(json!({"action": "refund", "resource": {"type": "Tool", "id": "stripe"},
                           "arguments": {"amount": 10}, "environment": env}))
            .1
    };
    let allowed = refund("runner-1");
    assert_eq!(allowed["decision"], "allow", "{allowed}");
    assert_eq!(allowed["policies"], json!(["payments-only-from-pci"]));
    assert_eq!(reason(&refund("runner-2")), "policy_denied");
    // Labels are the registry's: relabel runner-2 and it may pay.
    let out = e.cli(ADMIN_KEY, &["env", "update", "runner-2", "--label", "pci=true"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(refund("runner-2")["decision"], "allow");
}

#[test]
fn exec_runs_only_the_pinned_program_file() {
    let e = setup(&[]);
    assert_eq!(code(&e.attest("runner-1")), 0);
    let tool = e.dir.path().join("tool.sh");
    std::fs::write(&tool, "#!/bin/sh\necho tool 1\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let digest = sha256_file(&tool);
    // Only that exact file may run.
    e.server.activate(
        SCHEMA,
        &format!(
            "{POLICIES}\n@id(\"pinned-tool\")\npermit (principal, action == Action::\"run\", resource)\n\
             when {{ context.arguments.program_sha256 == \"{digest}\" }};\n"
        ),
    );
    let run = |flags: &[&str]| {
        let mut all = vec!["--action", "run", "--pin-program"];
        all.extend(flags);
        e.exec(&all, &["./tool.sh"]).output().unwrap()
    };
    let out = run(&[]);
    assert_eq!(
        (code(&out), text(&out.stdout).as_str()),
        (0, "tool 1\n"),
        "{}",
        text(&out.stderr)
    );

    // A clearance for the file as it is now...
    let args = json!({"argv": ["./tool.sh"], "cwd": e.dir.path().canonicalize().unwrap().to_str().unwrap(),
                      "program": "./tool.sh", "program_sha256": digest});
    let (_, held) = e.authorize(
        json!({"action": "run", "resource": {"type": "Command", "id": "./tool.sh"},
                                       "environment": "runner-1", "arguments": args}),
    );
    assert_eq!(held["decision"], "allow", "{held}");
    // ...is refused once the file changed, before anything runs.
    std::fs::write(&tool, "#!/bin/sh\necho tool 2 >> ran\n").unwrap();
    let out = e
        .exec(
            &[
                "--action",
                "run",
                "--args",
                &args.to_string(),
                "--clearance",
                held["clearance"].as_str().unwrap(),
            ],
            &["./tool.sh"],
        )
        .output()
        .unwrap();
    assert_eq!(code(&out), 121, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("measurement_mismatch"),
        "{}",
        text(&out.stderr)
    );
    assert!(!e.dir.path().join("ran").exists());
    // And asking anew for the changed file is denied by the policy.
    let out = run(&[]);
    assert_eq!(code(&out), 120, "{}", text(&out.stderr));
    assert!(!e.dir.path().join("ran").exists());
}

/// `env show` says when an environment is not trusted for lack of a fresh attestation,
/// and what to run about it.
#[test]
fn env_show_flags_a_missing_or_stale_attestation() {
    let e = setup(&["--attestation-freshness-seconds", "3"]);
    let show = || text(&e.cli(ADMIN_KEY, &["env", "show", "runner-1"]).stdout);
    assert!(
        show().contains(
            "attested  never: requests for it are denied until it attests (clearance env attest --id runner-1"
        ),
        "{}",
        show()
    );
    assert_eq!(code(&e.attest("runner-1")), 0);
    assert!(!show().contains("STALE"), "{}", show());
    std::thread::sleep(std::time::Duration::from_millis(4100));
    assert!(
        show().contains("STALE     requests for it are denied (attestation_stale) until it attests again"),
        "{}",
        show()
    );
}
