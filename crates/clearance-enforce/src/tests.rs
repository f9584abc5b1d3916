//! The enforcement point's own state (replay cache, revocation view, the gate over them)
//! and the runtime's parsing; the verifier's tests are in `clearance-verify`.

use clearance_artifact::{ClearanceSigner, Jwks};
use clearance_model::{ClearanceClaims, ExecutionId, ResourceRef};
use serde_json::{Value, json};

use clearance_verify::Sample;

use crate::{ExpectedCall, Verifier, VerifyError};

const NOW: i64 = 1_795_428_000;

/// A signed refund clearance and a verifier that trusts its key.
struct Fixture {
    signer: ClearanceSigner,
    verifier: Verifier,
    claims: ClearanceClaims,
    args: Value,
    resource: ResourceRef,
}

fn fixture() -> Fixture {
    let Sample {
        signer,
        claims,
        args,
        resource,
    } = Sample::refund("https://clearance.test", NOW).unwrap();
    let jwks = Jwks {
        keys: vec![signer.jwk()],
    };
    let verifier = Verifier::new(jwks, "https://clearance.test", None);
    Fixture {
        signer,
        verifier,
        claims,
        args,
        resource,
    }
}

impl Fixture {
    fn token(&self) -> String {
        self.signer.sign(&self.claims).unwrap()
    }
}

mod state {
    use std::sync::Arc;
    use std::time::Duration;

    use clearance_model::execution::{RevocationKind, RevocationRecord};

    use super::*;
    use crate::{Gate, ReplayCache, RevocationView};

    fn record(seq: u64, kind: RevocationKind, id: &str) -> RevocationRecord {
        RevocationRecord {
            seq,
            kind,
            id: id.into(),
            reason: "test".into(),
            time: NOW,
        }
    }

