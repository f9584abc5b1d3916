//! Start the real `clearance` binary on a free loopback port and talk to it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test setup: a failure must abort loudly"
)]
#![allow(dead_code, reason = "each test binary uses a different part of the helpers")]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_clearance");
pub const ADMIN_KEY: &str = "clr_e2e-admin-key-0123456789abcdefghijklmnop";

pub const SCHEMA: &str = r#"
entity Agent;
entity Tool;
action refund appliesTo {
    principal: Agent,
    resource: Tool,
    context: { arguments: { amount: Long, currency: String }, request_time: Long }
};
action ping appliesTo { principal: Agent, resource: Tool };
"#;

pub const POLICIES: &str = r#"
@id("small-refunds")
permit (principal, action == Action::"refund", resource)
when { context.arguments.amount <= 500 };

@id("no-large-refunds")
forbid (principal, action == Action::"refund", resource)
when { context.arguments.amount > 1000 };

// Overflows for 777: Cedar would skip this forbid and let `small-refunds` allow.
@id("overflowing-check")
forbid (principal, action == Action::"refund", resource)
when { context.arguments.amount == 777 && context.request_time * 1000000000000 > 0 };

@id("overflow-bait")
permit (principal, action == Action::"refund", resource)
when { context.arguments.amount == 777 };
"#;

#[derive(Debug)]
pub struct Server {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    stderr: Arc<Mutex<String>>,
    _dir: Option<tempfile::TempDir>,
    /// A private CA to trust, for a server started with TLS.
    pub ca_cert: Option<PathBuf>,
}

impl Server {
    /// A fresh control plane in a new temporary data directory.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let mut s = Self::start_in(&data_dir, &[]);
        s._dir = Some(dir);
        s
    }

    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Self {
        Self::try_start_in(data_dir, extra).unwrap_or_else(|e| panic!("server did not start: {e}"))
    }

    pub fn try_start_in(data_dir: &Path, extra: &[&str]) -> Result<Self, String> {
        // Benchmarks compare builds: `CLEARANCE_BIN` names another build of the server.
        let bin = std::env::var("CLEARANCE_BIN").unwrap_or_else(|_| BIN.to_owned());
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(["--bootstrap-admin-key", ADMIN_KEY])
            .args(extra)
            .env("RUST_LOG", "info")
            // Most tests exercise other stages; the environment tests turn this back on.
            .env("CLEARANCE_REQUIRE_ENVIRONMENT", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("clearance: listening on ") {
                    let _ = tx.send(url.to_owned());
                }
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!("{status}: {}", stderr.lock().unwrap()));
            }
        };
        Ok(Self {
            child,
            url,
            data_dir: data_dir.to_owned(),
            stderr,
            _dir: None,
            ca_cert: None,
        })
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, and SIGKILL if it has not exited within 10 s.
    pub fn stop(self) {
        // Dropping kills what did not stop.
        let _ = self.terminate(Duration::from_secs(10));
    }

    /// SIGTERM, then wait up to `within` for the process to exit: how long it took, or
    /// `None` if it was still running (it is killed when dropped).
    pub fn terminate(mut self, within: Duration) -> Option<Duration> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let started = Instant::now();
        while started.elapsed() < within {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<String>) -> (u16, Value) {
        let mut client = reqwest::blocking::Client::builder();
        if let Some(ca) = &self.ca_cert {
            client = client.add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap());
        }
        let client = client.build().unwrap();
        let mut req = client.request(method.parse().unwrap(), format!("{}{path}", self.url));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let res = req.send().unwrap();
        let status = res.status().as_u16();
        let text = res.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub fn post(&self, path: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
        self.call("POST", path, key, Some(body.to_string()))
    }

    /// Create an agent and return its key.
    pub fn agent(&self, id: &str) -> String {
        let (s, b) = self.post(
            "/v1/principals",
            Some(ADMIN_KEY),
            &json!({"id": id, "roles": ["agent"]}),
        );
        assert_eq!(s, 201, "{b}");
        let (s, b) = self.post(&format!("/v1/principals/{id}/keys"), Some(ADMIN_KEY), &json!({}));
        assert_eq!(s, 201, "{b}");
        b["key"].as_str().unwrap().to_owned()
    }

    /// Push and activate the test bundle; returns its version.
    pub fn activate(&self, schema: &str, policies: &str) -> String {
        let (s, b) = self.post(
            "/v1/policies",
            Some(ADMIN_KEY),
            &json!({"schema": schema, "policies": policies}),
        );
        assert!(s == 201 || s == 200, "{b}");
        let version = b["version"].as_str().unwrap().to_owned();
        let (s, b) = self.post(&format!("/v1/policies/{version}/activate"), Some(ADMIN_KEY), &json!({}));
        assert_eq!(s, 200, "{b}");
        version
    }

    pub fn authorize(&self, key: &str, action: &str, arguments: Value) -> (u16, Value) {
        self.post(
            "/v1/authorize",
            Some(key),
            &json!({"action": action, "resource": {"type": "Tool", "id": "stripe"}, "arguments": arguments}),
        )
    }

    /// Run the CLI against this server.
    pub fn cli(&self, key: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("CLEARANCE_SERVER", &self.url)
            .env_remove("CLEARANCE_API_KEY")
            .env_remove("CLEARANCE_CA_CERT");
        if let Some(ca) = &self.ca_cert {
            cmd.env("CLEARANCE_CA_CERT", ca);
        }
        if let Some(k) = key {
            cmd.env("CLEARANCE_API_KEY", k);
        }
        cmd.output().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn refund(amount: i64) -> Value {
    json!({"amount": amount, "currency": "EUR"})
}

impl Server {
    /// Create a principal with these roles and return a key for it.
    pub fn principal(&self, id: &str, roles: &[&str]) -> String {
        let (s, b) = self.post("/v1/principals", Some(ADMIN_KEY), &json!({"id": id, "roles": roles}));
        assert_eq!(s, 201, "{b}");
        let (s, b) = self.post(&format!("/v1/principals/{id}/keys"), Some(ADMIN_KEY), &json!({}));
        assert_eq!(s, 201, "{b}");
        b["key"].as_str().unwrap().to_owned()
    }

    /// The process id, to kill the control plane from a test.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every log entry so far, decoded as JSON.
    pub fn log_events(&self) -> Vec<Value> {
        use base64::Engine as _;
        let (s, b) = self.call("GET", "/v1/log/entries?start=0&end=1000", Some(ADMIN_KEY), None);
        assert_eq!(s, 200, "{b}");
        b["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(e["entry"].as_str().unwrap())
                    .unwrap();
                serde_json::from_slice(&bytes).unwrap()
            })
            .collect()
    }
}

