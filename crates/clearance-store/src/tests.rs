use std::sync::Arc;
use std::time::Duration;

use clearance_core::{ApiKey, ClusterPort, ControlPlane, CoreError, LogAppend, LogPort, StoreError};
use clearance_model::wire::{AuthorizeRequest, CreatePrincipal, PolicyBundle};
use clearance_model::{Decision, DenyReason, Role, Timestamp};
use serde_json::json;
use sqlx::Connection as _;

use crate::testkit::World;
use crate::{SqliteStore, StoreOptions};

const SCHEMA: &str = r#"
entity Agent;
entity Tool;
action refund appliesTo { principal: Agent, resource: Tool, context: { arguments: { amount: Long } } };
"#;
const POLICIES: &str = r#"@id("small") permit(principal, action, resource) when { context.arguments.amount < 500 };"#;

fn options() -> StoreOptions {
    StoreOptions {
        busy_timeout: Duration::from_millis(200),
        append_timeout: Duration::from_millis(800),
        max_batch: 64,
    }
}

async fn plane(store: &SqliteStore) -> ControlPlane {
    crate::testkit::plane(Arc::new(store.clone()), "http://test")
        .await
        .unwrap()
}

fn refund(amount: i64) -> AuthorizeRequest {
    serde_json::from_value(
        json!({"action": "refund", "resource": {"type": "Tool", "id": "t"}, "arguments": {"amount": amount}}),
    )
    .unwrap()
}

#[tokio::test]
async fn bootstrap_keys_and_policy_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let store = SqliteStore::open(&path, options()).await.unwrap();
    let cp = plane(&store).await;
    let admin_key = cp.bootstrap(None).await.unwrap().expect("a generated key");
    assert!(
        cp.bootstrap(None).await.unwrap().is_none(),
        "second bootstrap creates nothing"
    );
    let admin = cp.authenticate(Some(admin_key.expose())).await.unwrap();
    assert_eq!(admin.roles, vec![Role::Admin]);

    cp.create_principal(
        &admin,
        &CreatePrincipal {
            id: "bot".parse().unwrap(),
            roles: vec![Role::Agent],
        },
    )
    .await
    .unwrap();
    let dup = cp
        .create_principal(
            &admin,
            &CreatePrincipal {
                id: "bot".parse().unwrap(),
                roles: vec![Role::Agent],
            },
        )
        .await;
    assert!(matches!(dup, Err(CoreError::Conflict(_))), "{dup:?}");
    let issued = cp.issue_key(&admin, &"bot".parse().unwrap()).await.unwrap();
    let bot = cp.authenticate(Some(&issued.key)).await.unwrap();
    let pushed = cp
        .push_policy(
            &admin,
            &PolicyBundle {
                schema: SCHEMA.into(),
                policies: POLICIES.into(),
            },
        )
        .await
        .unwrap();
    assert!(pushed.created);
    cp.activate_policy(&admin, &pushed.version).await.unwrap();
    assert_eq!(cp.authorize(&bot, &refund(10)).await.unwrap().decision, Decision::Allow);

    // An agent cannot manage principals.
    let denied = cp.list_principals(&bot).await;
    assert!(
        matches!(denied, Err(CoreError::UnauthorizedRole { required: Role::Admin })),
        "{denied:?}"
    );

    drop(cp);
    let store = SqliteStore::open(&path, options()).await.unwrap();
    let cp = plane(&store).await;
    let bot = cp.authenticate(Some(&issued.key)).await.unwrap();
    let again = cp.authorize(&bot, &refund(10)).await.unwrap();
    assert_eq!(again.decision, Decision::Allow);
    assert_eq!(again.policy_version, Some(pushed.version));

    cp.revoke_key(&admin, &issued.key_id).await.unwrap();
    assert!(matches!(
        cp.authenticate(Some(&issued.key)).await,
        Err(CoreError::InvalidApiKey)
    ));
    let wrong = ApiKey::generate().unwrap();
    assert!(matches!(
        cp.authenticate(Some(wrong.expose())).await,
        Err(CoreError::InvalidApiKey)
    ));
    assert!(matches!(cp.authenticate(None).await, Err(CoreError::InvalidApiKey)));
}