    #[test]
    fn replay_cache_survives_a_restart_and_forgets_expired_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        {
            let cache = ReplayCache::open(&path, NOW).unwrap();
            cache.consume("a", NOW, NOW + 60, NOW).unwrap();
            cache.consume("b", NOW, NOW + 5, NOW).unwrap();
            assert_eq!(
                cache.consume("a", NOW, NOW + 60, NOW),
                Err(VerifyError::Replayed { jti: "a".into() })
            );
        }
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // Reopened later: `a` is still consumed, `b` expired and was compacted away.
        let cache = ReplayCache::open(&path, NOW + 10).unwrap();
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.floor(), 0);
        assert_eq!(
            cache.consume("a", NOW, NOW + 60, NOW + 10).unwrap_err().code(),
            "replayed"
        );
        cache.consume("b", NOW, NOW + 70, NOW + 10).unwrap();
    }

    /// What the kernel holds of the cache while it is open (no sync has happened since
    /// the records were written), copied to `to` as a crash would leave it.
    fn crash_copy(cache: &ReplayCache, to: &std::path::Path) {
        std::fs::copy(cache.path(), to).unwrap();
    }

    #[test]
    fn replay_cache_survives_a_process_crash_without_syncing_each_record() {
        let dir = tempfile::tempdir().unwrap();
        let (path, crashed) = (dir.path().join("replay"), dir.path().join("crashed"));
        let cache = ReplayCache::open_in_boot(&path, NOW, Some("boot-1".into())).unwrap();
        cache.consume("a", NOW, NOW + 60, NOW).unwrap();
        crash_copy(&cache, &crashed);
        // The process died, the machine did not: every record written is there.
        let after = ReplayCache::open_in_boot(&crashed, NOW + 1, Some("boot-1".into())).unwrap();
        assert_eq!(after.floor(), 0);
        assert_eq!(
            after.consume("a", NOW, NOW + 60, NOW + 1).unwrap_err().code(),
            "replayed"
        );
        after.consume("b", NOW, NOW + 60, NOW + 1).unwrap();
    }

    #[test]
    fn replay_cache_refuses_what_a_machine_crash_may_have_lost() {
        let dir = tempfile::tempdir().unwrap();
        let (path, crashed) = (dir.path().join("replay"), dir.path().join("crashed"));
        let cache = ReplayCache::open_in_boot(&path, NOW, Some("boot-1".into())).unwrap();
        cache.consume("a", NOW, NOW + 60, NOW).unwrap();
        crash_copy(&cache, &crashed);
        // The machine restarted (another boot) before the cache was closed cleanly:
        // anything issued before the restart may have been used and lost from the file,
        // and a torn tail is no reason to refuse to start.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&crashed)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"\0\0\0"))
            .unwrap();
        let after = ReplayCache::open_in_boot(&crashed, NOW + 5, Some("boot-2".into())).unwrap();
        assert_eq!(after.floor(), NOW + 5);
        let refused = after.consume("unknown", NOW + 4, NOW + 60, NOW + 5).unwrap_err();
        assert_eq!(refused.code(), "replay_cache_unavailable");
        assert!(refused.to_string().contains("request a new clearance"), "{refused}");
        after.consume("a", NOW + 4, NOW + 60, NOW + 5).unwrap_err();
        // Issued after the restart: admitted, once.
        after.consume("fresh", NOW + 5, NOW + 60, NOW + 5).unwrap();
        assert_eq!(
            after.consume("fresh", NOW + 5, NOW + 60, NOW + 5).unwrap_err().code(),
            "replayed"
        );
        // The floor is itself durable: a later open under the same boot keeps it.
        drop(after);
        let again = ReplayCache::open_in_boot(&crashed, NOW + 6, Some("boot-2".into())).unwrap();
        assert_eq!(again.floor(), NOW + 5);
        assert_eq!(
            again.consume("fresh", NOW + 5, NOW + 60, NOW + 6).unwrap_err().code(),
            "replayed"
        );
    }

    #[test]
    fn replay_cache_closed_cleanly_needs_no_floor_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        let cache = ReplayCache::open_in_boot(&path, NOW, Some("boot-1".into())).unwrap();
        cache.consume("a", NOW, NOW + 60, NOW).unwrap();
        drop(cache);
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("\nclosed\n"));
        let after = ReplayCache::open_in_boot(&path, NOW + 5, Some("boot-2".into())).unwrap();
        assert_eq!(after.floor(), 0);
        assert_eq!(
            after.consume("a", NOW, NOW + 60, NOW + 5).unwrap_err().code(),
            "replayed"
        );
        after.consume("b", NOW, NOW + 60, NOW + 5).unwrap();
    }

    #[test]
    fn replay_cache_reads_version_one_files_and_syncs_without_a_boot_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        // Version 1: records only, each synced when written.
        std::fs::write(&path, format!("a {}\nb {}\n", NOW + 60, NOW - 1)).unwrap();
        let cache = ReplayCache::open_in_boot(&path, NOW, None).unwrap();
        assert_eq!((cache.len(), cache.floor()), (1, 0));
        assert_eq!(cache.consume("a", NOW, NOW + 60, NOW).unwrap_err().code(), "replayed");
        cache.consume("c", NOW, NOW + 60, NOW).unwrap();
        // Without a boot id every record is synced as it is written, so even a crash
        // (no clean close) followed by an open under a boot id loses nothing.
        let crashed = dir.path().join("crashed");
        std::fs::copy(&path, &crashed).unwrap();
        let after = ReplayCache::open_in_boot(&crashed, NOW + 1, Some("boot-1".into())).unwrap();
        assert_eq!(after.floor(), 0);
        assert_eq!(
            after.consume("c", NOW, NOW + 60, NOW + 1).unwrap_err().code(),
            "replayed"
        );
        drop(cache);
        let after = ReplayCache::open_in_boot(&path, NOW + 1, Some("boot-1".into())).unwrap();
        assert_eq!(after.floor(), 0);
        assert_eq!(
            after.consume("c", NOW, NOW + 60, NOW + 1).unwrap_err().code(),
            "replayed"
        );
    }

    #[test]
    fn replay_cache_waits_for_the_holder_and_follows_its_compaction() {
        use nix::fcntl::{Flock, FlockArg};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        std::fs::write(&path, "").unwrap();
        // Another holder has the file locked...
        let held = Flock::lock(std::fs::File::open(&path).unwrap(), FlockArg::LockExclusive).unwrap();
        let opener = {
            let path = path.clone();
            std::thread::spawn(move || ReplayCache::open(&path, NOW).map(|c| c.len()))
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(!opener.is_finished(), "a second opener must wait for the holder");
        // ...and replaces it, as compaction does, before letting go.
        let replacement = dir.path().join("replacement");
        std::fs::write(&replacement, format!("a {}\n", NOW + 60)).unwrap();
        std::fs::rename(&replacement, &path).unwrap();
        drop(held);
        // The opener reads the file now at the path, not the one it first locked.
        assert_eq!(opener.join().unwrap(), Ok(1));
    }

    #[test]
    fn replay_caches_side_by_side_keep_their_own_records() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("replay.a"), dir.path().join("replay.b"));
        // A neighbour whose name the compaction of either could take if it only swapped
        // extensions.
        let neighbour = dir.path().join("replay.compacting");
        std::fs::write(&neighbour, "someone else's").unwrap();
        for (path, jti) in [(&a, "only-in-a"), (&b, "only-in-b")] {
            ReplayCache::open(path, NOW)
                .unwrap()
                .consume(jti, NOW, NOW + 60, NOW)
                .unwrap();
        }
        // Both compact on open; neither takes the other's file.
        let (a, b) = (ReplayCache::open(&a, NOW).unwrap(), ReplayCache::open(&b, NOW).unwrap());
        assert_eq!(
            a.consume("only-in-a", NOW, NOW + 60, NOW).unwrap_err().code(),
            "replayed"
        );
        a.consume("only-in-b", NOW, NOW + 60, NOW).unwrap();
        assert_eq!(
            b.consume("only-in-b", NOW, NOW + 60, NOW).unwrap_err().code(),
            "replayed"
        );
        assert_eq!(std::fs::read_to_string(&neighbour).unwrap(), "someone else's");
    }

    #[test]
    fn replay_cache_ignores_a_record_torn_by_a_failed_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        drop(ReplayCache::open_in_boot(&path, NOW, Some("boot-1".into())).unwrap());
        let header = std::fs::read_to_string(&path).unwrap();
        // The process died (same boot) after `a` and during the write of the next record.
        let header = header.lines().next().unwrap();
        std::fs::write(&path, format!("{header}\na {}\nhalf-writ", NOW + 60)).unwrap();
        let cache = ReplayCache::open_in_boot(&path, NOW, Some("boot-1".into())).unwrap();
        assert_eq!((cache.len(), cache.floor()), (1, 0));
        assert_eq!(cache.consume("a", NOW, NOW + 60, NOW).unwrap_err().code(), "replayed");
        // A damaged line before the end is not a torn write: the file is refused.
        drop(cache);
        std::fs::write(&path, format!("{header}\nnot a record\na {}\n", NOW + 60)).unwrap();
        assert_eq!(
            ReplayCache::open_in_boot(&path, NOW, Some("boot-1".into()))
                .unwrap_err()
                .code(),
            "replay_cache_unavailable"
        );
    }

    #[test]
    fn replay_cache_is_exclusive_and_refuses_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        std::fs::write(&path, "not a replay cache at all\n").unwrap();
        assert_eq!(
            ReplayCache::open(&path, NOW).unwrap_err().code(),
            "replay_cache_unavailable"
        );
    }

    #[test]
    fn revocation_view_denies_when_stale_or_revoked() {
        let f = fixture();
        let other = ExecutionId::random().unwrap();
        let view = RevocationView::new(Duration::from_millis(200));
        // Never heard from the control plane: stale.
        assert_eq!(
            view.check(&f.claims, "kid").unwrap_err().code(),
            "revocation_view_stale"
        );
        view.heard(0);
        assert_eq!(view.check(&f.claims, "kid"), Ok(()));
        // A heartbeat that says records are missing does not freshen the view.
        std::thread::sleep(Duration::from_millis(250));
        view.heard(3);
        assert_eq!(
            view.check(&f.claims, "kid").unwrap_err().code(),
            "revocation_view_stale"
        );
        for (seq, kind, id) in [
            (1, RevocationKind::Principal, "someone-else"),
            (2, RevocationKind::SigningKey, "old-kid"),
            (3, RevocationKind::Execution, other.as_str()),
        ] {
            view.apply(&record(seq, kind, id));
        }
        view.heard(3);
        assert_eq!(view.seq(), 3);
        assert_eq!(view.check(&f.claims, "kid"), Ok(()));
        assert_eq!(view.check(&f.claims, "old-kid").unwrap_err().code(), "revoked");
        let mut child = f.claims.clone();
        child.par = Some(other.clone());
        assert_eq!(view.check(&child, "kid").unwrap_err().code(), "revoked");
        view.apply(&record(4, RevocationKind::Principal, "billing-bot"));
        view.heard(4);
        assert_eq!(view.check(&f.claims, "kid").unwrap_err().code(), "revoked");
        view.apply(&record(5, RevocationKind::Execution, f.claims.jti.as_str()));
        assert!(matches!(view.check(&f.claims, "kid"), Err(VerifyError::Revoked(_))));
    }

    #[test]
    fn gate_admits_once_in_order_of_checks() {
        let f = fixture();
        let dir = tempfile::tempdir().unwrap();
        let view = Arc::new(RevocationView::new(Duration::from_secs(30)));
        view.heard(0);
        let gate = Gate::new(
            f.verifier.clone(),
            ReplayCache::open(&dir.path().join("r"), NOW).unwrap(),
            Some(Arc::clone(&view)),
        );
        let call = ExpectedCall::new("refund", &f.resource, &f.args).unwrap();
        let token = f.token();
        // A clearance for another call is refused without being consumed.
        let other = json!({"amount": 9999});
        let wrong = ExpectedCall::new("refund", &f.resource, &other).unwrap();
        assert_eq!(
            gate.admit(&token, &wrong, NOW).unwrap_err().code(),
            "arguments_mismatch"
        );
        assert!(gate.admit(&token, &call, NOW).is_ok());
        assert_eq!(gate.admit(&token, &call, NOW).unwrap_err().code(), "replayed");
        assert_eq!(gate.replay_cache().len(), 1);
    }
}

