//! The `clearance` command as a user runs it: exit codes, output, interop.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test setup: a failure must abort loudly"
)]

mod common;

use std::process::Command;

use common::{ADMIN_KEY, BIN, POLICIES, SCHEMA, Server};

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn init_prints_the_first_admin_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let first = Command::new(BIN)
        .args(["init", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(code(&first), 0, "{}", text(&first.stderr));
    let out = text(&first.stdout);
    let key = out
        .split_whitespace()
        .find(|w| w.starts_with("clr_"))
        .expect("a key in the output")
        .to_owned();
    assert!(key.len() >= 40);
    let again = Command::new(BIN)
        .args(["init", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(code(&again), 0);
    assert!(!text(&again.stdout).contains("clr_"), "the key is shown only once");
    assert!(text(&again.stdout).contains("already initialized"));

    // The printed key is a working admin key.
    let server = Server::start_in(&data, &[]);
    let out = server.cli(Some(&key), &["principal", "list"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("admin"));
}

#[test]
fn walkthrough_with_exit_codes() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("schema.cedarschema"), SCHEMA).unwrap();
    std::fs::write(dir.path().join("policies.cedar"), POLICIES).unwrap();
    let schema = dir.path().join("schema.cedarschema");
    let policies = dir.path().join("policies.cedar");

    let out = server.cli(
        Some(ADMIN_KEY),
        &["principal", "create", "billing-bot", "--role", "agent", "--with-key"],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let bot = text(&out.stdout).lines().last().unwrap().trim().to_owned();
    assert!(bot.starts_with("clr_"));

    let out = server.cli(
        Some(ADMIN_KEY),
        &[
            "policy",
            "push",
            "--schema",
            schema.to_str().unwrap(),
            "--policies",
            policies.to_str().unwrap(),
            "--activate",
        ],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("activated sha256:"));

    let allow = server.cli(
        Some(&bot),
        &[
            "authorize",
            "--action",
            "refund",
            "--resource",
            "Tool/stripe",
            "--args",
            r#"{"amount":120,"currency":"EUR"}"#,
        ],
    );
    assert_eq!(code(&allow), 0, "{}", text(&allow.stderr));
    let stdout = text(&allow.stdout);
    assert!(stdout.starts_with("allow  refund on Tool::\"stripe\""), "{stdout}");
    let token = stdout.lines().last().unwrap().to_owned();

    let deny = server.cli(
        Some(&bot),
        &[
            "authorize",
            "--action",
            "refund",
            "--resource",
            "Tool/stripe",
            "--args",
            r#"{"amount":5000,"currency":"EUR"}"#,
        ],
    );
    assert_eq!(code(&deny), 3);
    assert!(text(&deny.stdout).contains("policy_forbidden"));

    let json = server.cli(
        Some(&bot),
        &[
            "authorize",
            "--json",
            "--action",
            "refund",
            "--resource",
            "Tool/stripe",
            "--args",
            r#"{"amount":700,"currency":"EUR"}"#,
        ],
    );
    assert_eq!(code(&json), 3);
    let body: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(body["reasons"][0], "policy_denied");

    // Verify against the server's JWKS, bound to the exact call (key order is irrelevant).
    let ok = server.cli(
        None,
        &[
            "verify",
            &token,
            "--action",
            "refund",
            "--resource",
            "Tool/stripe",
            "--args",
            r#"{"currency":"EUR","amount":120}"#,
        ],
    );
    assert_eq!(code(&ok), 0, "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).starts_with("verified: refund on Tool::\"stripe\" for `billing-bot`"));
    let changed = server.cli(
        None,
        &[
            "verify",
            &token,
            "--json",
            "--action",
            "refund",
            "--resource",
            "Tool/stripe",
            "--args",
            r#"{"currency":"EUR","amount":121}"#,
        ],
    );
    assert_eq!(code(&changed), 4);
    let body: serde_json::Value = serde_json::from_slice(&changed.stdout).unwrap();
    assert_eq!(body["error"]["code"], "arguments_mismatch");
    let wrong_aud = server.cli(None, &["verify", &token, "--audience", "payments-runner-1"]);
    assert_eq!(code(&wrong_aud), 4);
    assert!(
        text(&wrong_aud.stderr).starts_with("error: wrong_audience"),
        "{}",
        text(&wrong_aud.stderr)
    );
    let wrong_iss = server.cli(None, &["verify", &token, "--issuer", "https://elsewhere.example"]);
    assert_eq!(code(&wrong_iss), 4);

    // Authentication and authorization failures: exit 5, one line.
    let out = server.cli(Some("clr_0000000000000000000000000000000000"), &["policy", "list"]);
    assert_eq!(code(&out), 5);
    assert_eq!(text(&out.stderr).lines().count(), 1, "{}", text(&out.stderr));
    assert!(text(&out.stderr).starts_with("error: invalid_api_key"));
    let out = server.cli(Some(&bot), &["policy", "list"]);
    assert_eq!(code(&out), 5);
    assert!(text(&out.stderr).starts_with("error: unauthorized_role"));

    // Bad input: exit 1 with a clear message; bad flags: exit 2.
    let out = server.cli(
        Some(&bot),
        &[
            "authorize",
            "--action",
            "refund",
            "--resource",
            "Tool/stripe",
            "--args",
            "{oops",
        ],
    );
    assert_eq!(code(&out), 1);
    assert!(text(&out.stderr).contains("--args is not valid JSON"));
    let out = server.cli(
        Some(&bot),
        &["authorize", "--action", "refund", "--resource", "no-slash"],
    );
    assert_eq!(code(&out), 2);

    // The control plane gone: exit 6.
    let url = server.url.clone();
    server.stop();
    let out = Command::new(BIN)
        .args(["authorize", "--action", "refund", "--resource", "Tool/stripe"])
        .env("CLEARANCE_SERVER", &url)
        .env("CLEARANCE_API_KEY", &bot)
        .output()
        .unwrap();
    assert_eq!(code(&out), 6, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot reach the control plane"));
}

/// Whether python3 has PyJWT (it must under CLEARANCE_REQUIRE_INTEROP, as in CI).
fn has_pyjwt() -> bool {
    let has = Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        assert!(
            std::env::var_os("CLEARANCE_REQUIRE_INTEROP").is_none(),
            "CLEARANCE_REQUIRE_INTEROP is set but python3 cannot import jwt and cryptography"
        );
        eprintln!("skipped: python3 with PyJWT and cryptography is not installed (pip install pyjwt cryptography)");
    }
    has
}

/// `tests/interop/verify_clearance.py`: PyJWT checks `token` with the JWKS file alone.
fn pyjwt_verify(jwks: &std::path::Path, token: &str, issuer: &str) -> std::process::Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/interop/verify_clearance.py");
    Command::new("python3")
        .arg(script)
        .arg(jwks)
        .arg(token)
        .arg(issuer)
        .output()
        .unwrap()
}

/// A standard JOSE library in another language verifies a clearance with only the JWKS.
#[test]
fn pyjwt_verifies_a_clearance_from_the_jwks_alone() {
    if !has_pyjwt() {
        return;
    }
    let server = Server::start();
    let bot = server.agent("bot");
    server.activate(SCHEMA, POLICIES);
    let (_, allow) = server.authorize(&bot, "refund", common::refund(5));
    let token = allow["clearance"].as_str().unwrap();
    let (_, jwks) = server.call("GET", "/.well-known/jwks.json", None, None);
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string()).unwrap();
    let out = pyjwt_verify(&jwks_path, token, &server.url);
    assert_eq!(code(&out), 0, "{}{}", text(&out.stdout), text(&out.stderr));
    let claims: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims["act"], "refund");
    assert_eq!(claims["sub"], "bot");
    assert_eq!(claims["jti"], allow["execution_id"]);
    assert_eq!(claims["log"], allow["log_index"]);

    // The same library rejects a tampered clearance and a wrong issuer.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].replacen('e', "f", 1);
    let tampered = parts.join(".");
    let out = pyjwt_verify(&jwks_path, &tampered, &server.url);
    assert_eq!(code(&out), 1, "{}", text(&out.stdout));
    let out = pyjwt_verify(&jwks_path, token, "https://other.example");
    assert_eq!(code(&out), 1, "{}", text(&out.stdout));
}

