//! The MCP proxy against third-party MCP implementations: the official reference server
//! `@modelcontextprotocol/server-everything` upstream, and an agent built on the official
//! TypeScript SDK, over stdio. Needs `npm ci --prefix tests/interop/mcp` (CI runs it);
//! skipped without it unless CLEARANCE_REQUIRE_INTEROP is set.

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

use common::{ADMIN_KEY, BIN, Broken, Server, broken_plane};
use serde_json::{Value, json};

const SCHEMA: &str = r#"
entity Agent;
entity McpServer;
action "tool:echo" appliesTo {
    principal: Agent, resource: McpServer, context: { arguments: { message: String } }
};
action "tool:get-sum" appliesTo {
    principal: Agent, resource: McpServer, context: { arguments: { a: Long, b: Long } }
};
action "tool:get-env" appliesTo { principal: Agent, resource: McpServer };
"#;

const POLICIES: &str = r#"
@id("no-secrets-in-echo")
permit (principal, action == Action::"tool:echo", resource == McpServer::"everything")
when { !(context.arguments.message like "*secret*") };

@id("small-sums")
permit (principal, action == Action::"tool:get-sum", resource == McpServer::"everything")
when { context.arguments.a + context.arguments.b < 100 };

@id("env")
permit (principal, action == Action::"tool:get-env", resource == McpServer::"everything");
"#;

fn interop_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/mcp");
    let ready = dir
        .join("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
        .exists()
        && dir.join("node_modules/@modelcontextprotocol/sdk/package.json").exists();
    if ready {
        return Some(dir.canonicalize().unwrap());
    }
    assert!(
        std::env::var_os("CLEARANCE_REQUIRE_INTEROP").is_none(),
        "CLEARANCE_REQUIRE_INTEROP is set but tests/interop/mcp has no node_modules (npm ci --prefix tests/interop/mcp)"
    );
    eprintln!("skipped: run `npm ci --prefix tests/interop/mcp` to test against the reference MCP implementations");
    None
}

struct Run {
    /// One JSON answer per call, as the SDK agent saw it.
    answers: Vec<Value>,
    /// Every JSON-RPC message the upstream server received.
    upstream_saw: Vec<Value>,
}

