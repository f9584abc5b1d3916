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
