//! The reads on the decision path, on SQLite: a parent execution (stage 4) and an
//! environment (stage 5) through the store's ports, beside the same row read through
//! sqlx's pool (how the store read them before: a hand-off to its worker thread and
//! back), measured in the same run.
//!
//! `cargo bench -p clearance-store --bench hot_reads`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark setup: a failure must abort loudly"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use clearance_core::{EnvironmentPort as _, ExecutionPort as _, LogAppend, Store};
use clearance_model::wire::AuthorizeRequest;
use clearance_store::{SqliteStore, StoreOptions, testkit};

const READS: usize = 20_000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

async fn timed<F: std::future::Future<Output = ()>>(mut read: impl FnMut() -> F) -> Duration {
    let mut times = Vec::with_capacity(READS);
    for _ in 0..READS {
        let t = Instant::now();
        read().await;
        times.push(t.elapsed());
    }
    median(times)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let store = Arc::new(SqliteStore::open(&path, StoreOptions::default()).await.unwrap());
    let plane = testkit::plane(Arc::clone(&store) as Arc<dyn Store>, "http://bench")
        .await
        .unwrap();
    let world = testkit::world(
        plane,
        "entity Agent; entity Tool; action refund appliesTo { principal: Agent, resource: Tool, \
         context: { arguments: { amount: Long } } };",
        r#"@id("small") permit(principal, action, resource) when { context.arguments.amount < 500 };"#,
    )
    .await
    .unwrap();
    let ask: AuthorizeRequest = serde_json::from_value(serde_json::json!({
        "action": "refund", "resource": {"type": "Tool", "id": "t"}, "arguments": {"amount": 10},
    }))
    .unwrap();
    let id = world.cp.authorize(&world.bot, &ask).await.unwrap().execution_id;
    let env = clearance_core::EnvironmentRecord {
        id: "runner-1".into(),
        attestation_key: "k".into(),
        expect: Default::default(),
        labels: Default::default(),
        quarantined: false,
        quarantine_reason: None,
        attestation: None,
        released: None,
    };
    let event = LogAppend {
        entry: b"{}".to_vec(),
        time: clearance_model::Timestamp(0),
        execution: None,
    };
    store.create_environment(&env, event).await.unwrap();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();

    let execution = timed(|| async { assert!(store.execution(&id).await.unwrap().is_some()) }).await;
    let environment = timed(|| async { assert!(store.environment("runner-1").await.unwrap().is_some()) }).await;
    let through_pool = |sql: &'static str, key: String| {
        let pool = pool.clone();
        move || {
            let (pool, key) = (pool.clone(), key.clone());
            async move {
                let row = sqlx::query(sql).bind(key).fetch_optional(&pool).await.unwrap();
                assert!(row.is_some());
            }
        }
    };
    let execution_pool = timed(through_pool("SELECT * FROM executions WHERE id = $1", id.to_string())).await;
    let environment_pool = timed(through_pool(
        "SELECT * FROM environments WHERE id = $1",
        "runner-1".into(),
    ))
    .await;
    println!("{READS} reads each, medians, same run");
    println!("parent execution, the port (direct):   {execution:.2?}");
    println!("the same row through sqlx's pool:       {execution_pool:.2?}");
    println!("environment, the port (direct):        {environment:.2?}");
    println!("the same row through sqlx's pool:       {environment_pool:.2?}");
    println!(
        "ratio (direct over pool): execution {:.2}x, environment {:.2}x",
        execution.as_secs_f64() / execution_pool.as_secs_f64(),
        environment.as_secs_f64() / environment_pool.as_secs_f64()
    );
}
