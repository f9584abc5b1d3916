//! The transparency log end to end: proofs, checkpoints, evidence, tampering, forks.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test setup: a failure must abort loudly"
)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{ADMIN_KEY, BIN, POLICIES, SCHEMA, Server, refund};
use serde_json::{Value, json};
use sqlx::Connection as _;

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A server with an agent, an auditor, the test policy and a few decisions.
fn populated() -> (Server, String, String) {
    let server = Server::start();
    let bot = server.agent("bot");
    let (s, _) = server.post(
        "/v1/principals",
        Some(ADMIN_KEY),
        &json!({"id": "audit", "roles": ["auditor"]}),
    );
    assert_eq!(s, 201);
    let (_, k) = server.post("/v1/principals/audit/keys", Some(ADMIN_KEY), &json!({}));
    let auditor = k["key"].as_str().unwrap().to_owned();
    server.activate(SCHEMA, POLICIES);
    for amount in [10, 700, 5000] {
        server.authorize(&bot, "refund", refund(amount));
    }
    (server, bot, auditor)
}

fn checkpoint_now(server: &Server) -> String {
    let (s, note) = server.call("POST", "/v1/log/checkpoint", Some(ADMIN_KEY), None);
    assert_eq!(s, 200, "{note}");
    note.as_str().unwrap().to_owned()
}

fn size_of(note: &str) -> u64 {
    note.lines().nth(1).unwrap().parse().unwrap()
}

#[test]
fn independent_python_verifier_checks_checkpoints_and_proofs() {
    let has = Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        assert!(
            std::env::var_os("CLEARANCE_REQUIRE_INTEROP").is_none(),
            "python3 cannot import cryptography"
        );
        eprintln!("skipped: python3 with cryptography is not installed");
        return;
    }
    let (server, bot, auditor) = populated();
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.txt");
    std::fs::write(&saved, checkpoint_now(&server)).unwrap();
    for amount in [1, 2, 3, 4, 5, 6, 7] {
        server.authorize(&bot, "refund", refund(amount));
    }
    let latest = checkpoint_now(&server);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/interop/verify_log.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&server.url)
        .arg(&auditor)
        .arg(&saved)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}{}", text(&out.stdout), text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["size"].as_u64(), Some(size_of(&latest)));
    assert_eq!(summary["entries_checked"], summary["size"]);
    assert!(summary["consistent_with"].as_u64().unwrap() < size_of(&latest));

    // A saved checkpoint with a changed root (re-signed by nobody) is rejected.
    let forged = std::fs::read_to_string(&saved).unwrap();
    let lines: Vec<&str> = forged.lines().collect();
    let fake_root = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    std::fs::write(&saved, forged.replacen(lines[2], fake_root, 1)).unwrap();
    let out = Command::new("python3")
        .arg(script)
        .arg(&server.url)
        .arg(&auditor)
        .arg(&saved)
        .output()
        .unwrap();
    assert_ne!(code(&out), 0, "{}", text(&out.stdout));
}