/// A stand-in for a broken control plane, on a free loopback port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// Nothing listens.
    Down,
    /// Accepts connections and never answers.
    Slow,
    /// Answers every request `500`.
    ServerError,
    /// Answers every request `200` with a body that is not JSON.
    Malformed,
}

/// Start a broken control plane; returns its URL. Its threads live as long as the test.
pub fn broken_plane(kind: Broken) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    if kind == Broken::Down {
        drop(listener);
        return url;
    }
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                use std::io::{Read as _, Write as _};
                if kind == Broken::Slow {
                    std::thread::sleep(Duration::from_secs(120));
                    return;
                }
                let mut buf = [0u8; 8192];
                let _ = stream.read(&mut buf);
                let (status, body) = match kind {
                    Broken::ServerError => ("500 Internal Server Error", "{\"error\": \"boom\"}"),
                    _ => ("200 OK", "{this is not json"),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    url
}

/// A small real HTTP service for the proxy to protect. It counts the requests that reach
/// it and answers each with what it saw.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Value>>>,
}

impl Upstream {
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let log = Arc::clone(&log);
                std::thread::spawn(move || serve_one(stream, &log));
            }
        });
        Self { url, seen }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

fn serve_one(stream: std::net::TcpStream, log: &Mutex<Vec<Value>>) {
    use std::io::{Read as _, Write as _};
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = serde_json::Map::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
                if k == "content-length" {
                    length = v.parse().unwrap();
                }
                headers.insert(k, Value::String(v));
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        let mut parts = request_line.split_whitespace();
        let seen = json!({
            "method": parts.next().unwrap_or(""),
            "target": parts.next().unwrap_or(""),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        });
        let count = {
            let mut l = log.lock().unwrap();
            l.push(seen.clone());
            l.len()
        };
        let answer = json!({"upstream": "payments", "count": count, "seen": seen}).to_string();
        // One write, no Nagle: a response split over writes meets delayed ACKs (40 ms).
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        let mut out = stream.try_clone().unwrap();
        out.set_nodelay(true).unwrap();
        out.write_all(response.as_bytes()).unwrap();
    }
}

/// A running `clearance proxy` (killed on drop).
#[derive(Debug)]
pub struct Proxy {
    child: Child,
    pub url: String,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// Start `clearance proxy` for resource `Api/payments` on a free port, with its own
    /// replay cache under `dir`.
    pub fn start(
        server_url: &str,
        upstream: &str,
        mode: &str,
        agent: &str,
        enforcer: &str,
        dir: &Path,
        flags: &[&str],
    ) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut child = Command::new(BIN)
            .args([
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                upstream,
                "--mode",
                mode,
            ])
            .args(["--resource", "Api/payments"])
            .arg("--replay-cache")
            .arg(dir.join(format!("replay-{mode}-{n}")))
            .args(flags)
            .env("CLEARANCE_SERVER", server_url)
            .env("CLEARANCE_API_KEY", agent)
            .env("CLEARANCE_ENFORCER_KEY", enforcer)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let url = announced(&mut child, "clearance proxy: listening on ");
        Self { child, url }
    }
}

