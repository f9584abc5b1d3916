//! One conformance suite for every storage backend. Each case is written once against the
//! ports (and the control plane's rules on top of them) and run on SQLite and on
//! PostgreSQL; a backend is done when every case passes on it.
//!
//! PostgreSQL: `CLEARANCE_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each case gets its own schema, dropped
//! when it passes. When the server cannot be reached the PostgreSQL cases say so and
//! pass, except under CI (`CI` set), where they fail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failure must abort loudly"
)]

use std::collections::BTreeSet;
use std::sync::Arc;

use clearance_artifact::ClearanceSigner;
use clearance_core::{
    Applied, Attestation, ChallengeRefusal, CoreError, EnvironmentRecord, ExecutionChange, LogAppend, Seal, StartNow,
    Store, StoreError,
};
use clearance_log::{MemoryTree, leaf_hash, verify_consistency, verify_inclusion};
use clearance_model::execution::{ExecutionState, RevocationKind, RevokeRequest, StartRequest};
use clearance_model::wire::{AuthorizeRequest, PolicyBundle};
use clearance_model::{Decision, Digest, ExecutionId, LogIndex, Refusal, Timestamp};
use clearance_store::testkit::{self, World};
use clearance_store::{PgOptions, PgStore, SqliteStore, StoreOptions};
use serde_json::json;

const SCHEMA: &str = r#"
entity Agent;
entity Tool;
action refund appliesTo { principal: Agent, resource: Tool, context: { arguments: { amount: Long } } };
"#;
const POLICIES: &str = r#"@id("small") permit(principal, action, resource) when { context.arguments.amount < 500 };"#;

/// A backend under test, and what to clean up after it.
struct Backend {
    store: Arc<dyn Store>,
    cleanup: Cleanup,
}

enum Cleanup {
    /// Kept until the case ends, then removed.
    Sqlite(#[expect(dead_code, reason = "held for its Drop")] tempfile::TempDir),
    Postgres {
        url: String,
        schema: String,
    },
}

impl Backend {
    async fn finish(self) {
        drop(self.store);
        if let Cleanup::Postgres { url, schema } = self.cleanup {
            drop_schema(&url, &schema).await;
        }
    }
}

fn options() -> StoreOptions {
    StoreOptions {
        max_batch: 64,
        ..StoreOptions::default()
    }
}

async fn sqlite() -> Option<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("c.db"), options()).await.unwrap();
    Some(Backend {
        store: Arc::new(store),
        cleanup: Cleanup::Sqlite(dir),
    })
}

fn pg_url() -> String {
    std::env::var("CLEARANCE_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh schema on the test server, or `None` (said on stderr) when there is none to
/// reach outside CI.
async fn postgres() -> Option<Backend> {
    let url = pg_url();
    let schema = format!(
        "conformance_{}",
        hex::encode(clearance_model::ids::random_bytes::<6>().unwrap())
    );
    match PgStore::connect(
        &url,
        PgOptions {
            store: options(),
            schema: Some(schema.clone()),
        },
    )
    .await
    {
        Ok(store) => Some(Backend {
            store: Arc::new(store),
            cleanup: Cleanup::Postgres { url, schema },
        }),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: PostgreSQL conformance case, no server at {url}: {e}");
            None
        }
        Err(e) => panic!("PostgreSQL is required under CI but {url} is unreachable: {e}"),
    }
}

async fn drop_schema(url: &str, schema: &str) {
    use sqlx::Connection as _;
    if let Ok(mut conn) = sqlx::PgConnection::connect(url).await {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&mut conn)
            .await;
    }
}

/// The signing key every node of a test cluster shares.
fn cluster_signer() -> ClearanceSigner {
    ClearanceSigner::from_signing_key(clearance_artifact::SigningKey::from_bytes(&[7; 32]))
}

/// A control plane over the store, populated: admin, `bot`, `enforcer`, an active
/// policy permitting refunds under 500.
async fn world(store: Arc<dyn Store>) -> World {
    let cp = testkit::plane_with(store, cluster_signer(), "http://conformance.test")
        .await
        .unwrap();
    testkit::world(cp, SCHEMA, POLICIES).await.unwrap()
}

