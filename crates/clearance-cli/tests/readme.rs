//! README.md, run as a new user runs it: every ```sh block, in order, in one shell,
//! against the real binary, with each command's exit code checked against the one the
//! README documents (`exit code N` in the command's comment, else 0) and the outcomes it
//! describes checked below. When the README changes, this test runs the new text.
//!
//! What the test supplies, as the reader would:
//! - The first block (`cargo run --release --bin clearance -- serve`, `cargo test`) is
//!   the README's own instructions for the terminal the server runs in: this test starts
//!   that server (`clearance serve`, no flags) in a directory standing for the repository
//!   root (holding `examples/`), on a free port given to the walkthrough as
//!   `CLEARANCE_SERVER`, and is itself the test command.
//! - The one line the README asks the reader to fill in, `export
//!   CLEARANCE_API_KEY=clr_...`, gets the admin key that server printed.
//! - `clearance` is the binary under test (first on PATH); a `clearance serve` line runs
//!   in the background, as in its own terminal, until it says it listens.
//! - The scale-out block's ports (7801, 7802) are replaced by free ones, and its nodes
//!   keep their tables in a schema of their own (`CLEARANCE_DATABASE_SCHEMA`), dropped
//!   afterwards. It needs PostgreSQL at `CLEARANCE_TEST_DATABASE_URL` (the README's URL by
//!   default), and the MCP block needs `npx` and the npm registry: without them each is
//!   skipped, saying so, except in CI.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test: a failure must abort loudly"
)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, pg_reachable, pg_url};

const README: &str = include_str!("../../../README.md");
/// The whole walkthrough, npx downloads and all, must finish within this.
const TIMEOUT: Duration = Duration::from_secs(300);
/// The database URL the scale-out block names.
const README_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// One ```sh block: its lines as written.
#[derive(Debug)]
struct Block {
    lines: Vec<String>,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => out.push(Block {
                lines: current.take().unwrap(),
            }),
            (Some(lines), l) => lines.push(l.to_owned()),
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "README.md has an unclosed ```sh block");
    out
}

/// One command of a block: continuation lines joined, and the exit code its comment (or
/// the comment lines right above it) documents.
#[derive(Debug, Clone)]
struct Step {
    text: String,
    expect: i32,
}

fn documented_exit(comment: &str) -> Option<i32> {
    let at = comment.find("exit code ")?;
    let digits: String = comment[at + "exit code ".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn steps(block: &Block) -> Vec<Step> {
    let mut out = Vec::new();
    let mut comment = String::new();
    let mut pending = String::new();
    for line in &block.lines {
        let trimmed = line.trim();
        if pending.is_empty() && trimmed.starts_with('#') {
            comment.push_str(trimmed);
            comment.push('\n');
            continue;
        }
        if pending.is_empty() && trimmed.is_empty() {
            comment.clear();
            continue;
        }
        pending.push_str(line);
        if pending.ends_with('\\') {
            // Kept as written: bash joins the lines.
            pending.push('\n');
            continue;
        }
        // A trailing comment (` # ...`) documents the command it ends.
        let own = pending
            .rsplit_once(" # ")
            .map(|(_, c)| c.to_owned())
            .unwrap_or_default();
        let expect = documented_exit(&own).or_else(|| documented_exit(&comment)).unwrap_or(0);
        out.push(Step {
            text: std::mem::take(&mut pending),
            expect,
        });
        comment.clear();
    }
    assert!(pending.is_empty(), "a README command ends in a line continuation");
    out
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process group killed when dropped, so a failing test leaves nothing running.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        // `kill -s KILL -- -PGID`: procps-ng 4.0.2 reads `kill -KILL -PGID` as a signal to
        // the wrong group (`-19717` became `-1`: every process).
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

/// `clearance serve` as the README's first block starts it, in `root`: its URL and the
/// admin key it printed.
fn start_server(root: &Path) -> (Group, String, String) {
    let mut child = Command::new(BIN)
        .arg("serve")
        .current_dir(root)
        .process_group(0)
        .env("CLEARANCE_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let key_tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(key) = line.trim().strip_prefix("clr_") {
                let _ = key_tx.send(("key", format!("clr_{key}")));
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("clearance: listening on ") {
                let _ = tx.send(("url", url.to_owned()));
            }
        }
    });
    let (mut url, mut key) = (None, None);
    while url.is_none() || key.is_none() {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(("url", u)) => url = Some(u),
            Ok((_, k)) => key = Some(k),
            Err(_) => {
                let _ = child.kill();
                panic!("`clearance serve` printed no URL and admin key");
            }
        }
    }
    (Group(child), url.unwrap(), key.unwrap())
}