/// Wait (up to 30 s) for a line on `child`'s stderr that starts with `prefix`, and return
/// the rest of it: how a started process says where it listens.
pub fn announced(child: &mut Child, prefix: &'static str) -> String {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(prefix) {
                let _ = tx.send(rest.to_owned());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no `{prefix}` line: {:?}", child.try_wait()))
}

/// A JWS segment decoded as JSON: 0 the header, 1 the claims. Only for reading in tests;
/// nothing here verifies anything.
pub fn jws_part(token: &str, part: usize) -> Value {
    use base64::Engine as _;
    let segment = token.split('.').nth(part).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(segment)
            .unwrap(),
    )
    .unwrap()
}

/// The PostgreSQL server tests and benchmarks use.
pub fn pg_url() -> String {
    std::env::var("CLEARANCE_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Whether something listens where `url` points (a quick TCP check, no login).
pub fn pg_reachable(url: &str) -> bool {
    let addr = url
        .rsplit_once('@')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|hp| std::net::ToSocketAddrs::to_socket_addrs(hp).ok()?.next());
    addr.is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

/// Drop a schema a test or benchmark made (best effort).
pub fn drop_schema(url: &str, schema: &str) {
    let _ = Command::new("psql")
        .args([url, "-qc", &format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Give other nodes' data directories the first node's signing and log keys.
pub fn share_keys(from: &Path, to: &[PathBuf]) {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    for dir in to {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .unwrap();
        for key in ["signing-key.pem", "log-key.pem"] {
            std::fs::copy(from.join(key), dir.join(key)).unwrap();
            std::fs::set_permissions(dir.join(key), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

/// Start `count` nodes on one PostgreSQL schema, each in its own data directory under
/// `dir`, sharing the first one's keys.
pub fn start_cluster(dir: &Path, url: &str, schema: &str, origin: &str, count: usize, extra: &[&str]) -> Vec<Server> {
    let dirs: Vec<PathBuf> = (0..count).map(|i| dir.join(format!("node{i}"))).collect();
    let args = |extra: &[&str]| -> Vec<String> {
        ["--database", url, "--database-schema", schema, "--origin", origin]
            .iter()
            .chain(extra)
            .map(|s| (*s).to_owned())
            .collect()
    };
    let args = args(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = Server::start_in(&dirs[0], &args);
    share_keys(&dirs[0], &dirs[1..]);
    let mut nodes = vec![first];
    nodes.extend(dirs[1..].iter().map(|d| Server::start_in(d, &args)));
    nodes
}

/// Agents authorizing until stopped, spread over `urls` (a client whose node fails goes
/// on with the next), and an auditor saving every checkpoint it reads: what the crash and
/// cluster tests put a control plane through while they kill it.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// `(log index, execution id)` of every decision answered with a clearance.
    pub answered: Arc<Mutex<Vec<(u64, String)>>>,
    /// Every checkpoint note read.
    pub notes: Arc<Mutex<Vec<String>>>,
}

impl Load {
    /// `clients` agents with `key`, each request's arguments `arguments(n)`.
    pub fn start(urls: &[String], key: &str, clients: usize, arguments: fn(usize) -> Value) -> Self {
        use std::sync::atomic::Ordering;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answered: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
        let notes: Arc<Mutex<Vec<String>>> = Arc::default();
        let http = || {
            reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap()
        };
        let mut threads = Vec::new();
        for client in 0..clients {
            let (urls, key, stop, answered) = (urls.to_vec(), key.to_owned(), Arc::clone(&stop), Arc::clone(&answered));
            threads.push(std::thread::spawn(move || {
                let http = http();
                let mut n = client;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let body = json!({"action": "refund", "resource": {"type": "Tool", "id": "t"},
                                      "arguments": arguments(n)});
                    let url = &urls[n % urls.len()];
                    let Ok(res) = http
                        .post(format!("{url}/v1/authorize"))
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                    else {
                        continue;
                    };
                    let Ok(v) = res.json::<Value>() else { continue };
                    if v["clearance"].is_string() {
                        answered.lock().unwrap().push((
                            v["log_index"].as_u64().unwrap(),
                            v["execution_id"].as_str().unwrap().to_owned(),
                        ));
                    }
                }
            }));
        }
        let (urls, stop_notes, saved) = (urls.to_vec(), Arc::clone(&stop), Arc::clone(&notes));
        threads.push(std::thread::spawn(move || {
            let http = http();
            let mut i = 0;
            while !stop_notes.load(Ordering::Relaxed) {
                i += 1;
                // Asking for a fresh one (auditor key) where allowed, else the latest.
                let url = &urls[i % urls.len()];
                if let Ok(r) = http
                    .post(format!("{url}/v1/log/checkpoint"))
                    .bearer_auth(ADMIN_KEY)
                    .send()
                    && r.status().is_success()
                    && let Ok(t) = r.text()
                {
                    saved.lock().unwrap().push(t);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
        Self {
            stop,
            threads,
            answered,
            notes,
        }
    }

    /// Stop every client and wait for them.
    pub fn stop(self) -> (Vec<(u64, String)>, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let answered = self.answered.lock().unwrap().clone();
        let notes = self.notes.lock().unwrap().clone();
        (answered, notes)
    }
}

/// Every answered clearance is in the log at its index, once, with a valid inclusion
/// proof under `last`; and every checkpoint seen is consistent with `last`. Reads
/// through `via`.
pub fn assert_all_proven(
    via: &Server,
    answered: &[(u64, String)],
    notes: &[String],
    verifier: &clearance_log::NoteVerifier,
    last: &clearance_log::Checkpoint,
) {
    use base64::Engine as _;
    let decode = |list: &Value| -> Vec<Vec<u8>> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|h| {
                base64::engine::general_purpose::STANDARD
                    .decode(h.as_str().unwrap())
                    .unwrap()
            })
            .collect()
    };
    assert!(
        answered.len() > 50,
        "too little load to mean anything: {}",
        answered.len()
    );
    let mut indexes: Vec<u64> = answered.iter().map(|a| a.0).collect();
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), answered.len(), "two answers share a log index");
    // Every index from 0 to the size is there exactly once.
    let mut entries: Vec<Vec<u8>> = Vec::new();
    while (entries.len() as u64) < last.size {
        let start = entries.len() as u64;
        let end = (start + 1000).min(last.size);
        let (_, page) = via.call(
            "GET",
            &format!("/v1/log/entries?start={start}&end={end}"),
            Some(ADMIN_KEY),
            None,
        );
        for (i, e) in page["entries"].as_array().unwrap().iter().enumerate() {
            assert_eq!(
                e["index"].as_u64(),
                Some(start + i as u64),
                "gap or duplicate at {}",
                start + i as u64
            );
            let bytes = base64::engine::general_purpose::STANDARD.decode(e["entry"].as_str().unwrap());
            entries.push(bytes.unwrap());
        }
    }
    for (index, id) in answered {
        let entry = &entries[usize::try_from(*index).unwrap()];
        let event: Value = serde_json::from_slice(entry).unwrap();
        assert_eq!(event["execution_id"].as_str(), Some(id.as_str()), "entry {index}");
        assert_eq!(event["decision"], "allow");
        let path = format!("/v1/log/proof/inclusion?index={index}&size={}", last.size);
        let (_, p) = via.call("GET", &path, None, None);
        let leaf = clearance_log::leaf_hash(entry);
        clearance_log::verify_inclusion(*index, last.size, &leaf, &decode(&p["proof"]), &last.root).unwrap();
    }
    assert!(!notes.is_empty());
    for note in notes {
        let cp = clearance_log::Checkpoint::open(note, verifier).unwrap();
        if cp.size == 0 || cp.size == last.size {
            continue;
        }
        let path = format!("/v1/log/proof/consistency?from={}&to={}", cp.size, last.size);
        let (_, c) = via.call("GET", &path, None, None);
        clearance_log::verify_consistency(cp.size, last.size, &cp.root, &last.root, &decode(&c["proof"])).unwrap();
    }
}

/// `clearance exec --parent TOKEN -- sh -c 'echo $$ > PIDFILE; exec sleep 60'` against
/// `url` with these keys, its replay cache in `dir`; returns once the command runs, with
/// the child and the pid file. `issuer` is given when `url` is not the clearances' `iss`.
pub fn governed_sleeper(
    url: &str,
    keys: (&str, &str),
    parent: &str,
    dir: &Path,
    name: &str,
    issuer: Option<&str>,
) -> (Child, PathBuf) {
    let (agent, enforcer) = keys;
    let pidfile = dir.join(format!("{name}.pid"));
    let script = format!("echo $$ > {}; exec sleep 60", pidfile.display());
    let mut cmd = Command::new(BIN);
    cmd.args(["exec", "--parent", parent, "--", "sh", "-c", &script])
        .current_dir(dir)
        .env("CLEARANCE_SERVER", url)
        .env("CLEARANCE_API_KEY", agent)
        .env("CLEARANCE_ENFORCER_KEY", enforcer)
        .env("CLEARANCE_REPLAY_CACHE", dir.join("replay"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(iss) = issuer {
        cmd.env("CLEARANCE_ISSUER", iss);
    }
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&pidfile).map_or(true, |p| p.trim().is_empty()) {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, pidfile)
}

/// A benchmark setting from the environment, or its default.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The `p` quantile of sorted durations (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
