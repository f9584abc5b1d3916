//! The MCP proxy against third-party MCP implementations: the official reference server
//! `@modelcontextprotocol/server-everything` upstream, and an agent built on the official
//! TypeScript SDK, over stdio and over streamable HTTP. Needs `npm ci --prefix
//! tests/interop/mcp` (CI runs it); skipped without it unless CLEARANCE_REQUIRE_INTEROP is
//! set.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "end-to-end tests: a failure must abort loudly"
)]

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ADMIN_KEY, BIN, Broken, Server, announced, broken_plane};
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
action "tool:trigger-sampling-request" appliesTo {
    principal: Agent, resource: McpServer, context: { arguments: { prompt: String } }
};
action "tool:trigger-long-running-operation" appliesTo {
    principal: Agent, resource: McpServer, context: { arguments: { duration: Long, steps: Long } }
};
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

@id("sampling")
permit (principal, action == Action::"tool:trigger-sampling-request", resource == McpServer::"everything");

@id("short-operations")
permit (principal, action == Action::"tool:trigger-long-running-operation", resource == McpServer::"everything")
when { context.arguments.duration <= 5 };
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
    let (server, agent, enforcer) = governed_plane();
    let calls = json!([
        {"method": "tools/list"},
        {"name": "echo", "arguments": {"message": "hello"}},
        {"name": "echo", "arguments": {"message": "my secret plan"}},
        {"name": "get-sum", "arguments": {"a": 2, "b": 3}},
        {"name": "get-sum", "arguments": {"a": 60, "b": 50}},
        {"name": "get-env"},
        {"method": "resources/list"},
        {"name": "trigger-sampling-request", "arguments": {"prompt": "hi"}},
        {"name": "trigger-long-running-operation", "arguments": {"duration": 1, "steps": 2}, "progress": true},
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

    // The server saw the agent's capabilities: its sampling request reached the agent,
    // and progress came back under the agent's own token.
    assert!(text_of(&a[7]).contains("sampled by the agent"), "{}", a[7]);
    assert!(a[8]["progress"].as_u64().unwrap() >= 1, "{}", a[8]);

    let forwarded = tool_calls(&run);
    assert_eq!(forwarded.len(), 5, "{forwarded:?}");
    let raw = serde_json::to_string(&run.upstream_saw).unwrap();
    assert!(
        !raw.contains("my secret plan") && !raw.contains("\"a\":60"),
        "a denied call reached the server"
    );
    // Each forwarded call carries its clearance; the agent's credentials never travel.
    for call in &forwarded {
        clearance_of(call);
    }
    assert!(!text_of(&a[5]).is_empty(), "get-env answered nothing: {}", a[5]);
    for secret in [agent.as_str(), enforcer.as_str(), ADMIN_KEY] {
        assert!(!raw.contains(secret) && !text_of(&a[5]).contains(secret));
    }

    // A clearance the proxy used is spent; every call is in the log with its start and
    // completion, and its evidence verifies.
    let token = clearance_of(forwarded[0]);
    spent_completed_and_proven(&server, &enforcer, token, 5);
}

/// A control plane with the test policies active, an agent and an enforcer (their keys).
fn governed_plane() -> (Server, String, String) {
    let server = Server::start();
    let agent = server.principal("mcp-agent", &["agent"]);
    let enforcer = server.principal("mcp-runner", &["enforcer"]);
    server.activate(SCHEMA, POLICIES);
    (server, agent, enforcer)
}

/// The clearance a forwarded call carries in its `_meta` (a compact JWS).
fn clearance_of(call: &Value) -> &str {
    let token = call["params"]["_meta"]["clearance"].as_str().unwrap_or_default();
    assert!(token.starts_with("eyJ"), "no clearance on a forwarded call: {call}");
    token
}

/// `token`, used by the proxy, is refused when presented again; `completions` calls have
/// their completion in the log; the token's execution has evidence that verifies offline
/// with its start and successful completion.
fn spent_completed_and_proven(server: &Server, enforcer: &str, token: &str, completions: usize) {
    let jti = common::jws_part(token, 1)["jti"].as_str().unwrap().to_owned();
    let (status, body) = server.post(
        &format!("/v1/executions/{jti}/start"),
        Some(enforcer),
        &json!({"clearance": token}),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("replayed")),
        "{body}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while server
        .log_events()
        .iter()
        .filter(|e| e["type"] == "execution_completed")
        .count()
        < completions
    {
        assert!(Instant::now() < deadline, "completions missing from the log");
        std::thread::sleep(Duration::from_millis(50));
    }
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

/// Flags that make an enforcement point trust the control plane's current key from a
/// file (so it can start against a broken plane) and give up after a second.
fn trust_flags(server: &Server, dir: &Path) -> Vec<String> {
    let jwks = dir.join("jwks.json");
    std::fs::write(
        &jwks,
        server.call("GET", "/.well-known/jwks.json", None, None).1.to_string(),
    )
    .unwrap();
    vec![
        "--jwks".into(),
        jwks.display().to_string(),
        "--issuer".into(),
        server.url.clone(),
        "--timeout".into(),
        "1".into(),
    ]
}

#[test]
fn the_mcp_proxy_fails_closed() {
    let Some(interop) = interop_dir() else { return };
    let (server, agent, enforcer) = governed_plane();
    let dir = tempfile::tempdir().unwrap();
    let trust = trust_flags(&server, dir.path());
    let trust: Vec<&str> = trust.iter().map(String::as_str).collect();
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

/// SIGKILL the control plane: no graceful shutdown, no last words.
fn kill_now(server: &Server) {
    let status = Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// server-everything over streamable HTTP behind `tap-http.mjs`, which records every HTTP
/// request that reaches the server.
struct HttpUpstream {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl HttpUpstream {
    fn start(interop: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("upstream-http.log");
        let everything = interop.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
        let mut child = Command::new("node")
            .arg(interop.join("tap-http.mjs"))
            .arg(everything)
            .current_dir(interop)
            .env("TAP_LOG", &log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("tap-http did not start: {line:?}"))
            .to_owned();
        Self {
            child,
            url,
            log,
            _dir: dir,
        }
    }

    /// Every HTTP request the server received: `{method, headers, body}`.
    fn saw(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The JSON-RPC messages among them (a body may be a batch).
    fn messages(&self) -> Vec<Value> {
        self.saw()
            .into_iter()
            .flat_map(|r| match &r["body"] {
                Value::Array(batch) => batch.clone(),
                Value::Object(_) => vec![r["body"].clone()],
                _ => Vec::new(),
            })
            .collect()
    }

    fn tool_calls(&self) -> Vec<Value> {
        self.messages()
            .into_iter()
            .filter(|m| m["method"] == "tools/call")
            .collect()
    }
}

impl Drop for HttpUpstream {
    fn drop(&mut self) {
        // Closing its stdin stops the tap and the server behind it.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// `clearance mcp-proxy --listen` in front of `upstream_url`, with the enforcer's key only:
/// agents bring their own.
struct HttpProxy {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl HttpProxy {
    fn start(server_url: &str, enforcer: &str, upstream_url: &str, extra: &[&str]) -> Self {
        let mut flags: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        flags.extend(["--upstream-url".to_owned(), upstream_url.to_owned()]);
        Self::start_with(server_url, enforcer, &flags)
    }

    fn start_with(server_url: &str, enforcer: &str, flags: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(BIN)
            .args(["mcp-proxy", "--listen", "127.0.0.1:0", "--name", "everything"])
            .args(flags)
            .env("CLEARANCE_SERVER", server_url)
            .env("CLEARANCE_ENFORCER_KEY", enforcer)
            .env_remove("CLEARANCE_API_KEY")
            .env("CLEARANCE_REPLAY_CACHE", dir.path().join("replay"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let url = announced(&mut child, "clearance mcp-proxy: listening on ");
        Self { child, url, _dir: dir }
    }
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the SDK agent against `url` with `key`; `{"method": "wait"}` in `calls` pauses it
/// until `at_wait` has run.
fn http_agent(interop: &Path, url: &str, key: Option<&str>, calls: &Value, at_wait: impl FnOnce()) -> Vec<Value> {
    let mut agent = Command::new("node");
    agent
        .arg(interop.join("agent.mjs"))
        .arg(url)
        .current_dir(interop)
        .env("CALLS", calls.to_string())
        .env_remove("AGENT_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(k) = key {
        agent.env("AGENT_KEY", k);
    }
    let mut child = agent.spawn().unwrap();
    let mut stdin = child.stdin.take();
    let mut at_wait = Some(at_wait);
    let mut answers = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        let value: Value = serde_json::from_str(&line).unwrap();
        if value["waiting"] == true {
            (at_wait.take().unwrap())();
            writeln!(stdin.as_mut().unwrap(), "go").unwrap();
            continue;
        }
        answers.push(value);
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "agent failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    answers
}

#[test]
fn tool_calls_over_streamable_http_are_governed_in_each_callers_name() {
    let Some(interop) = interop_dir() else { return };
    let server = Server::start();
    let agent = server.principal("mcp-agent", &["agent"]);
    let second = server.principal("second-agent", &["agent"]);
    let enforcer = server.principal("mcp-runner", &["enforcer"]);
    server.activate(SCHEMA, POLICIES);
    let upstream = HttpUpstream::start(&interop);
    let proxy = HttpProxy::start(&server.url, &enforcer, &upstream.url, &[]);
    let calls = json!([
        {"method": "tools/list"},
        {"name": "echo", "arguments": {"message": "hello"}},
        {"name": "echo", "arguments": {"message": "my secret plan"}},
        {"name": "get-sum", "arguments": {"a": 2, "b": 3}},
        {"name": "get-sum", "arguments": {"a": 60, "b": 50}},
        {"name": "trigger-sampling-request", "arguments": {"prompt": "hi"}},
        {"name": "trigger-long-running-operation", "arguments": {"duration": 1, "steps": 2}, "progress": true},
        {"name": "trigger-long-running-operation", "arguments": {"duration": 60, "steps": 2}},
        {"method": "resources/list"},
    ]);
    let a = http_agent(&interop, &proxy.url, Some(&agent), &calls, || {});
    assert_eq!(a.len(), 9, "{a:?}");
    let tools: Vec<&str> = a[0]["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    // The server saw the agent's own capabilities (sampling), so it offers its sampling tool.
    assert!(
        tools.contains(&"echo") && tools.contains(&"trigger-sampling-request"),
        "{tools:?}"
    );
    assert_eq!(text_of(&a[1]), "Echo: hello");
    assert!(text_of(&a[3]).contains('5'), "{}", a[3]);
    for denied in [&a[2], &a[4], &a[7]] {
        assert_eq!(denied["result"]["isError"], true, "{denied}");
        assert!(text_of(denied).contains("policy_denied"), "{denied}");
        assert_eq!(
            denied["result"]["structuredContent"]["clearance"]["reason"],
            "policy_denied"
        );
    }
    // A server-to-client request (sampling) reached the agent and its answer went back.
    assert!(text_of(&a[5]).contains("sampled by the agent"), "{}", a[5]);
    // Progress came back under the agent's own progress token.
    assert!(text_of(&a[6]).contains("completed"), "{}", a[6]);
    assert!(a[6]["progress"].as_u64().unwrap() >= 1, "{}", a[6]);
    assert_eq!(a[8]["ok"], false, "{}", a[8]);
    assert!(a[8]["error"].as_str().unwrap().contains("resources/list"));

    let forwarded = upstream.tool_calls();
    let names: Vec<&str> = forwarded
        .iter()
        .map(|c| c["params"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "echo",
            "get-sum",
            "trigger-sampling-request",
            "trigger-long-running-operation"
        ]
    );
    for call in &forwarded {
        clearance_of(call);
    }
    // Neither a denied call's arguments nor any key ever reached the server.
    let raw = serde_json::to_string(&upstream.saw()).unwrap();
    assert!(!raw.contains("my secret plan") && !raw.contains("\"a\":60") && !raw.contains("\"duration\":60"));
    for secret in [agent.as_str(), second.as_str(), enforcer.as_str(), ADMIN_KEY] {
        assert!(!raw.contains(secret), "a key reached the upstream server");
    }
    assert!(
        upstream
            .saw()
            .iter()
            .all(|r| r["headers"].get("authorization").is_none()),
        "the upstream saw an Authorization header"
    );

    // A second agent with its own key: its calls are decided in its own name.
    let b = http_agent(
        &interop,
        &proxy.url,
        Some(&second),
        &json!([{"name": "echo", "arguments": {"message": "from the second"}}]),
        || {},
    );
    assert_eq!(text_of(&b[0]), "Echo: from the second");
    let deciders: Vec<String> = server
        .log_events()
        .iter()
        .filter(|e| e["type"] == "decision")
        .map(|e| e["principal"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deciders.len(), 8, "{deciders:?}");
    assert_eq!(deciders.iter().filter(|p| *p == "second-agent").count(), 1);
    assert_eq!(deciders.iter().filter(|p| *p == "mcp-agent").count(), 7);

    let token = clearance_of(&forwarded[0]);
    spent_completed_and_proven(&server, &enforcer, token, 5);
}

#[test]
fn over_http_only_a_valid_agent_key_gets_through() {
    let Some(interop) = interop_dir() else { return };
    let server = Server::start();
    let enforcer = server.principal("mcp-runner", &["enforcer"]);
    let auditor = server.principal("auditor", &["auditor"]);
    server.activate(SCHEMA, POLICIES);
    let upstream = HttpUpstream::start(&interop);
    let proxy = HttpProxy::start(&server.url, &enforcer, &upstream.url, &[]);
    let calls = json!([{"name": "echo", "arguments": {"message": "hello"}}]);
    for (key, expected) in [
        (None, "invalid_api_key: present your Clearance API key"),
        (Some("clr_not_a_key"), "invalid_api_key"),
        (Some(auditor.as_str()), "unauthorized_role"),
        (Some(enforcer.as_str()), "unauthorized_role"),
    ] {
        let a = http_agent(&interop, &proxy.url, key, &calls, || {});
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0]["connect"], false, "{key:?}: {}", a[0]);
        assert!(a[0]["error"].as_str().unwrap().contains(expected), "{key:?}: {}", a[0]);
    }
    // Nothing at all reached the server: not even an initialize.
    assert_eq!(upstream.saw(), Vec::<Value>::new());
}

#[test]
fn the_http_proxy_fails_closed() {
    let Some(interop) = interop_dir() else { return };
    let upstream = HttpUpstream::start(&interop);
    let calls = json!([
        {"name": "echo", "arguments": {"message": "hello"}},
        {"method": "wait"},
        {"name": "echo", "arguments": {"message": "hello again"}},
        {"name": "get-sum", "arguments": {"a": 1, "b": 2}},
    ]);
    // The control plane dies mid-session: every call after is refused, none forwarded.
    let (server, agent, enforcer) = governed_plane();
    let dir = tempfile::tempdir().unwrap();
    let trust = trust_flags(&server, dir.path());
    let trust: Vec<&str> = trust.iter().map(String::as_str).collect();
    let proxy = HttpProxy::start(&server.url, &enforcer, &upstream.url, &trust);
    let a = http_agent(&interop, &proxy.url, Some(&agent), &calls, || kill_now(&server));
    assert_eq!(text_of(&a[0]), "Echo: hello");
    for refused in &a[1..] {
        assert_eq!(refused["result"]["isError"], true, "{refused}");
        assert_eq!(
            refused["result"]["structuredContent"]["clearance"]["reason"], "control_plane_unavailable",
            "{refused}"
        );
    }
    assert_eq!(upstream.tool_calls().len(), 1);
    // Broken from the start: no session opens and nothing reaches the server.
    let before = upstream.saw().len();
    let one = json!([calls[0]]);
    for kind in [Broken::Down, Broken::Slow, Broken::ServerError, Broken::Malformed] {
        let proxy = HttpProxy::start(&broken_plane(kind), &enforcer, &upstream.url, &trust);
        let a = http_agent(&interop, &proxy.url, Some(&agent), &one, || {});
        assert_eq!(a[0]["connect"], false, "{kind:?}: {}", a[0]);
        assert!(
            a[0]["error"].as_str().unwrap().contains("control_plane_unavailable"),
            "{kind:?}: {}",
            a[0]
        );
    }
    assert_eq!(
        upstream.saw().len(),
        before,
        "a request reached the server without a control plane"
    );
}

#[test]
fn http_agents_in_front_of_a_server_started_per_session() {
    let Some(interop) = interop_dir() else { return };
    let (server, agent, enforcer) = governed_plane();
    let dir = tempfile::tempdir().unwrap();
    let tap_log = dir.path().join("upstream.log");
    let everything = interop.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let flags: Vec<String> = vec![
        "--session-idle-timeout".into(),
        "2".into(),
        "--upstream-cmd".into(),
        "env".into(),
        "--".into(),
        format!("TAP_LOG={}", tap_log.display()),
        "node".into(),
        interop.join("tap.mjs").display().to_string(),
        "node".into(),
        everything.display().to_string(),
    ];
    let proxy = HttpProxy::start_with(&server.url, &enforcer, &flags);
    let saw = || -> Vec<Value> {
        std::fs::read_to_string(&tap_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let closed = || saw().iter().filter(|m| m["tap"] == "closed").count();
    let calls = json!([
        {"name": "echo", "arguments": {"message": "hello"}},
        {"name": "echo", "arguments": {"message": "my secret plan"}},
    ]);
    // Each session has its own server, started on the agent's initialize and stopped when
    // the agent ends the session.
    for n in 1..=2 {
        let a = http_agent(&interop, &proxy.url, Some(&agent), &calls, || {});
        assert_eq!(text_of(&a[0]), "Echo: hello");
        assert!(text_of(&a[1]).contains("policy_denied"), "{}", a[1]);
        wait_for(|| closed() == n, "the server of an ended session is still running");
    }
    let count = |method: &str| saw().iter().filter(|m| m["method"] == method).count();
    assert_eq!((count("initialize"), count("tools/call")), (2, 2));
    let raw = serde_json::to_string(&saw()).unwrap();
    assert!(!raw.contains("my secret plan") && !raw.contains(&agent) && !raw.contains(&enforcer));
    // An agent that walks away without ending its session: closed after the idle timeout.
    let mut agent_cmd = Command::new("node");
    agent_cmd
        .arg(interop.join("agent.mjs"))
        .arg(&proxy.url)
        .current_dir(&interop)
        .env("AGENT_KEY", &agent)
        .env("NO_TERMINATE", "1")
        .env("CALLS", json!([calls[0]]).to_string());
    assert!(agent_cmd.output().unwrap().status.success());
    assert_eq!(count("initialize"), 3);
    wait_for(|| closed() == 3, "an idle session's server outlived the idle timeout");
}

fn wait_for(done: impl Fn() -> bool, failure: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "{failure}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tools_list_can_show_each_agent_only_the_tools_it_may_use() {
    let Some(interop) = interop_dir() else { return };
    let server = Server::start();
    let agent = server.principal("mcp-agent", &["agent"]);
    let second = server.principal("second-agent", &["agent"]);
    let enforcer = server.principal("mcp-runner", &["enforcer"]);
    let schema =
        format!("{SCHEMA}\naction \"tool:get-tiny-image\" appliesTo {{ principal: Agent, resource: McpServer }};");
    let policies = format!(
        "{POLICIES}\n@id(\"images-for-the-second\")\n\
         permit (principal == Agent::\"second-agent\", action == Action::\"tool:get-tiny-image\", resource);"
    );
    server.activate(&schema, &policies);
    let upstream = HttpUpstream::start(&interop);
    let plane = server.url.clone();
    let proxy = HttpProxy::start(&plane, &enforcer, &upstream.url, &["--hide-unpermitted-tools"]);
    let list = json!([{"method": "tools/list"}, {"method": "wait"}, {"method": "tools/list"}]);
    let names = |answer: &Value| -> Vec<String> {
        let mut names: Vec<String> = answer["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let shared = [
        "echo",
        "get-env",
        "get-sum",
        "trigger-long-running-operation",
        "trigger-sampling-request",
    ];
    let b = http_agent(&interop, &proxy.url, Some(&second), &json!([list[0]]), || {});
    let mut expected: Vec<&str> = shared.to_vec();
    expected.push("get-tiny-image");
    expected.sort_unstable();
    assert_eq!(names(&b[0]), expected);
    // The control plane goes away: the proxy cannot tell what is permitted and shows nothing.
    let a = http_agent(&interop, &proxy.url, Some(&agent), &list, || kill_now(&server));
    assert_eq!(names(&a[0]), shared);
    assert_eq!(a[1]["ok"], false, "{}", a[1]);
    assert!(
        a[1]["error"].as_str().unwrap().contains("control_plane_unavailable"),
        "{}",
        a[1]
    );
}