/// Another node of `w`'s cluster, over `store`.
async fn second_node(w: &World, store: Arc<dyn Store>) -> World {
    let cp = testkit::plane_with(store, cluster_signer(), "http://conformance.test")
        .await
        .unwrap();
    w.node(cp)
}

/// A refund that may delegate `depth` more levels.
fn refund(amount: i64, parent: Option<&str>, depth: u32) -> AuthorizeRequest {
    let mut req = json!({
        "action": "refund",
        "resource": {"type": "Tool", "id": "t"},
        "arguments": {"amount": amount},
        "delegate": {"actions": ["refund"], "ttl_seconds": 60, "depth": depth},
    });
    if let Some(p) = parent {
        req["parent"] = json!(p);
    }
    serde_json::from_value(req).unwrap()
}

/// An allowed execution: its id and clearance. Roots may delegate four levels, each
/// child one fewer than its parent.
async fn allowed(w: &World, parent: Option<(&str, u32)>) -> (ExecutionId, String) {
    let depth = parent.map_or(4, |(_, d)| d - 1);
    let r =
        w.cp.authorize(&w.bot, &refund(10, parent.map(|p| p.0), depth))
            .await
            .unwrap();
    assert_eq!(r.decision, Decision::Allow, "{:?}", r.message);
    (r.execution_id, r.clearance.unwrap())
}

async fn start(w: &World, id: &ExecutionId, clearance: &str) -> Result<(), CoreError> {
    w.cp.start(
        &w.enforcer,
        id,
        &StartRequest {
            clearance: clearance.to_owned(),
            lease_seconds: None,
        },
    )
    .await
    .map(|_| ())
}

