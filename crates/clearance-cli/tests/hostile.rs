//! A hostile day (issue #13), against the real binary: input that once crashed or
//! misled the server. One test per item; each fails on the server before its fix.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "end-to-end tests: a failure must abort loudly"
)]

mod common;

use common::{ADMIN_KEY, SCHEMA, Server};
use serde_json::json;

/// A small policy or schema nesting brackets thousands deep used to overflow the stack in
/// validate and push and kill the process. It is refused before parsing, and the server
/// goes on answering.
#[test]
fn deeply_nested_policies_and_schemas_are_refused_not_fatal() {
    let server = Server::start();
    let deep = 5_000;
    let nested_policy = |open: &str, close: &str| {
        format!(
            "permit (principal, action == Action::\"ping\", resource) when {{ {}1{} == 1 }};",
            open.repeat(deep),
            close.repeat(deep)
        )
    };
    let bundles = [
        (SCHEMA.to_owned(), nested_policy("(", ")")),
        (SCHEMA.to_owned(), nested_policy("[", "]")),
        (
            format!("{SCHEMA}\ntype Deep = {}Long{};", "Set<".repeat(deep), ">".repeat(deep)),
            String::new(),
        ),
    ];
    for (schema, policies) in bundles {
        for path in ["/v1/policies/validate", "/v1/policies"] {
            let (status, body) = server.post(path, Some(ADMIN_KEY), &json!({"schema": schema, "policies": policies}));
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (400, Some("policy_invalid")),
                "{path}: {body}"
            );
            assert!(
                body["error"]["message"].as_str().unwrap().contains("more than 24 deep"),
                "{body}"
            );
        }
        let (status, _) = server.call("GET", "/livez", None, None);
        assert_eq!(status, 200, "the server must still be alive");
    }
}