mod sse_and_http {
    use crate::client::{ClientOptions, ControlPlaneClient, SseParser};
    use crate::proxy::{RouteTemplate, http_call};

    #[test]
    fn a_client_never_prints_its_key() {
        let client =
            ControlPlaneClient::new("http://127.0.0.1:1", "clr_secret_one", &ClientOptions::default()).unwrap();
        let other = client.with_key("clr_secret_two");
        for shown in [format!("{client:?}"), format!("{other:?}")] {
            assert!(!shown.contains("clr_secret"), "{shown}");
            assert!(shown.contains("127.0.0.1:1"), "{shown}");
        }
    }

    #[test]
    fn parses_events_split_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: revocation\nid: 1\ndata: {\"a\"").is_empty());
        let events = p.push(b":1}\n\n: keep-alive\n\nevent: heartbeat\r\ndata: {}\r\n\r\n");
        assert_eq!(events.len(), 2);
        assert_eq!(
            (events[0].name.as_str(), events[0].data.as_str()),
            ("revocation", "{\"a\":1}")
        );
        assert_eq!(events[1].name, "heartbeat");
    }

    #[test]
    fn maps_requests_to_calls() {
        let routes: Vec<RouteTemplate> = ["POST /charges/{id}/refund", "GET /charges"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        let call = http_call(
            "POST",
            "/charges/ch_1/refund",
            Some("note=a%20b&x=1"),
            Some("application/json; charset=utf-8"),
            br#"{"amount": 120}"#,
            &routes,
        )
        .unwrap();
        assert_eq!(call.action, "POST /charges/{id}/refund");
        assert_eq!(
            call.arguments,
            serde_json::json!({
                "method": "POST", "path": "/charges/ch_1/refund", "params": {"id": "ch_1"},
                "query": {"note": "a b", "x": "1"}, "body": {"amount": 120}
            })
        );
        // Unknown routes, duplicate query names and broken JSON are refused.
        assert!(http_call("DELETE", "/charges", None, None, b"", &routes).is_err());
        assert!(http_call("GET", "/charges", Some("a=1&a=2"), None, b"", &routes).is_err());
        assert!(
            http_call(
                "POST",
                "/charges/x/refund",
                None,
                Some("application/json"),
                b"{",
                &routes
            )
            .is_err()
        );
        // Without templates the literal path is the action; a binary body is digested.
        let raw = http_call("PUT", "/blob", None, Some("application/octet-stream"), b"\x00\x01", &[]).unwrap();
        assert_eq!(raw.action, "PUT /blob");
        assert!(raw.arguments["body_sha256"].as_str().unwrap().starts_with("sha256:"));
        assert!("POST charges".parse::<RouteTemplate>().is_err());
    }
}