/// `count` concurrent starts of one clearance, spread over `nodes`: how many won. Every
/// loser must be refused `replayed`.
async fn race_starts(nodes: &[Arc<World>], id: &ExecutionId, clearance: &str, count: usize) -> usize {
    let mut tasks = Vec::new();
    for i in 0..count {
        let (w, id, clearance) = (Arc::clone(&nodes[i % nodes.len()]), id.clone(), clearance.to_owned());
        tasks.push(tokio::spawn(async move { start(&w, &id, &clearance).await }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => won += 1,
            Err(CoreError::Refused {
                code: Refusal::Replayed,
                ..
            }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    won
}

fn entry(n: usize) -> LogAppend {
    LogAppend {
        entry: format!("{{\"n\":{n}}}").into_bytes(),
        time: Timestamp(1_800_000_000),
        execution: None,
    }
}

// ---- the cases -------------------------------------------------------------------------

/// Concurrent appends: every entry gets exactly one index, without gaps, and each index
/// holds the entry its caller was given it for.
async fn appends_are_gapless_and_distinct(b: Backend) {
    let mut tasks = Vec::new();
    for i in 0..300 {
        let s = Arc::clone(&b.store);
        tasks.push(tokio::spawn(async move { (i, s.append(entry(i)).await.unwrap()) }));
    }
    let mut given = Vec::new();
    for t in tasks {
        given.push(t.await.unwrap());
    }
    let indexes: BTreeSet<LogIndex> = given.iter().map(|(_, i)| *i).collect();
    assert_eq!(indexes, (0..300).map(LogIndex).collect());
    let stored = b.store.log_entries(0, 1000).await.unwrap();
    assert_eq!(stored.len(), 300);
    for (n, index) in given {
        let bytes = &stored.iter().find(|(i, _)| *i == index).unwrap().1;
        assert_eq!(bytes, &entry(n).entry, "index {index:?}");
    }
    b.finish().await;
}

/// Twenty starts race for one clearance: exactly one wins, the rest are `replayed`, and
/// only the winner's entry is in the log.
async fn a_clearance_starts_once(b: Backend) {
    let w = Arc::new(world(Arc::clone(&b.store)).await);
    let (id, clearance) = allowed(&w, None).await;
    let before = b.store.log_size().await.unwrap();
    assert_eq!(race_starts(&[Arc::clone(&w)], &id, &clearance, 20).await, 1);
    assert_eq!(b.store.log_size().await.unwrap(), before + 1);
    assert_eq!(
        b.store.execution(&id).await.unwrap().unwrap().state,
        ExecutionState::Started
    );
    drop(w);
    b.finish().await;
}

/// A refused change writes neither its state nor its entry, and does not hold back the
/// rest of its batch.
async fn a_refused_change_writes_nothing(b: Backend) {
    let w = Arc::new(world(Arc::clone(&b.store)).await);
    let (id, clearance) = allowed(&w, None).await;
    start(&w, &id, &clearance).await.unwrap();
    let before = b.store.log_size().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (w, id, clearance) = (Arc::clone(&w), id.clone(), clearance.clone());
        let store = Arc::clone(&b.store);
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                start(&w, &id, &clearance).await.map(|_| true)
            } else {
                store.append(entry(i)).await.map(|_| false).map_err(CoreError::from)
            }
        }));
    }
    let mut appended = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(false) => appended += 1,
            Err(CoreError::Refused {
                code: Refusal::Replayed,
                ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(appended, 5);
    assert_eq!(b.store.log_size().await.unwrap(), before + 5);
    let unknown = ExecutionId::random().unwrap();
    let refused = start(&w, &unknown, &clearance);
    assert!(matches!(
        refused.await,
        Err(CoreError::Refused {
            code: Refusal::ClearanceInvalid,
            ..
        })
    ));
    assert_eq!(b.store.log_size().await.unwrap(), before + 5);
    drop(w);
    b.finish().await;
}

/// An allowed decision's entry, execution and clearance commit together: the clearance
/// names its entry's index and is stored with it. A seal that fails writes nothing and
/// does not hold back the rest of its batch. An execution started in the same commit
/// (authorize-and-start) has its start entry right after the decision's and is started
/// once, through the state machine: a start it refuses writes nothing either.
async fn a_decision_commits_with_its_clearance(b: Backend) {
    let w = world(Arc::clone(&b.store)).await;
    let r = w.cp.authorize(&w.bot, &refund(10, None, 4)).await.unwrap();
    let token = r.clearance.clone().unwrap();
    let claims = clearance_artifact::UnverifiedToken::parse(&token)
        .unwrap()
        .verify_signature(&w.cp.engine().signer().verifying_key())
        .unwrap();
    assert_eq!(Some(claims.log), r.log_index);
    assert_eq!(b.store.clearance(&r.execution_id).await.unwrap(), Some(token));
    let record = b.store.execution(&r.execution_id).await.unwrap().unwrap();
    let before = b.store.log_size().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let mut record = record.clone();
        record.id = ExecutionId::random().unwrap();
        let store = Arc::clone(&b.store);
        tasks.push(tokio::spawn(async move {
            let id = record.id.clone();
            let seal: Seal = Box::new(move |index: LogIndex| {
                if i % 2 == 0 {
                    Ok(format!("token-{}", index.0))
                } else {
                    Err("the signing key is gone".into())
                }
            });
            let append = LogAppend {
                execution: Some(id.clone()),
                ..entry(i)
            };
            // 0, 4 and 8 start at once; 6 asks to start after the clearance expired.
            let now = match i {
                0 | 4 | 8 | 3 => Some(record.issued_at),
                6 => Some(record.expires_at),
                _ => None,
            };
            let start = now.map(|now| StartNow {
                entry: LogAppend {
                    execution: Some(id.clone()),
                    ..entry(100 + i)
                },
                now,
                lease_until: Timestamp(now.seconds() + 30),
            });
            let applied = store
                .append_sealed(&id, append, ExecutionChange::Authorize(Box::new(record)), seal, start)
                .await;
            (i, id, applied)
        }));
    }
    let mut started = 0;
    for t in tasks {
        let (i, id, applied) = t.await.unwrap();
        if i == 6 {
            assert_eq!(
                applied,
                Err(StoreError::ExecutionState {
                    found: ExecutionState::Authorized
                })
            );
            assert_eq!(b.store.execution(&id).await.unwrap(), None);
            assert_eq!(b.store.clearance(&id).await.unwrap(), None);
        } else if i % 2 == 0 {
            let applied = applied.unwrap();
            let token = format!("token-{}", applied.index.0);
            assert_eq!(applied.clearance.as_deref(), Some(token.as_str()));
            assert_eq!(b.store.clearance(&id).await.unwrap(), Some(token));
            let stored = b.store.log_entries(applied.index.0, applied.index.0 + 2).await.unwrap();
            assert_eq!(stored[0].1, entry(i).entry);
            let execution = b.store.execution(&id).await.unwrap().unwrap();
            if i % 4 == 0 {
                started += 1;
                assert_eq!(applied.started, Some(LogIndex(applied.index.0 + 1)));
                assert_eq!(stored[1].1, entry(100 + i).entry);
                assert_eq!(stored[1].0, LogIndex(applied.index.0 + 1));
                assert_eq!(execution.state, ExecutionState::Started);
                assert_eq!(execution.lease_until, Some(Timestamp(record.issued_at.seconds() + 30)));
                assert_eq!(
                    b.store.execution_entries(&id).await.unwrap().len(),
                    2,
                    "the decision and the start"
                );
                // Started once: the clearance cannot be started again.
                let again = store_start(&b, &id, record.issued_at).await;
                assert_eq!(
                    again,
                    Err(StoreError::ExecutionState {
                        found: ExecutionState::Started
                    })
                );
            } else {
                assert_eq!(applied.started, None);
                assert_eq!(execution.state, ExecutionState::Authorized);
            }
        } else {
            match applied {
                Err(StoreError::Unavailable(m)) => assert!(m.contains("could not be signed"), "{m}"),
                other => panic!("unexpected {other:?}"),
            }
            assert_eq!(b.store.execution(&id).await.unwrap(), None);
            assert_eq!(b.store.clearance(&id).await.unwrap(), None);
        }
    }
    assert_eq!(started, 3);
    // Four decisions, three starts (and the refused start's job wrote nothing).
    assert_eq!(b.store.log_size().await.unwrap(), before + 4 + 3);
    drop(w);
    b.finish().await;
}