#[test]
fn log_api_proofs_and_roles() {
    let (server, bot, auditor) = populated();
    let first = checkpoint_now(&server);
    server.authorize(&bot, "refund", refund(9));
    let second = checkpoint_now(&server);
    assert!(size_of(&second) > size_of(&first));
    let (_, vkey) = server.call("GET", "/v1/log/verifier-key", None, None);
    let vkey = vkey.as_str().unwrap().trim().to_owned();
    assert!(vkey.contains("+"), "{vkey}");

    let (s, c) = server.call(
        "GET",
        &format!(
            "/v1/log/proof/consistency?from={}&to={}",
            size_of(&first),
            size_of(&second)
        ),
        None,
        None,
    );
    assert_eq!(s, 200, "{c}");
    assert!(!c["proof"].as_array().unwrap().is_empty());

    let (s, p) = server.call("GET", "/v1/log/proof/inclusion?index=0", None, None);
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["size"].as_u64(), Some(size_of(&second)));

    let (s, e) = server.call("GET", "/v1/log/proof/inclusion?index=999&size=3", None, None);
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("invalid_request")), "{e}");
    let (s, e) = server.call("POST", "/v1/log/checkpoint", Some(&bot), None);
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (403, Some("unauthorized_role")),
        "{e}"
    );
    let (s, _) = server.call("POST", "/v1/log/checkpoint", Some(&auditor), None);
    assert_eq!(s, 200);
    let (s, e) = server.call("GET", "/v1/log/entries?start=0&end=5", Some(&bot), None);
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (403, Some("unauthorized_role")),
        "{e}"
    );
    let (s, e) = server.call("GET", "/v1/log/entries?start=0&end=5000", Some(&auditor), None);
    assert_eq!(s, 400, "{e}");
    let (s, e) = server.call("GET", "/v1/log/entries?start=0&end=5", Some(&auditor), None);
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["entries"].as_array().unwrap().len(), 5);

    // `clearance log proof` prints C2SP tlog-proof text that opens with the log key.
    let out = server.cli(None, &["log", "proof", "--index", "3"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let proof = clearance_log::TlogProof::parse(&text(&out.stdout)).unwrap();
    let verifier = clearance_log::NoteVerifier::parse(&vkey).unwrap();
    let (_, entries) = server.call("GET", "/v1/log/entries?start=3&end=4", Some(&auditor), None);
    use base64::Engine as _;
    let entry = base64::engine::general_purpose::STANDARD
        .decode(entries["entries"][0]["entry"].as_str().unwrap())
        .unwrap();
    proof.verify(&clearance_log::leaf_hash(&entry), &verifier).unwrap();
}

#[test]
fn evidence_bundle_verifies_offline_and_names_what_was_tampered() {
    let (server, bot, auditor) = populated();
    let (_, allow) = server.authorize(&bot, "refund", refund(42));
    let id = allow["execution_id"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ev.json");
    let out = server.cli(
        Some(&auditor),
        &["evidence", "export", &id, "-o", file.to_str().unwrap()],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let (_, vkey) = server.call("GET", "/v1/log/verifier-key", None, None);
    let vkey = vkey.as_str().unwrap().trim().to_owned();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(
        &jwks_file,
        server.call("GET", "/.well-known/jwks.json", None, None).1.to_string(),
    )
    .unwrap();

    // Verified with no server: stop it first.
    let bundle: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(bundle["clearance"], allow["clearance"]);
    server.stop();
    let verify = |f: &Path, extra: &[&str]| {
        Command::new(BIN)
            .args(["evidence", "verify", "--json"])
            .arg(f)
            .args(extra)
            .output()
            .unwrap()
    };
    let pinned = ["--log-key", vkey.as_str(), "--jwks", jwks_file.to_str().unwrap()];
    let out = verify(&file, &pinned);
    assert_eq!(code(&out), 0, "{}{}", text(&out.stdout), text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["decision"].as_str(), report["clearance_checked"].as_bool()),
        (Some("allow"), Some(true))
    );
    assert_eq!(report["keys_pinned"], true);

    let tamper = |f: &dyn Fn(&mut Value)| {
        let mut b = bundle.clone();
        f(&mut b);
        let p = dir.path().join("tampered.json");
        std::fs::write(&p, b.to_string()).unwrap();
        let out = verify(&p, &pinned);
        assert_eq!(code(&out), 4, "{}", text(&out.stdout));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["error"]["code"].as_str().unwrap().to_owned()
    };
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(
        tamper(&|b| {
            let entry = b64.decode(b["entries"][0]["entry"].as_str().unwrap()).unwrap();
            let changed = String::from_utf8(entry).unwrap().replace("\"allow\"", "\"deny\"");
            b["entries"][0]["entry"] = json!(b64.encode(changed));
        }),
        "inclusion"
    );
    assert_eq!(tamper(&|b| b["entries"][0]["index"] = json!(0)), "inclusion");
    assert_eq!(
        tamper(&|b| {
            let c = b["checkpoint"].as_str().unwrap().replacen('\n', "\n1", 1);
            b["checkpoint"] = json!(c);
        }),
        "checkpoint"
    );
    assert_eq!(
        tamper(&|b| {
            let t = b["clearance"].as_str().unwrap();
            let other = server_token_swap(t);
            b["clearance"] = json!(other);
        }),
        "clearance"
    );
    assert_eq!(tamper(&|b| b["log_verifier_key"] = json!("x+00000000+AQ==")), "log_key");
    assert_eq!(tamper(&|b| b["format"] = json!("something-else")), "format");
}

/// Flip one character of a clearance's signature.
fn server_token_swap(token: &str) -> String {
    let mut t = token.to_owned().into_bytes();
    let i = t.len() - 5;
    t[i] = if t[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(t).unwrap()
}

/// Build a stopped server's data directory with decisions and two checkpoints.
fn stopped_log() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_in(&data, &[]);
    let bot = server.agent("bot");
    server.activate(SCHEMA, POLICIES);
    for amount in [1, 2, 3] {
        server.authorize(&bot, "refund", refund(amount));
    }
    checkpoint_now(&server);
    for amount in [4, 5, 6, 7] {
        server.authorize(&bot, "refund", refund(amount));
    }
    checkpoint_now(&server);
    server.stop();
    (dir, data)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An attacker with the database file: triggers do not stop them, `log verify` must.
fn tamper_db(data: &Path, statements: &[&str]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}", data.join("clearance.db").display());
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        for sql in [
            "DROP TRIGGER log_entries_no_update",
            "DROP TRIGGER log_entries_no_delete",
        ]
        .iter()
        .chain(statements)
        {
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
    });
}

fn log_verify(data: &Path) -> Output {
    Command::new(BIN)
        .args(["log", "verify", "--data-dir"])
        .arg(data)
        .output()
        .unwrap()
}

#[test]
fn log_verify_detects_edit_delete_reorder_and_truncate() {
    let (dir, clean) = stopped_log();
    let out = log_verify(&clean);
    assert_eq!(code(&out), 0, "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("ok: every checkpoint matches the entries"));

    // The hash of the forged entry, as an attacker who also rewrites leaves would store it.
    let forged_leaf = format!(
        "UPDATE log_nodes SET hash = X'{}' WHERE level = 0 AND idx = 2",
        hex_of(&clearance_log::leaf_hash(b"{}"))
    );
    let cases: [(&str, &[&str], &str); 5] = [
        (
            "edit",
            &[
                r#"UPDATE log_entries SET entry = CAST(replace(CAST(entry AS TEXT), '"allow"', '"deny"') AS BLOB) WHERE idx = 7"#,
            ],
            "first divergent index 7",
        ),
        (
            "delete",
            &["DELETE FROM log_entries WHERE idx = 5"],
            "first divergent index 5",
        ),
        (
            "reorder",
            &[
                "UPDATE log_entries SET idx = 1000000 WHERE idx = 8",
                "UPDATE log_entries SET idx = 8 WHERE idx = 9",
                "UPDATE log_entries SET idx = 9 WHERE idx = 1000000",
            ],
            "first divergent index 8",
        ),
        ("truncate", &["DELETE FROM log_entries WHERE idx >= 9"], "truncated"),
        // Editing an entry and its recorded leaf alike is still caught by the checkpoint.
        (
            "edit-with-leaf",
            &[
                "DROP TRIGGER log_nodes_no_update",
                "UPDATE log_entries SET entry = CAST('{}' AS BLOB) WHERE idx = 2",
                &forged_leaf,
            ],
            "first divergent index is between",
        ),
    ];
    for (name, statements, expected) in cases {
        let data = dir.path().join(name);
        copy_dir(&clean, &data);
        tamper_db(&data, statements);
        let out = log_verify(&data);
        assert_eq!(code(&out), 4, "{name}: {}{}", text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stderr).contains(expected), "{name}: {}", text(&out.stderr));
    }

    // The server itself refuses to start on a log that no longer matches its checkpoint.
    let data = dir.path().join("edit");
    let err = Server::try_start_in(&data, &[]).expect_err("a tampered log must not be served");
    assert!(err.contains("clearance log verify"), "{err}");
    // Refused by the rehash of every entry at open, which names the entry.
    assert!(
        err.contains("log entry 7 is missing or no longer matches its recorded hash"),
        "{err}"
    );
}

/// Two copies of one log that diverge (a fork) are told apart by an auditor's saved
/// checkpoint: the bundle from the other branch does not prove consistency with it.
#[test]
fn a_forked_log_fails_against_the_auditors_checkpoint() {
    let (dir, base) = stopped_log();
    let fork = dir.path().join("fork");
    copy_dir(&base, &fork);
    let key = |s: &Server| {
        let (_, k) = s.post("/v1/principals/bot/keys", Some(ADMIN_KEY), &json!({}));
        k["key"].as_str().unwrap().to_owned()
    };
    // Branch A: what the auditor saw.
    let a = Server::start_in(&base, &[]);
    a.authorize(&key(&a), "refund", refund(11));
    let saved = checkpoint_now(&a);
    a.stop();
    // Branch B: another history from the same keys.
    let b = Server::start_in(&fork, &[]);
    let (_, allow) = b.authorize(&key(&b), "refund", refund(12));
    b.authorize(&key(&b), "refund", refund(13));
    checkpoint_now(&b);
    let id = allow["execution_id"].as_str().unwrap();
    let file = dir.path().join("ev.json");
    let size = size_of(&saved).to_string();
    let out = b.cli(
        Some(ADMIN_KEY),
        &[
            "evidence",
            "export",
            id,
            "-o",
            file.to_str().unwrap(),
            "--consistency-with",
            &size,
        ],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let saved_file = dir.path().join("saved.txt");
    std::fs::write(&saved_file, &saved).unwrap();
    let out = Command::new(BIN)
        .args(["evidence", "verify"])
        .arg(&file)
        .arg("--trusted-checkpoint")
        .arg(&saved_file)
        .output()
        .unwrap();
    assert_eq!(code(&out), 4, "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stderr).contains("consistency"), "{}", text(&out.stderr));
    // Without the auditor's checkpoint the branch is self-consistent: that is what the
    // saved checkpoint is for.
    let out = Command::new(BIN)
        .args(["evidence", "verify"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
}