/// Run the SDK agent against `clearance mcp-proxy` in front of server-everything.
fn run_agent(interop: &Path, server_url: &str, keys: (&str, &str), extra: &[&str], calls: &Value) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let tap_log = dir.path().join("upstream.log");
    let everything = interop.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let mut proxy: Vec<String> = vec!["mcp-proxy".into(), "--name".into(), "everything".into()];
    proxy.extend(extra.iter().map(|s| (*s).to_owned()));
    proxy.extend(["--upstream-cmd".into(), "node".into(), "--".into()]);
    proxy.extend([
        interop.join("tap.mjs").display().to_string(),
        "node".into(),
        everything.display().to_string(),
    ]);
    let out = Command::new("node")
        .arg(interop.join("agent.mjs"))
        .arg(BIN)
        .args(&proxy)
        .current_dir(interop)
        .env("CLEARANCE_SERVER", server_url)
        .env("CLEARANCE_API_KEY", keys.0)
        .env("CLEARANCE_ENFORCER_KEY", keys.1)
        .env("CLEARANCE_REPLAY_CACHE", dir.path().join("replay"))
        .env("TAP_LOG", &tap_log)
        .env("CALLS", calls.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "agent failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        answers.len(),
        calls.as_array().unwrap().len(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let upstream_saw = std::fs::read_to_string(&tap_log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Run { answers, upstream_saw }
}

fn tool_calls(run: &Run) -> Vec<&Value> {
    run.upstream_saw
        .iter()
        .filter(|m| m["method"] == "tools/call")
        .collect()
}

fn text_of(answer: &Value) -> String {
    answer["result"]["content"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

#[test]
fn tool_calls_through_the_proxy_are_governed_on_their_arguments() {
    let Some(interop) = interop_dir() else { return };
    let server = Server::start();
    let agent = server.principal("mcp-agent", &["agent"]);
    let enforcer = server.principal("mcp-runner", &["enforcer"]);
    server.activate(SCHEMA, POLICIES);
    let calls = json!([
        {"method": "tools/list"},
        {"name": "echo", "arguments": {"message": "hello"}},
        {"name": "echo", "arguments": {"message": "my secret plan"}},
        {"name": "get-sum", "arguments": {"a": 2, "b": 3}},
        {"name": "get-sum", "arguments": {"a": 60, "b": 50}},
        {"name": "get-env"},
        {"method": "resources/list"},
    ]);
    let run = run_agent(&interop, &server.url, (&agent, &enforcer), &[], &calls);
    let a = &run.answers;
    // tools/list passes through: the server's real tools.
    let tools: Vec<&str> = a[0]["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(tools.contains(&"echo") && tools.contains(&"get-sum"), "{tools:?}");
    // Allowed: the server's real answers.
    assert_eq!(text_of(&a[1]), "Echo: hello");
    assert!(text_of(&a[3]).contains('5'), "{}", a[3]);
    // Denied: a tool error naming the reason; the server never saw it.
    assert_eq!(a[2]["result"]["isError"], true, "{}", a[2]);
    assert!(text_of(&a[2]).contains("policy_denied"), "{}", a[2]);
    assert_eq!(a[4]["result"]["isError"], true);
    assert!(text_of(&a[4]).contains("policy_denied"));
    // Other methods are refused unless allowed.
    assert_eq!(a[6]["ok"], false, "{}", a[6]);
    assert!(a[6]["error"].as_str().unwrap().contains("resources/list"));

    let forwarded = tool_calls(&run);
    assert_eq!(forwarded.len(), 3, "{forwarded:?}");
    let raw = serde_json::to_string(&run.upstream_saw).unwrap();
    assert!(
        !raw.contains("my secret plan") && !raw.contains("\"a\":60"),
        "a denied call reached the server"
    );
    // Each forwarded call carries its clearance; the agent's credentials never travel.
    for call in &forwarded {
        assert!(
            call["params"]["_meta"]["clearance"]
                .as_str()
                .unwrap()
                .starts_with("eyJ"),
            "{call}"
        );
    }
    assert!(!text_of(&a[5]).is_empty(), "get-env answered nothing: {}", a[5]);
    for secret in [agent.as_str(), enforcer.as_str(), ADMIN_KEY] {
        assert!(!raw.contains(secret) && !text_of(&a[5]).contains(secret));
    }

    // A clearance the proxy used is spent: presenting it again is refused.
    let token = forwarded[0]["params"]["_meta"]["clearance"].as_str().unwrap();
    let jti = common::jws_part(token, 1)["jti"].as_str().unwrap().to_owned();
    let (status, body) = server.post(
        &format!("/v1/executions/{jti}/start"),
        Some(&enforcer),
        &json!({"clearance": token}),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("replayed")),
        "{body}"
    );

    // Every call is in the log with its start and completion; its evidence verifies.
    let deadline = Instant::now() + Duration::from_secs(10);
    let completed = loop {
        let done: Vec<String> = server
            .log_events()
            .iter()
            .filter(|e| e["type"] == "execution_completed")
            .map(|e| e["execution_id"].as_str().unwrap().to_owned())
            .collect();
        if done.len() >= 3 || Instant::now() > deadline {
            break done;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(completed.len(), 3);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("evidence.json");
    let out = server.cli(
        Some(ADMIN_KEY),
        &["evidence", "export", &jti, "-o", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(BIN)
        .args(["evidence", "verify", "--json"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["lifecycle"], json!(["started", "completed: succeeded"]));
}

#[test]
fn the_mcp_proxy_fails_closed() {
    let Some(interop) = interop_dir() else { return };
    let server = Server::start();
    let agent = server.principal("mcp-agent", &["agent"]);
    let enforcer = server.principal("mcp-runner", &["enforcer"]);
    server.activate(SCHEMA, POLICIES);
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        server.call("GET", "/.well-known/jwks.json", None, None).1.to_string(),
    )
    .unwrap();
    let trust = [
        "--jwks",
        jwks.to_str().unwrap(),
        "--issuer",
        &server.url,
        "--timeout",
        "1",
    ];
    let calls = json!([
        {"name": "echo", "arguments": {"message": "hello"}},
        {"name": "get-sum", "arguments": {"a": 1, "b": 2}},
    ]);
    let mut forwarded = 0;
    for kind in [Broken::Down, Broken::Slow, Broken::ServerError, Broken::Malformed] {
        let run = run_agent(&interop, &broken_plane(kind), (&agent, &enforcer), &trust, &calls);
        for answer in &run.answers {
            assert_eq!(answer["result"]["isError"], true, "{kind:?}: {answer}");
            assert!(
                text_of(answer).contains("control_plane_unavailable"),
                "{kind:?}: {answer}"
            );
        }
        forwarded += tool_calls(&run).len();
    }
    assert_eq!(
        forwarded, 0,
        "tool calls reached the server without a working control plane"
    );
}

#[test]
fn a_schema_generated_from_the_servers_tools_validates_argument_policies() {
    let Some(interop) = interop_dir() else { return };
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("everything.cedarschema");
    let out = Command::new(BIN)
        .args(["mcp", "schema", "--name", "everything", "--upstream-cmd", "node", "-o"])
        .arg(&schema)
        .arg("--")
        .arg(interop.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&schema).unwrap();
    assert!(text.contains(r#"action "tool:get-sum""#), "{text}");
    let validate = |policies: &str| {
        let file = dir.path().join("p.cedar");
        std::fs::write(&file, policies).unwrap();
        server.cli(
            Some(ADMIN_KEY),
            &[
                "policy",
                "validate",
                "--schema",
                schema.to_str().unwrap(),
                "--policies",
                file.to_str().unwrap(),
            ],
        )
    };
    // A policy over typed arguments validates...
    let ok = validate(
        r#"@id("small-sums") permit (principal, action == Action::"tool:get-sum", resource)
           when { context.arguments.a + context.arguments.b < 100 };"#,
    );
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    // ...and one that misnames or mistypes an argument is rejected when pushed, not at run time.
    for bad in [
        r#"@id("typo") permit (principal, action == Action::"tool:get-sum", resource) when { context.arguments.c < 100 };"#,
        r#"@id("type") permit (principal, action == Action::"tool:echo", resource) when { context.arguments.message < 100 };"#,
    ] {
        let out = validate(bad);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{bad}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