/// Start `id` through the store, as `ControlPlane::start` does.
async fn store_start(b: &Backend, id: &ExecutionId, now: Timestamp) -> Result<Applied, StoreError> {
    let append = LogAppend {
        execution: Some(id.clone()),
        ..entry(999)
    };
    let change = ExecutionChange::Start {
        now,
        lease_until: Timestamp(now.seconds() + 30),
    };
    b.store.append_change(id, append, change).await
}

/// Revoking a root revokes its live subtree, in one transaction, each with its own record
/// and entry; revoking a principal covers its keys and executions, once.
async fn revocation_cascades(b: Backend) {
    let w = world(Arc::clone(&b.store)).await;
    let (root, root_token) = allowed(&w, None).await;
    let (child, child_token) = allowed(&w, Some((&root_token, 4))).await;
    let (grandchild, _) = allowed(&w, Some((&child_token, 3))).await;
    let (other, _) = allowed(&w, None).await;
    start(&w, &child, &child_token).await.unwrap();

    let revoked =
        w.cp.revoke(
            &w.admin,
            RevocationKind::Execution,
            root.as_str(),
            &RevokeRequest {
                reason: Some("test".into()),
            },
        )
        .await
        .unwrap()
        .revocations;
    let ids: Vec<&str> = revoked.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, vec![root.as_str(), child.as_str(), grandchild.as_str()]);
    assert_eq!(revoked[0].reason, "test");
    assert!(revoked[2].reason.contains(root.as_str()), "{}", revoked[2].reason);
    for id in [&root, &child, &grandchild] {
        let r = b.store.execution(id).await.unwrap().unwrap();
        assert_eq!(r.state, ExecutionState::Revoked, "{id}");
        // Each revocation is in the execution's own log entries.
        let entries = b.store.execution_entries(id).await.unwrap();
        let last: serde_json::Value = serde_json::from_slice(&entries.last().unwrap().1).unwrap();
        assert_eq!(last["type"], "revocation", "{last}");
    }
    assert_eq!(
        b.store.execution(&other).await.unwrap().unwrap().state,
        ExecutionState::Authorized
    );
    // Nothing left to revoke: no new records.
    let again =
        w.cp.revoke(
            &w.admin,
            RevocationKind::Execution,
            root.as_str(),
            &RevokeRequest::default(),
        )
        .await
        .unwrap();
    assert!(again.revocations.is_empty());

    let by_principal =
        w.cp.revoke(&w.admin, RevocationKind::Principal, "bot", &RevokeRequest::default())
            .await
            .unwrap()
            .revocations;
    assert_eq!(by_principal.len(), 2, "{by_principal:?}");
    assert_eq!(
        (by_principal[0].kind, by_principal[0].id.as_str()),
        (RevocationKind::Principal, "bot")
    );
    assert_eq!(by_principal[1].id, other.as_str());
    assert!(b.store.is_revoked(RevocationKind::Principal, "bot").await.unwrap());
    let keys = b.store.list_keys(&"bot".parse().unwrap()).await.unwrap();
    assert!(keys.iter().all(|k| k.revoked_at.is_some()));
    let twice =
        w.cp.revoke(&w.admin, RevocationKind::Principal, "bot", &RevokeRequest::default())
            .await
            .unwrap();
    assert!(twice.revocations.is_empty());
    let unknown =
        w.cp.revoke(&w.admin, RevocationKind::Principal, "nobody", &RevokeRequest::default())
            .await;
    assert!(matches!(unknown, Err(CoreError::NotFound(_))), "{unknown:?}");
    b.finish().await;
}