fn required(what: &str) -> bool {
    let ci = std::env::var_os("CI").is_some() || std::env::var_os("CLEARANCE_REQUIRE_INTEROP").is_some();
    if !ci {
        eprintln!("skipped the README's {what} block: its prerequisite is missing (CI requires it)");
    }
    ci
}

fn has_npx() -> bool {
    Command::new("npx")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The script one shell runs: each step's stdout, stderr and exit code in `out/N.*`.
fn script(steps: &[Step], admin_key: &str, ports: &[(&str, String)]) -> String {
    let mut s = String::from(
        "set -u\nmkdir -p \"$CLEARANCE_README_OUT\"\n\
         # Servers started in the background stop with the walkthrough.\n\
         trap 'kill $(jobs -p) 2>/dev/null' EXIT\n",
    );
    let placeholder = "export CLEARANCE_API_KEY=clr_...";
    for (n, step) in steps.iter().enumerate() {
        let mut text = step.text.clone();
        if text.trim_start().starts_with(placeholder) {
            text = text.replacen("clr_...", admin_key, 1);
        }
        for (from, to) in ports {
            text = text.replace(from, to);
        }
        let out = format!("\"$CLEARANCE_README_OUT/{n}");
        if text.trim_start().starts_with("clearance serve") {
            // Its own terminal: in the background, ready once it says it listens.
            s.push_str(&format!(
                "{{ {text}\n}} > {out}.out\" 2> {out}.err\" &\n\
                 rc=1; for _ in $(seq 600); do grep -q 'listening on' {out}.err\" && {{ rc=0; break; }}; sleep 0.1; done\n\
                 echo $rc > {out}.rc\"\n"
            ));
        } else {
            s.push_str(&format!(
                "{{ {text}\n}} > {out}.out\" 2> {out}.err\"\necho $? > {out}.rc\"\n"
            ));
        }
    }
    s
}

#[derive(Debug)]
struct Ran {
    step: Step,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn show(&self) -> String {
        format!(
            "`{}` exited {:?} (documented {}):\n--- stdout\n{}--- stderr\n{}",
            self.step.text, self.code, self.step.expect, self.stdout, self.stderr
        )
    }
}

/// The first step whose text contains `needle`, and each after it with `nth`.
fn find<'a>(ran: &'a [Ran], needle: &str, nth: usize) -> &'a Ran {
    ran.iter()
        .filter(|r| r.step.text.contains(needle))
        .nth(nth)
        .unwrap_or_else(|| panic!("no README command contains `{needle}` (#{nth})"))
}

