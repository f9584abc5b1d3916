//! SIGKILL under concurrent load, repeatedly: nothing answered is ever lost.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test setup: a failure must abort loudly"
)]

mod common;

use std::time::Duration;

use clearance_log::{Checkpoint, NoteVerifier};
use common::{ADMIN_KEY, Load, POLICIES, SCHEMA, Server, assert_all_proven, refund};

const ROUNDS: u64 = 4;
const CLIENTS: usize = 8;

#[test]
fn sigkill_under_load_loses_no_answered_decision() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_in(&data, &[]);
    let bot = server.agent("bot");
    server.activate(SCHEMA, POLICIES);
    drop(server);

    let mut answered = Vec::new();
    let mut notes = Vec::new();
    let mut seed = 0x9e37_79b9_u64;
    for round in 0..ROUNDS {
        let server = Server::start_in(&data, &[]);
        let load = Load::start(std::slice::from_ref(&server.url), &bot, CLIENTS, |n| {
            refund(n as i64 % 400)
        });
        // Kill at a different moment each round: 300 to 1200 ms into the load.
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        std::thread::sleep(Duration::from_millis(300 + (seed >> 33) % 900));
        drop(server); // SIGKILL, then reap.
        let (a, n) = load.stop();
        answered.extend(a);
        notes.extend(n);
        eprintln!("round {round}: {} clearances answered so far", answered.len());
    }

    let server = Server::start_in(&data, &[]);
    let (_, final_note) = server.call("POST", "/v1/log/checkpoint", Some(ADMIN_KEY), None);
    let (_, vkey) = server.call("GET", "/v1/log/verifier-key", None, None);
    let verifier = NoteVerifier::parse(vkey.as_str().unwrap().trim()).unwrap();
    let last = Checkpoint::open(final_note.as_str().unwrap(), &verifier).unwrap();
    assert_all_proven(&server, &answered, &notes, &verifier, &last);
    eprintln!(
        "{} answered clearances and {} checkpoints checked against size {}",
        answered.len(),
        notes.len(),
        last.size
    );
}