/// Concurrent revocations get sequence numbers 1..n without gaps, in the order their log
/// entries were appended, and are listed in that order.
async fn revocations_are_ordered(b: Backend) {
    let w = Arc::new(world(Arc::clone(&b.store)).await);
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(allowed(&w, None).await.0);
    }
    let mut tasks = Vec::new();
    for id in ids {
        let w = Arc::clone(&w);
        tasks.push(tokio::spawn(async move {
            w.cp.revoke(
                &w.admin,
                RevocationKind::Execution,
                id.as_str(),
                &RevokeRequest::default(),
            )
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let listed = b.store.revocations_since(0, 100).await.unwrap();
    let seqs: Vec<u64> = listed.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    assert_eq!(b.store.latest_revocation().await.unwrap(), 12);
    assert_eq!(b.store.revocations_since(10, 100).await.unwrap().len(), 2);
    // Sequence order is log order.
    let mut last_index = None;
    for r in &listed {
        let entries = b.store.execution_entries(&r.id.parse().unwrap()).await.unwrap();
        let index = entries.last().unwrap().0;
        assert!(
            last_index < Some(index),
            "seq {} at {index:?} after {last_index:?}",
            r.seq
        );
        last_index = Some(index);
    }
    drop(w);
    b.finish().await;
}

/// Inclusion and consistency proofs served from the stored nodes match a tree computed
/// from the entries, at many sizes; past 256 and 512 entries, with the upper nodes the
/// control plane kept in memory from earlier proofs.
async fn proofs_at_many_sizes(b: Backend) {
    let w = world(Arc::clone(&b.store)).await;
    let mut tree = MemoryTree::default();
    let mut appended = 0;
    let base = b.store.log_size().await.unwrap();
    for (i, e) in b.store.log_entries(0, base).await.unwrap() {
        assert_eq!(i.0, tree.size());
        tree.push(leaf_hash(&e));
    }
    for target in [9u64, 16, 17, 33, 64, 100, 130, 300, 530] {
        while tree.size() < target {
            let e = entry(appended);
            appended += 1;
            b.store.append(e.clone()).await.unwrap();
            tree.push(leaf_hash(&e.entry));
        }
        let size = tree.size();
        let root = tree.root(size).unwrap();
        for index in [0, 1, 255, 256, 511, size / 2, size - 2, size - 1]
            .into_iter()
            .filter(|i| *i < size)
        {
            let proof = w.cp.inclusion_proof(index, size).await.unwrap();
            let path: Vec<Vec<u8>> = proof.proof.iter().map(|p| b64(p)).collect();
            let leaf: [u8; 32] = b64(&proof.leaf_hash).try_into().unwrap();
            verify_inclusion(index, size, &leaf, &path, &root).unwrap();
        }
        for from in [1, 2, size / 3, size - 1] {
            if from == 0 || from >= size {
                continue;
            }
            let proof = w.cp.consistency_proof(from, size).await.unwrap();
            let path: Vec<Vec<u8>> = proof.proof.iter().map(|p| b64(p)).collect();
            verify_consistency(from, size, &tree.root(from).unwrap(), &root, &path).unwrap();
        }
        let checkpoint = w.cp.checkpoint().await.unwrap();
        assert_eq!((checkpoint.size, checkpoint.root), (size, root));
    }
    assert_eq!(b.store.checkpoints().await.unwrap().len(), 9);
    b.finish().await;
}

/// A challenge is consumed once, only for its environment and before it expires; a
/// refused one writes nothing.
async fn challenges_are_single_use(b: Backend) {
    let _w = world(Arc::clone(&b.store)).await;
    let t = Timestamp(1_800_000_000);
    for id in ["runner-1", "runner-2"] {
        let env = EnvironmentRecord {
            id: id.into(),
            attestation_key: "k".into(),
            expect: Default::default(),
            labels: Default::default(),
            quarantined: false,
            quarantine_reason: None,
            attestation: None,
            released: None,
        };
        b.store
            .create_environment(&env, LogAppend { time: t, ..entry(0) })
            .await
            .unwrap();
    }
    let twin = EnvironmentRecord {
        id: "runner-1".into(),
        attestation_key: "k".into(),
        expect: Default::default(),
        labels: Default::default(),
        quarantined: false,
        quarantine_reason: None,
        attestation: None,
        released: None,
    };
    let again = b.store.create_environment(&twin, entry(0)).await;
    assert!(matches!(again, Err(StoreError::Exists(_))), "{again:?}");
    b.store
        .save_challenge("runner-1", "n1", Timestamp(t.0 + 60))
        .await
        .unwrap();
    b.store
        .save_challenge("runner-1", "n2", Timestamp(t.0 + 60))
        .await
        .unwrap();
    let missing = b.store.save_challenge("nowhere", "n3", Timestamp(t.0 + 60)).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))), "{missing:?}");
    let attestation = |time: Timestamp| Attestation {
        time,
        measurements: Default::default(),
        measurement_digest: Digest::of(b"m"),
        matches: true,
        mismatched: Vec::new(),
        log_index: LogIndex(0),
    };
    let before = b.store.log_size().await.unwrap();
    let refused = [
        ("runner-1", "unknown", t, ChallengeRefusal::Unknown),
        ("runner-2", "n1", t, ChallengeRefusal::Unknown),
        ("runner-1", "n2", Timestamp(t.0 + 61), ChallengeRefusal::Expired),
    ];
    for (env, nonce, time, why) in refused {
        let r = b
            .store
            .record_attestation(env, nonce, &attestation(time), entry(1))
            .await;
        assert_eq!(r, Err(StoreError::Challenge(why)), "{env} {nonce}");
    }
    assert_eq!(b.store.log_size().await.unwrap(), before);
    let index = b
        .store
        .record_attestation("runner-1", "n1", &attestation(t), entry(1))
        .await
        .unwrap();
    assert_eq!(index, LogIndex(before));
    let stored = b.store.environment("runner-1").await.unwrap().unwrap();
    assert_eq!(stored.attestation.unwrap().log_index, index);
    let replay = b
        .store
        .record_attestation("runner-1", "n1", &attestation(t), entry(1))
        .await;
    assert_eq!(replay, Err(StoreError::Challenge(ChallengeRefusal::Replayed)));
    b.finish().await;
}