#[tokio::test]
async fn log_rows_cannot_be_changed_or_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let store = SqliteStore::open(&path, options()).await.unwrap();
    store
        .append(LogAppend {
            entry: b"{}".to_vec(),
            time: Timestamp(0),
            execution: None,
        })
        .await
        .unwrap();
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    for sql in ["UPDATE log_entries SET entry = x'00'", "DELETE FROM log_entries"] {
        let err = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }
}

/// Another process holding the write lock makes the log unavailable: the decision is
/// `audit_unavailable`, no clearance exists, and service resumes once the lock is gone.
#[tokio::test]
async fn locked_database_means_audit_unavailable_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let store = SqliteStore::open(&path, options()).await.unwrap();
    let World { cp, bot, .. } = crate::testkit::world(plane(&store).await, SCHEMA, POLICIES)
        .await
        .unwrap();

    let mut locker = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut locker).await.unwrap();
    let result = cp.authorize(&bot, &refund(10)).await;
    assert!(matches!(result, Err(CoreError::AuditUnavailable(_))), "{result:?}");
    assert!(matches!(
        store.check_writable(Timestamp(0)).await,
        Err(StoreError::Unavailable(_))
    ));
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();

    let ok = cp.authorize(&bot, &refund(10)).await.unwrap();
    assert_eq!(ok.decision, Decision::Allow);
    assert!(ok.clearance.is_some());
    let deny = cp.authorize(&bot, &refund(10_000)).await.unwrap();
    assert_eq!(deny.reasons, vec![DenyReason::PolicyDenied]);
    assert!(store.check_writable(Timestamp(0)).await.is_ok());
}

/// A batch whose write panics (a bug) fails its own callers only: the sequencer answers
/// the next batch as if nothing happened, instead of stopping every later decision.
#[tokio::test]
#[allow(clippy::panic, reason = "the panic is the fault under test")]
async fn a_panicking_batch_fails_alone_and_the_sequencer_goes_on() {
    use crate::sequencer::{Job, run};
    use std::sync::atomic::{AtomicBool, Ordering};
    let (jobs, queue) = tokio::sync::mpsc::channel::<Job>(16);
    let first = Arc::new(AtomicBool::new(true));
    tokio::spawn(run(queue, 8, Duration::from_secs(5), move |batch: Vec<Job>| {
        let first = Arc::clone(&first);
        async move {
            assert!(
                !first.swap(false, Ordering::SeqCst),
                "the first batch breaks the writer"
            );
            let n = batch.len();
            let applied = clearance_core::Applied {
                index: clearance_model::LogIndex(0),
                parent: None,
                clearance: None,
                started: None,
            };
            (batch, Ok(vec![Ok(applied); n]))
        }
    }));
    let health = |at| {
        let (reply, answer) = tokio::sync::oneshot::channel();
        (Job::Health { at, reply }, answer)
    };
    let (job, answer) = health(Timestamp(1));
    jobs.send(job).await.unwrap();
    assert!(
        answer.await.is_err(),
        "the panicked batch's reply is dropped: its append failed"
    );
    let (job, answer) = health(Timestamp(2));
    jobs.send(job).await.unwrap();
    assert!(answer.await.unwrap().is_ok(), "the next batch is written");
    assert!(!jobs.is_closed());
}

/// When the task that writes the log is gone (here: its runtime shut down), the store
/// says so: `writer_stopped` (the server exits on it, for its supervisor) and a failing
/// `check_writable` (`/readyz` answers 503).
#[test]
fn a_stopped_log_writer_shows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let first = tokio::runtime::Runtime::new().unwrap();
    let store = first.block_on(SqliteStore::open(&path, options())).unwrap();
    assert!(!store.writer_stopped());
    first.block_on(store.check_writable(Timestamp(1))).unwrap();
    drop(first);
    assert!(store.writer_stopped());
    let second = tokio::runtime::Runtime::new().unwrap();
    let e = second.block_on(store.check_writable(Timestamp(2))).unwrap_err();
    assert!(
        matches!(e, StoreError::Unavailable(ref m) if m.contains("sequencer has stopped")),
        "{e}"
    );
}