/// About 50 bad keys from one address used to make every request from it 429 for 60 s,
/// admin and agents included, with no `Retry-After`. Now only the bad keys are slowed.
#[test]
fn a_flood_of_bad_keys_does_not_lock_out_good_ones() {
    let server = Server::start();
    let agent = server.agent("bot");
    let http = reqwest::blocking::Client::new();
    let mut last = None;
    for _ in 0..80 {
        let res = http
            .get(format!("{}/v1/whoami", server.url))
            .bearer_auth("clr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            .send()
            .unwrap();
        last = Some((res.status().as_u16(), res.headers().get("retry-after").cloned()));
    }
    let (status, retry_after) = last.unwrap();
    assert_eq!(status, 429);
    let seconds: u64 = retry_after
        .expect("a 429 carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&seconds), "{seconds}");
    for key in [ADMIN_KEY, agent.as_str()] {
        let (status, body) = server.call("GET", "/v1/whoami", Some(key), None);
        assert_eq!(status, 200, "{body}");
    }
}

/// SIGTERM used to wait forever while a revocation stream or a half-sent request was
/// open. Streams now end at once, and what is still open after the grace period (10 s)
/// is dropped: the process exits.
#[test]
fn sigterm_finishes_with_a_stream_and_a_half_sent_request_open() {
    use std::io::{Read as _, Write as _};
    let server = Server::start();
    let addr = server.url.trim_start_matches("http://").to_owned();
    // A revocation stream, read until it has said something.
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET /v1/revocations/stream?since=0 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 64];
    let n = stream.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    // A request whose body never finishes arriving.
    let half = half_sent_request(&addr);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let took = server.terminate(std::time::Duration::from_secs(20));
    let took = took.expect("the server did not exit after SIGTERM");
    assert!(took < std::time::Duration::from_secs(15), "exited after {took:?}");
    drop((stream, half));
}

/// When the server's stderr could not be written (a closed pipe, a full disk), every
/// request that logged lost its connection: the log subscriber reported its own write
/// error with a panicking `eprintln!`. A lost log line must never cost a request.
#[test]
fn a_stderr_that_cannot_be_written_does_not_take_requests_down() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--bootstrap-admin-key",
            ADMIN_KEY,
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .env("CLEARANCE_REQUIRE_ENVIRONMENT", "false")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let url = lines
        .find_map(|l| l.ok()?.strip_prefix("clearance: listening on ").map(str::to_owned))
        .expect("the server did not start");
    // Nobody reads the server's stderr any more: every log line it writes now fails.
    drop(lines);
    let http = reqwest::blocking::Client::new();
    for _ in 0..5 {
        let res = http
            .get(format!("{url}/v1/whoami"))
            .bearer_auth("clr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            .send()
            .expect("the request lost its connection");
        assert_eq!(res.status().as_u16(), 401);
    }
    let res = http
        .get(format!("{url}/v1/whoami"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    // The sequencer (which used to stop) still records decisions, and says it is ready.
    let post = |path: &str, key: &str, body: serde_json::Value| {
        let res = http
            .post(format!("{url}{path}"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .expect("the request lost its connection");
        (
            res.status().as_u16(),
            res.json::<serde_json::Value>().unwrap_or_default(),
        )
    };
    let (status, _) = post("/v1/principals", ADMIN_KEY, json!({"id": "bot", "roles": ["agent"]}));
    assert_eq!(status, 201);
    let (_, issued) = post("/v1/principals/bot/keys", ADMIN_KEY, json!({}));
    let agent = issued["key"].as_str().unwrap().to_owned();
    let (_, pushed) = post(
        "/v1/policies",
        ADMIN_KEY,
        json!({"schema": SCHEMA, "policies": common::POLICIES}),
    );
    let version = pushed["version"].as_str().unwrap().to_owned();
    let (status, _) = post(&format!("/v1/policies/{version}/activate"), ADMIN_KEY, json!({}));
    assert_eq!(status, 200);
    for amount in [5, 900, 2000, 7] {
        let (status, body) = post(
            "/v1/authorize",
            &agent,
            json!({"action": "refund", "resource": {"type": "Tool", "id": "stripe"}, "arguments": common::refund(amount)}),
        );
        assert_eq!(status, 200, "{body}");
        assert!(body["log_index"].is_u64(), "{body}");
    }
    let res = http.get(format!("{url}/readyz")).send().unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let _ = child.kill();
    let _ = child.wait();
}

/// A request that takes too long is answered 408 with the stable JSON error body, not an
/// empty one (the timeout layer used to sit outside the error mapping).
#[test]
fn a_request_that_times_out_gets_a_json_408() {
    use std::io::Read as _;
    let server = Server::start();
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut half = half_sent_request(&addr);
    half.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let mut answer = Vec::new();
    let _ = half.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    assert!(body.contains(r#""code":"timeout""#), "{answer}");
}

/// The database holds key hashes and every decision: it is created readable by its owner
/// only, like the keys beside it (it used to follow the umask, 0644).
#[test]
fn the_database_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let server = Server::start();
    let _ = server.agent("bot");
    for name in [
        "clearance.db",
        "clearance.db-wal",
        "clearance.db-shm",
        "signing-key.pem",
        "log-key.pem",
    ] {
        let path = server.data_dir.join(name);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
    }
}

/// A 4 MiB tmpfs, unmounted when dropped. Needs root (as CI has); `None` elsewhere.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            return Some(Self(dir));
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must run the disk-full test"
        );
        eprintln!("skipped: the disk-full test needs to mount a tmpfs (root)");
        None
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0.path()).status();
    }
}

/// While the disk is full authorize fails closed (503, no clearance); once space is freed
/// it must work again by itself, and /readyz with it. It used to stay broken until a
/// restart: a connection whose COMMIT failed went back to the pool still "inside" a
/// transaction and refused every later one.
#[test]
fn a_full_disk_fails_closed_then_heals_by_itself() {
    let Some(disk) = SmallDisk::mount() else { return };
    let server = Server::start_in(&disk.0.path().join("data"), &[]);
    let bot = server.agent("bot");
    server.activate(common::SCHEMA, common::POLICIES);
    let refund = || server.authorize(&bot, "refund", common::refund(10));
    assert_eq!(refund().0, 200);

    let filler = disk.0.path().join("filler");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&filler).unwrap();
        while f.write_all(&[0u8; 65536]).is_ok() {}
    }
    for _ in 0..5 {
        let (status, body) = refund();
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("audit_unavailable")),
            "{body}"
        );
        assert!(body.get("clearance").is_none());
    }
    assert_eq!(server.call("GET", "/readyz", None, None).0, 503);

    std::fs::remove_file(&filler).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.call("GET", "/readyz", None, None).0 != 200 {
        assert!(std::time::Instant::now() < deadline, "/readyz did not recover");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for _ in 0..10 {
        let (status, body) = refund();
        assert_eq!(status, 200, "{body}");
        assert!(body["clearance"].is_string());
    }
    drop(server);
}

/// An admin's request whose body never finishes arriving, held open.
fn half_sent_request(addr: &str) -> std::net::TcpStream {
    use std::io::Write as _;
    let mut half = std::net::TcpStream::connect(addr).unwrap();
    write!(
        half,
        "POST /v1/principals HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    )
    .unwrap();
    half
}

/// Whether the server has closed `conn`: a read sees the end (or a reset) within `within`
/// (whatever it sends meanwhile is read and dropped).
fn closed_within(conn: &mut std::net::TcpStream, within: std::time::Duration) -> bool {
    use std::io::Read as _;
    let deadline = std::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        conn.set_read_timeout(Some(left)).unwrap();
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Idle and half-sent connections used to stay open for as long as their peer liked.
/// Now a connection that has not sent a whole request head within the header timeout is
/// closed, and so is one with nothing moving for the idle timeout; a revocation stream
/// (which writes a heartbeat every 2 s) stays.
#[test]
fn idle_and_half_sent_connections_are_closed() {
    use std::io::{Read as _, Write as _};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(
        &dir.path().join("data"),
        &["--header-timeout", "1", "--idle-timeout", "3"],
    );
    let addr = server.url.trim_start_matches("http://").to_owned();
    // Connected, never a byte sent.
    let mut silent = std::net::TcpStream::connect(&addr).unwrap();
    // Half a request line, then nothing.
    let mut half_head = std::net::TcpStream::connect(&addr).unwrap();
    half_head.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n").unwrap();
    // One answered request on a kept-alive connection, then nothing.
    let mut kept = std::net::TcpStream::connect(&addr).unwrap();
    write!(kept, "GET /livez HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut first = [0u8; 512];
    let n = kept.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    // A revocation stream, quiet but for its heartbeats.
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET /v1/revocations/stream?since=0 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\r\n"
    )
    .unwrap();
    let n = stream.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));

    assert!(
        closed_within(&mut silent, Duration::from_secs(5)),
        "a silent connection stayed open"
    );
    assert!(
        closed_within(&mut half_head, Duration::from_secs(5)),
        "a half-sent head stayed open"
    );
    assert!(
        closed_within(&mut kept, Duration::from_secs(8)),
        "an idle kept-alive connection stayed open"
    );
    assert!(
        !closed_within(&mut stream, Duration::from_secs(2)),
        "the revocation stream was closed as idle"
    );
    // And the server still answers.
    let (status, _) = server.call("GET", "/livez", None, None);
    assert_eq!(status, 200);
}