fn b64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

// ---- several nodes on one PostgreSQL database ------------------------------------------

/// A second store on the same schema: another node.
async fn other_node(b: &Backend) -> Arc<dyn Store> {
    let Cleanup::Postgres { url, schema } = &b.cleanup else {
        unreachable!("cluster cases run on PostgreSQL")
    };
    let options = PgOptions {
        store: options(),
        schema: Some(schema.clone()),
    };
    Arc::new(PgStore::connect(url, options).await.unwrap())
}

/// Two nodes append concurrently: one log, every index once.
async fn two_nodes_share_one_log(b: Backend) {
    let other = other_node(&b).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = if i % 2 == 0 {
            Arc::clone(&b.store)
        } else {
            Arc::clone(&other)
        };
        tasks.push(tokio::spawn(async move { s.append(entry(i)).await.unwrap() }));
    }
    let mut indexes = BTreeSet::new();
    for t in tasks {
        assert!(indexes.insert(t.await.unwrap()));
    }
    assert_eq!(indexes, (0..200).map(LogIndex).collect());
    b.finish().await;
}

/// A clearance started on one node is `replayed` on the other, however they race.
async fn single_use_holds_across_nodes(b: Backend) {
    let a = Arc::new(world(Arc::clone(&b.store)).await);
    let other = Arc::new(second_node(&a, other_node(&b).await).await);
    for _ in 0..5 {
        let (id, clearance) = allowed(&a, None).await;
        let nodes = [Arc::clone(&a), Arc::clone(&other)];
        assert_eq!(race_starts(&nodes, &id, &clearance, 10).await, 1);
    }
    drop((a, other));
    b.finish().await;
}