#[test]
fn every_shell_block_of_the_readme_runs_as_written() {
    let all = blocks(README);
    assert!(all.len() >= 5, "README.md has too few ```sh blocks: {}", all.len());

    // Block 1 is the two commands of "Run it, test it": start the server, run the tests
    // (this test is one of them; CI runs the same command).
    let first: Vec<Step> = steps(&all[0]);
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(
        first[0]
            .text
            .starts_with("cargo run --release --bin clearance -- serve"),
        "{first:?}"
    );
    assert!(first[1].text.starts_with("cargo test --workspace"), "{first:?}");
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.ci/run")).unwrap();
    assert!(
        ci.contains("cargo test --workspace"),
        "CI must run the README's test command"
    );

    let root = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    std::os::unix::fs::symlink(repo.canonicalize().unwrap(), root.path().join("examples")).unwrap();
    let tmp = root.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let (server, url, admin_key) = start_server(root.path());

    // The rest, in order; blocks whose prerequisite is missing are left out (outside CI).
    let pg = std::env::var("CLEARANCE_TEST_DATABASE_URL").unwrap_or_else(|_| README_DATABASE_URL.to_owned());
    let mut walk: Vec<Step> = Vec::new();
    let mut used_pg = false;
    for block in &all[1..] {
        let text = block.lines.join("\n");
        if text.contains("npx ") && !has_npx() && !required("MCP (npx)") {
            continue;
        }
        if text.contains("CLEARANCE_DATABASE_URL") {
            if !pg_reachable(&pg_url()) && !required("scale-out (PostgreSQL)") {
                continue;
            }
            used_pg = true;
        }
        walk.extend(steps(block));
    }
    let placeholders = walk
        .iter()
        .filter(|s| s.text.trim_start().starts_with("export CLEARANCE_API_KEY=clr_..."))
        .count();
    assert_eq!(
        placeholders, 1,
        "the admin key is the one placeholder the reader fills in"
    );

    let schema = format!("readme_{}", std::process::id());
    let mut ports = vec![
        ("127.0.0.1:7801", format!("127.0.0.1:{}", free_port())),
        ("127.0.0.1:7802", format!("127.0.0.1:{}", free_port())),
    ];
    if pg != README_DATABASE_URL {
        ports.push((README_DATABASE_URL, pg.clone()));
    }
    let out_dir = root.path().join("out");
    let path = format!(
        "{}:{}",
        Path::new(BIN).parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(script(&walk, &admin_key, &ports))
        .current_dir(root.path())
        .env("PATH", path)
        .env("TMPDIR", &tmp)
        .env("XDG_STATE_HOME", root.path().join("state"))
        .env("CLEARANCE_README_OUT", &out_dir)
        .env("CLEARANCE_SERVER", &url)
        .env("CLEARANCE_DATABASE_SCHEMA", &schema)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .process_group(0);
    for (name, _) in std::env::vars() {
        if name.starts_with("CLEARANCE_") && !["CLEARANCE_TEST_DATABASE_URL"].contains(&name.as_str()) {
            cmd.env_remove(name);
        }
    }
    cmd.env("CLEARANCE_README_OUT", &out_dir)
        .env("CLEARANCE_SERVER", &url)
        .env("CLEARANCE_DATABASE_SCHEMA", &schema);
    let mut shell = Group(cmd.spawn().unwrap());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = shell.0.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The whole groups: the shell, the servers and whatever else they started.
    drop(shell);
    drop(server);
    if used_pg {
        common::drop_schema(&pg, &schema);
    }

    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let ran: Vec<Ran> = walk
        .iter()
        .enumerate()
        .map(|(n, step)| Ran {
            step: step.clone(),
            code: read(out_dir.join(format!("{n}.rc"))).trim().parse().ok(),
            stdout: read(out_dir.join(format!("{n}.out"))),
            stderr: read(out_dir.join(format!("{n}.err"))),
        })
        .collect();
    let wrong: Vec<String> = ran
        .iter()
        .filter(|r| r.code != Some(r.step.expect))
        .map(Ran::show)
        .collect();
    assert!(
        status.is_some(),
        "the walkthrough did not finish within {TIMEOUT:?}; so far:\n{}",
        wrong.join("\n")
    );
    assert!(
        wrong.is_empty(),
        "README commands that did not do as documented:\n{}",
        wrong.join("\n")
    );

    // The outcomes the README describes.
    let expect = |r: &Ran, text: &str| assert!(r.stdout.contains(text) || r.stderr.contains(text), "{}", r.show());
    expect(find(&ran, "\"amount\": 120", 0), "allow  refund on Tool::\"stripe\"");
    expect(find(&ran, "\"amount\": 5000", 0), "no-large-refunds");
    expect(
        find(&ran, "clearance verify", 0),
        "verified: refund on Tool::\"stripe\"",
    );
    expect(find(&ran, "clearance verify", 1), "arguments_mismatch");
    let tail = find(&ran, "clearance log tail", 0);
    expect(tail, "allow refund on Tool::\"stripe\" for billing-bot in runner-1");
    expect(tail, "deny (policy_forbidden)");
    expect(find(&ran, "clearance evidence verify", 0), "verified: execution");
    expect(
        find(&ran, "clearance log verify", 0),
        "ok: every checkpoint matches the entries",
    );
    expect(find(&ran, "./deploy.sh staging", 0), "deployed to staging");
    let production = find(&ran, "./deploy.sh production", 0);
    assert!(!production.stdout.contains("deploying"), "{}", production.show());
    expect(find(&ran, "clearance revoke execution", 0), "revoked");
    if walk.iter().any(|s| s.text.contains("clearance mcp schema")) {
        expect(find(&ran, "clearance policy validate", 0), "valid sha256:");
    }
    if used_pg {
        let (one, two) = (
            find(&ran, "clearance log verifier-key --server", 0),
            find(&ran, "clearance log verifier-key --server", 1),
        );
        assert!(
            !one.stdout.trim().is_empty() && one.stdout == two.stdout,
            "{}\n{}",
            one.show(),
            two.show()
        );
    }
}

#[test]
fn steps_take_their_exit_codes_from_their_comments() {
    let block = Block {
        lines: [
            "# A denial (exit code 3).",
            "clearance authorize --action x \\",
            "  --resource T/x",
            "",
            "clearance verify t   # exit code 4: refused",
            "# No code here.",
            "echo ok",
        ]
        .map(str::to_owned)
        .to_vec(),
    };
    let got: Vec<(String, i32)> = steps(&block).into_iter().map(|s| (s.text, s.expect)).collect();
    assert_eq!(
        got,
        [
            ("clearance authorize --action x \\\n  --resource T/x".to_owned(), 3),
            ("clearance verify t   # exit code 4: refused".to_owned(), 4),
            ("echo ok".to_owned(), 0),
        ]
    );
}