/// Thousands of held connections used to pile up. Past the per-address cap (and the
/// server's limit) a new connection is closed on arrival, counted in
/// `clearance_connections_refused`; once held ones go, new ones are served again.
#[test]
fn connections_past_the_limits_are_refused_on_arrival() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(
        &dir.path().join("data"),
        &["--max-connections", "6", "--max-connections-per-address", "4"],
    );
    let addr = server.url.trim_start_matches("http://").to_owned();
    let held: Vec<_> = (0..4).map(|_| std::net::TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut over = std::net::TcpStream::connect(&addr).unwrap();
    assert!(
        closed_within(&mut over, Duration::from_secs(2)),
        "a fifth connection from one address was kept"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    let (status, body) = server.call("GET", "/metrics", Some(ADMIN_KEY), None);
    assert_eq!(status, 200, "{body}");
    let text = body.as_str().unwrap_or_default().to_owned();
    assert!(
        text.contains(r#"clearance_connections_refused_total{reason="address_full"} 1"#),
        "{text}"
    );
}

/// A private CA and a server certificate for 127.0.0.1 signed by it, made with the
/// `openssl` command as an operator would: (CA certificate, server certificate, key).
fn private_ca(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command is needed for the TLS test");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
    ]
    .concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

/// `serve` speaks HTTPS with a certificate and key, and every client trusts a private CA
/// with `--ca-cert`: the API, the clearance's issuer, and `verify` fetching the JWKS.
#[test]
fn tls_on_serve_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(dir.path());
    let mut server = Server::start_in(
        &dir.path().join("data"),
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    );
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);
    // Plain HTTP on the TLS port gets no answer.
    let plain = server.url.replacen("https://", "http://", 1);
    assert!(reqwest::blocking::get(format!("{plain}/livez")).is_err());
    // Nor does a client that does not trust the CA.
    assert!(reqwest::blocking::get(format!("{}/livez", server.url)).is_err());
    server.ca_cert = Some(ca);
    server.activate(SCHEMA, common::POLICIES);
    let agent = server.agent("tls-agent");
    let (status, body) = server.authorize(&agent, "refund", common::refund(20));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "allow", "{body}");
    let token = body["clearance"].as_str().unwrap();
    assert_eq!(common::jws_part(token, 1)["iss"], server.url.as_str());
    let out = server.cli(None, &["verify", token]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Without the CA, `verify` cannot fetch the JWKS: it says so and fails.
    let out = std::process::Command::new(common::BIN)
        .args(["verify", token, "--server", &server.url])
        .env_remove("CLEARANCE_CA_CERT")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot fetch the JWKS"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A certificate file that is not PEM is refused with a clear message.
    let out = std::process::Command::new(common::BIN)
        .args(["verify", token, "--server", &server.url, "--ca-cert"])
        .arg(dir.path().join("server.ext"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds no PEM certificate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Oversized request heads used to get the parser's bare 431 with an empty body. Too many
/// header fields, or too many header bytes, are now `431 headers_too_large` with the JSON
/// error body, like every other refusal.
#[test]
fn oversized_heads_get_a_json_431() {
    let server = Server::start();
    let http = reqwest::blocking::Client::new();
    let mut many = http.get(format!("{}/livez", server.url));
    for i in 0..150 {
        many = many.header(format!("x-filler-{i}"), "1");
    }
    let big = http
        .get(format!("{}/livez", server.url))
        .header("x-filler", "a".repeat(40 * 1024));
    for request in [many, big] {
        let res = request.send().unwrap();
        assert_eq!(res.status().as_u16(), 431);
        let body: serde_json::Value = res.json().unwrap();
        assert_eq!(body["error"]["code"], "headers_too_large", "{body}");
    }
    let (status, _) = server.call("GET", "/livez", None, None);
    assert_eq!(status, 200);
}