/// One node at a time holds the checkpointer role; when it goes away, another takes it.
async fn one_checkpointer_at_a_time(b: Backend) {
    let other = other_node(&b).await;
    assert!(b.store.hold_checkpointer().await.unwrap());
    assert!(b.store.hold_checkpointer().await.unwrap(), "kept while held");
    assert!(!other.hold_checkpointer().await.unwrap());
    let third = other_node(&b).await;
    assert!(!third.hold_checkpointer().await.unwrap());
    let Backend { store, cleanup } = b;
    drop(store);
    let mut taken = false;
    for _ in 0..50 {
        if other.hold_checkpointer().await.unwrap() {
            taken = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(taken, "the role was not taken over within 5 s");
    assert!(!third.hold_checkpointer().await.unwrap());
    drop((other, third));
    if let Cleanup::Postgres { url, schema } = cleanup {
        drop_schema(&url, &schema).await;
    }
}

/// A revocation or a policy activation committed on one node is announced to the other,
/// whose control plane then follows it.
async fn changes_reach_every_node(b: Backend) {
    let a = world(Arc::clone(&b.store)).await;
    let other_store = other_node(&b).await;
    let mut heard = other_store.subscribe().expect("PostgreSQL announces changes");
    let other = second_node(&a, Arc::clone(&other_store)).await;
    let (id, _) = allowed(&a, None).await;
    let revoked =
        a.cp.revoke(
            &a.admin,
            RevocationKind::Execution,
            id.as_str(),
            &RevokeRequest::default(),
        )
        .await
        .unwrap();
    let seq = revoked.revocations[0].seq;
    let got = tokio::time::timeout(std::time::Duration::from_secs(1), heard.recv()).await;
    assert_eq!(got.unwrap().unwrap(), clearance_core::SharedChange::Revocation(seq));
    let mut stream = other.cp.watch_revocations();
    other.cp.sync_shared_state().await.unwrap();
    assert_eq!(*stream.borrow_and_update(), seq);

    let strict =
        a.cp.push_policy(
            &a.admin,
            &PolicyBundle {
                schema: SCHEMA.into(),
                policies: r#"@id("tiny") permit(principal, action, resource) when { context.arguments.amount < 5 };"#
                    .into(),
            },
        )
        .await
        .unwrap()
        .version;
    a.cp.activate_policy(&a.admin, &strict).await.unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(1), heard.recv()).await;
    assert_eq!(got.unwrap().unwrap(), clearance_core::SharedChange::PolicyActivated);
    let before = other.cp.authorize(&other.bot, &refund(10, None, 1)).await.unwrap();
    assert_eq!(
        before.decision,
        Decision::Allow,
        "the other node still has the old version"
    );
    other.cp.sync_shared_state().await.unwrap();
    let after = other.cp.authorize(&other.bot, &refund(10, None, 1)).await.unwrap();
    assert_eq!(after.decision, Decision::Deny);
    assert_eq!(after.policy_version, Some(strict));
    drop((a, other));
    b.finish().await;
}

macro_rules! conformance {
    ($backend:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(b) = super::$backend().await {
                        super::$case(b).await;
                    }
                }
            )*
        }
    };
}

macro_rules! every_backend {
    ($($case:ident),* $(,)?) => {
        conformance!(sqlite: $($case),*);
        conformance!(postgres: $($case),*);
    };
}

conformance!(postgres_cluster: two_nodes_share_one_log, single_use_holds_across_nodes, one_checkpointer_at_a_time, changes_reach_every_node);

/// The cluster cases need PostgreSQL.
async fn postgres_cluster() -> Option<Backend> {
    postgres().await
}

every_backend!(
    appends_are_gapless_and_distinct,
    a_clearance_starts_once,
    a_refused_change_writes_nothing,
    a_decision_commits_with_its_clearance,
    revocation_cascades,
    revocations_are_ordered,
    proofs_at_many_sizes,
    challenges_are_single_use,
);
