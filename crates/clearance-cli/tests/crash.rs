//! SIGKILL under concurrent load, repeatedly: nothing answered is ever lost.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test setup: a failure must abort loudly"
)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clearance_log::{Checkpoint, NoteVerifier, leaf_hash, verify_consistency, verify_inclusion};
use common::{ADMIN_KEY, POLICIES, SCHEMA, Server, refund};
use serde_json::{Value, json};

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

    let answered: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let notes: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut seed = 0x9e37_79b9_u64;
    for round in 0..ROUNDS {
        let server = Server::start_in(&data, &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for client in 0..CLIENTS {
            let (url, bot, stop, answered) = (
                server.url.clone(),
                bot.clone(),
                Arc::clone(&stop),
                Arc::clone(&answered),
            );
            threads.push(std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                let mut n = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let body = json!({"action": "refund", "resource": {"type": "Tool", "id": "t"},
                                      "arguments": refund(n % 400 + client as i64)});
                    let Ok(res) = http
                        .post(format!("{url}/v1/authorize"))
                        .bearer_auth(&bot)
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
        {
            let (url, stop, notes) = (server.url.clone(), Arc::clone(&stop), Arc::clone(&notes));
            threads.push(std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(r) = http
                        .post(format!("{url}/v1/log/checkpoint"))
                        .bearer_auth(ADMIN_KEY)
                        .send()
                        && r.status().is_success()
                        && let Ok(t) = r.text()
                    {
                        notes.lock().unwrap().push(t);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }));
        }
        // Kill at a different moment each round: 300 to 1200 ms into the load.
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        std::thread::sleep(Duration::from_millis(300 + (seed >> 33) % 900));
        drop(server); // SIGKILL, then reap.
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        eprintln!(
            "round {round}: {} clearances answered so far",
            answered.lock().unwrap().len()
        );
    }

    let server = Server::start_in(&data, &[]);
    let (_, final_note) = server.call("POST", "/v1/log/checkpoint", Some(ADMIN_KEY), None);
    let final_note = final_note.as_str().unwrap().to_owned();
    let (_, vkey) = server.call("GET", "/v1/log/verifier-key", None, None);
    let verifier = NoteVerifier::parse(vkey.as_str().unwrap().trim()).unwrap();
    let last = Checkpoint::open(&final_note, &verifier).unwrap();

    // Every index from 0 to the size is there exactly once.
    let mut entries: Vec<Vec<u8>> = Vec::new();
    while (entries.len() as u64) < last.size {
        let start = entries.len() as u64;
        let end = (start + 1000).min(last.size);
        let (_, page) = server.call(
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
            entries.push(STANDARD.decode(e["entry"].as_str().unwrap()).unwrap());
        }
    }

    // Every decision answered with a clearance is in the log, at its index, provably.
    let answered = answered.lock().unwrap().clone();
    assert!(
        answered.len() > 50,
        "too little load to mean anything: {}",
        answered.len()
    );
    let mut indexes: Vec<u64> = answered.iter().map(|a| a.0).collect();
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), answered.len(), "two answers share a log index");
    for (index, id) in &answered {
        let entry = &entries[usize::try_from(*index).unwrap()];
        let event: Value = serde_json::from_slice(entry).unwrap();
        assert_eq!(event["execution_id"].as_str(), Some(id.as_str()), "entry {index}");
        assert_eq!(event["decision"], "allow");
        let (_, p) = server.call(
            "GET",
            &format!("/v1/log/proof/inclusion?index={index}&size={}", last.size),
            None,
            None,
        );
        let proof: Vec<Vec<u8>> = p["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| STANDARD.decode(h.as_str().unwrap()).unwrap())
            .collect();
        verify_inclusion(*index, last.size, &leaf_hash(entry), &proof, &last.root).unwrap();
    }

    // Every checkpoint published along the way is consistent with the final one.
    let notes = notes.lock().unwrap().clone();
    assert!(!notes.is_empty());
    for note in &notes {
        let cp = Checkpoint::open(note, &verifier).unwrap();
        if cp.size == 0 {
            continue;
        }
        let (_, c) = server.call(
            "GET",
            &format!("/v1/log/proof/consistency?from={}&to={}", cp.size, last.size),
            None,
            None,
        );
        let proof: Vec<Vec<u8>> = c["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| STANDARD.decode(h.as_str().unwrap()).unwrap())
            .collect();
        verify_consistency(cp.size, last.size, &cp.root, &last.root, &proof).unwrap();
    }
    eprintln!(
        "{} answered clearances and {} checkpoints checked against size {}",
        answered.len(),
        notes.len(),
        last.size
    );
}