/// The README's walkthrough bundle behaves as the README says.
#[test]
fn readme_example_bundle_behaves_as_documented() {
    let server = Server::start();
    let bot = server.agent("billing-bot");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/payments");
    let out = server.cli(
        Some(ADMIN_KEY),
        &[
            "policy",
            "push",
            "--activate",
            "--schema",
            &format!("{root}/schema.cedarschema"),
            "--policies",
            &format!("{root}/policies.cedar"),
        ],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let ask = |amount: i64| {
        server.cli(
            Some(&bot),
            &[
                "authorize",
                "--action",
                "refund",
                "--resource",
                "Tool/stripe",
                "--args",
                &format!(r#"{{"amount": {amount}, "currency": "EUR"}}"#),
            ],
        )
    };
    assert_eq!(code(&ask(120)), 0);
    let forbidden = ask(5000);
    assert_eq!(code(&forbidden), 3);
    assert!(text(&forbidden.stdout).contains("forbidden by policy `no-large-refunds`"));
    let denied = ask(700);
    assert_eq!(code(&denied), 3);
    assert!(text(&denied.stdout).contains("policy_denied"));
}

#[test]
fn ids_that_start_with_a_dash_are_ids_not_flags() {
    // Execution ids are base64url: one in 64 starts with `-`.
    for args in [
        &["lineage", "-AbC"][..],
        &["revoke", "execution", "-AbC"],
        &["evidence", "export", "-AbC"],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .args(["--server", "http://127.0.0.1:1", "--api-key", "clr_unused"])
            .output()
            .unwrap();
        assert_eq!(code(&out), 6, "{args:?}: {}", text(&out.stderr));
    }
}

/// `clearance key rotate`: the new key signs from the next decision on; the old one stays
/// in the JWKS (PyJWT verifies clearances of both from it alone) until the longest
/// clearance it could have signed has expired, across a restart; evidence bundles keep
/// naming the key that signed; and rotating is the way back after revoking the key.
#[test]
fn rotating_the_signing_key_keeps_old_clearances_verifiable_until_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clearance.toml");
    // Clearances live at most 4 s: the old key stays published 4 s + 5 s of leeway.
    std::fs::write(&config, "default_ttl_seconds = 4\nmax_ttl_seconds = 4\n").unwrap();
    let data = dir.path().join("data");
    let config_flag = ["--config", config.to_str().unwrap()];
    let server = Server::start_in(&data, &config_flag);
    let bot = server.agent("bot");
    server.activate(SCHEMA, POLICIES);
    let (_, first) = server.authorize(&bot, "refund", common::refund(5));
    let old_token = first["clearance"].as_str().unwrap().to_owned();
    let old_kid = common::jws_part(&old_token, 0)["kid"].as_str().unwrap().to_owned();

    let out = server.cli(Some(ADMIN_KEY), &["key", "rotate"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("the previous key {old_kid} stays in the JWKS until")));
    let (_, second) = server.authorize(&bot, "refund", common::refund(6));
    let new_token = second["clearance"].as_str().unwrap().to_owned();
    let new_kid = common::jws_part(&new_token, 0)["kid"].as_str().unwrap().to_owned();
    assert_ne!(old_kid, new_kid);
    assert!(text(&out.stdout).contains(&new_kid));
    let kids = |server: &Server| -> Vec<String> {
        let (_, jwks) = server.call("GET", "/.well-known/jwks.json", None, None);
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(kids(&server), [new_kid.clone(), old_kid.clone()]);

    // A standard JOSE library verifies both from the published JWKS alone.
    if has_pyjwt() {
        let (_, jwks) = server.call("GET", "/.well-known/jwks.json", None, None);
        let jwks_path = dir.path().join("jwks.json");
        std::fs::write(&jwks_path, jwks.to_string()).unwrap();
        for token in [&old_token, &new_token] {
            let out = pyjwt_verify(&jwks_path, token, &server.url);
            assert_eq!(code(&out), 0, "{}{}", text(&out.stdout), text(&out.stderr));
        }
    }

    // The evidence of the first execution names the key that signed its clearance.
    let (status, bundle) = server.call(
        "GET",
        &format!("/v1/evidence/{}", first["execution_id"].as_str().unwrap()),
        Some(ADMIN_KEY),
        None,
    );
    assert_eq!(status, 200, "{bundle}");
    assert_eq!(bundle["jwks"]["keys"][0]["kid"], old_kid.as_str());

    // After a restart: the new key still signs, the old one is still published.
    server.stop();
    let server = Server::start_in(&data, &config_flag);
    assert_eq!(kids(&server), [new_kid.clone(), old_kid.clone()]);
    let (_, third) = server.authorize(&bot, "refund", common::refund(7));
    assert_eq!(
        common::jws_part(third["clearance"].as_str().unwrap(), 0)["kid"],
        new_kid.as_str()
    );

    // Once every clearance the old key signed has expired, it leaves the JWKS.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while kids(&server).len() > 1 {
        assert!(std::time::Instant::now() < deadline, "the old key is still published");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(kids(&server), std::slice::from_ref(&new_kid));

    // Revoking the signing key stops issuance; rotating brings it back.
    let (status, body) = server.post(
        &format!("/v1/signing-keys/{new_kid}/revoke"),
        Some(ADMIN_KEY),
        &serde_json::json!({}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = server.call("GET", "/readyz", None, None);
    assert_eq!(status, 503);
    let out = server.cli(Some(ADMIN_KEY), &["key", "rotate", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let (status, body) = server.call("GET", "/readyz", None, None);
    assert_eq!(status, 200, "{body}");
    let (_, fourth) = server.authorize(&bot, "refund", common::refund(8));
    assert_eq!(fourth["decision"], "allow", "{fourth}");
}

/// The first hour's rough edges: one server per data directory, a way back in after
/// losing the admin key, a bootstrap key that cannot silently do nothing, a missing key
/// that names where keys come from, errors as JSON under `--json`, and no role for a
/// feature that does not exist.
#[test]
fn first_hour_errors_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_in(&data, &[]);

    // A second server on the same data directory refuses to start, naming it.
    let Err(second) = Server::try_start_in(&server.data_dir, &[]) else {
        panic!("a second server must not start on the same data directory")
    };
    assert!(second.contains("is in use by another clearance process"), "{second}");

    // No key: the refusal names CLEARANCE_API_KEY (exit code 5); under --json it is JSON.
    let out = server.cli(None, &["principal", "list"]);
    assert_eq!(code(&out), 5, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("set CLEARANCE_API_KEY"),
        "{}",
        text(&out.stderr)
    );
    let out = server.cli(None, &["principal", "list", "--json"]);
    assert_eq!(code(&out), 5);
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(error["error"]["code"], "invalid_api_key", "{error}");
    assert_eq!(error["error"]["exit_code"], 5, "{error}");
    let out = server.cli(Some(ADMIN_KEY), &["policy", "activate", "sha256:00", "--json"]);
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(
        (code(&out), &error["error"]["code"]),
        (1, &serde_json::json!("invalid_request")),
        "{error}"
    );

    // `log checkpoint --json` is JSON.
    let out = server.cli(None, &["log", "checkpoint", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let checkpoint: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        checkpoint["size"].as_u64().is_some() && checkpoint["note"].is_string(),
        "{checkpoint}"
    );
    // `--now` signs one covering every entry so far, which `log tail` decodes (here: the
    // admin's creation and its key).
    let out = server.cli(Some(ADMIN_KEY), &["log", "checkpoint", "--now", "--json"]);
    let now: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(now["size"], 2, "{now}");
    let out = server.cli(Some(ADMIN_KEY), &["log", "tail", "-n", "5"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("principal admin created (admin)"), "{lines:?}");
    assert!(lines[1].contains("issued to admin"), "{lines:?}");
    let out = server.cli(Some(ADMIN_KEY), &["log", "tail", "--decisions"]);
    assert_eq!(
        text(&out.stdout).trim(),
        "no decisions among the last 20 entries (the log holds 2)"
    );

    // The approver role is for approvals, which do not exist yet.
    let out = server.cli(Some(ADMIN_KEY), &["principal", "create", "alice", "--role", "approver"]);
    assert_eq!(code(&out), 1);
    assert!(
        text(&out.stderr).contains("invalid_request: the `approver` role is reserved"),
        "{}",
        text(&out.stderr)
    );

    // Lost the admin key: with the server stopped, recover-admin issues a new one.
    server.stop();
    let out = Command::new(BIN)
        .args(["recover-admin", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let recovered = text(&out.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("clr_"))
        .expect("a new key")
        .to_owned();

    // A bootstrap key given to an existing data directory is said to be ignored.
    let other = "clr_another-bootstrap-key-0123456789abcdef";
    let out = Command::new(BIN)
        .args(["init", "--bootstrap-admin-key", other, "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--bootstrap-admin-key (CLEARANCE_BOOTSTRAP_ADMIN_KEY) is ignored"),
        "{}",
        text(&out.stderr)
    );
    let restarted = Server::start_in(&data, &[]);
    let out = restarted.cli(Some(&recovered), &["principal", "list"]);
    assert_eq!(
        code(&out),
        0,
        "the recovered key is an admin key: {}",
        text(&out.stderr)
    );
    let out = restarted.cli(Some(other), &["principal", "list"]);
    assert_eq!(code(&out), 5, "the ignored bootstrap key grants nothing");
    // The recovery is in the log, by the admin principal.
    let issued: Vec<serde_json::Value> = restarted
        .log_events()
        .into_iter()
        .filter(|e| e["type"] == "key_issued" && e["principal"] == "admin")
        .collect();
    assert_eq!(issued.len(), 2, "the bootstrap key and the recovered one: {issued:?}");
}
