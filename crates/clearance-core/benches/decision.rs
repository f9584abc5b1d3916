//! The in-process decision path (stages 2-6 and signing, no durable write) beside its
//! floors measured in the same run: bare Cedar on the same policy set, bare Ed25519 sign.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark setup: a failure must abort loudly"
)]

use std::hint::black_box;
use std::str::FromStr;

use cedar_policy::{Authorizer, Context, Entities, EntityUid, PolicySet, Request, Schema};
use clearance_artifact::ClearanceSigner;
use clearance_core::{Caller, DecisionEngine, EngineConfig};
use clearance_model::wire::{AuthorizeRequest, PolicyBundle};
use clearance_model::{Decision, ExecutionId, LogIndex, Role, Timestamp};
use clearance_policy::CompiledPolicy;
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::Signer as _;
use serde_json::json;

const NOW: Timestamp = Timestamp(1_795_428_000);

/// `actions` actions with `per_action` policies each: permits and forbids on the amount.
fn bundle(actions: usize, per_action: usize) -> PolicyBundle {
    let mut schema = String::from("entity Agent;\nentity Tool;\n");
    let mut policies = String::new();
    for a in 0..actions {
        schema.push_str(&format!(
            "action a{a} appliesTo {{ principal: Agent, resource: Tool, \
             context: {{ arguments: {{ amount: Long, currency: String }}, request_time: Long }} }};\n"
        ));
        for p in 0..per_action {
            let effect = if p % 3 == 2 { "forbid" } else { "permit" };
            let op = if effect == "forbid" { ">" } else { "<" };
            policies.push_str(&format!(
                "@id(\"a{a}-p{p}\")\n{effect}(principal, action == Action::\"a{a}\", resource) \
                 when {{ context.arguments.amount {op} {} && context.arguments.currency == \"EUR\" }};\n",
                1000 * (p + 1)
            ));
        }
    }
    PolicyBundle { schema, policies }
}

fn request(action: &str) -> AuthorizeRequest {
    serde_json::from_value(json!({
        "action": action,
        "resource": {"type": "Tool", "id": "stripe"},
        "arguments": {"amount": 120, "currency": "EUR"},
    }))
    .unwrap()
}

fn engine() -> DecisionEngine {
    DecisionEngine::new(
        ClearanceSigner::generate().unwrap(),
        EngineConfig {
            issuer: "https://clearance.example".into(),
            require_environment: false,
            ..EngineConfig::default()
        },
    )
}

fn bench(c: &mut Criterion) {
    let engine = engine();
    let caller = Caller {
        id: "billing-bot".parse().unwrap(),
        roles: vec![Role::Agent],
    };
    let id = ExecutionId::random().unwrap();
    let sets = [
        ("10_policies", bundle(1, 10), "a0"),
        ("1000_policies_100_actions", bundle(100, 10), "a57"),
    ];

    let mut group = c.benchmark_group("decision_path");
    for (name, b, action) in &sets {
        let policy = CompiledPolicy::compile(b).unwrap();
        let req = request(action);
        assert_eq!(
            engine
                .decide(
                    &caller,
                    &req,
                    &clearance_core::ParentCheck::None,
                    &clearance_core::EnvironmentCheck::Unbound,
                    Some(&policy),
                    NOW
                )
                .decision,
            Decision::Allow
        );
        group.bench_function(format!("clearance_decide_and_sign/{name}"), |bench| {
            bench.iter(|| {
                let verdict = engine.decide(
                    &caller,
                    black_box(&req),
                    &clearance_core::ParentCheck::None,
                    &clearance_core::EnvironmentCheck::Unbound,
                    Some(&policy),
                    NOW,
                );
                let claims = engine.claims(&caller, &req, &verdict, &id, LogIndex(42), NOW).unwrap();
                engine.signer().sign(&claims).unwrap()
            })
        });
        group.bench_function(format!("clearance_decide_only/{name}"), |bench| {
            bench.iter(|| {
                engine.decide(
                    &caller,
                    black_box(&req),
                    &clearance_core::ParentCheck::None,
                    &clearance_core::EnvironmentCheck::Unbound,
                    Some(&policy),
                    NOW,
                )
            })
        });

        // Floors: Cedar alone on the same (whole) set, with and without building the request.
        let schema = Schema::from_cedarschema_str(&b.schema).unwrap().0;
        let pset = PolicySet::from_str(&b.policies).unwrap();
        let entities = schema.action_entities().unwrap_or_else(|_| Entities::empty());
        let principal = EntityUid::from_str(r#"Agent::"billing-bot""#).unwrap();
        let action_uid = EntityUid::from_str(&format!(r#"Action::"{action}""#)).unwrap();
        let resource = EntityUid::from_str(r#"Tool::"stripe""#).unwrap();
        let ctx_json = json!({"arguments": {"amount": 120, "currency": "EUR"}, "request_time": NOW.seconds()});
        let build = || {
            let ctx = Context::from_json_value(ctx_json.clone(), Some((&schema, &action_uid))).unwrap();
            Request::new(
                principal.clone(),
                action_uid.clone(),
                resource.clone(),
                ctx,
                Some(&schema),
            )
            .unwrap()
        };
        let prebuilt = build();
        let authorizer = Authorizer::new();
        group.bench_function(format!("floor_cedar_is_authorized/{name}"), |bench| {
            bench.iter(|| authorizer.is_authorized(black_box(&prebuilt), &pset, &entities))
        });
        group.bench_function(format!("floor_cedar_build_and_authorize/{name}"), |bench| {
            bench.iter(|| authorizer.is_authorized(&build(), &pset, &entities))
        });
    }

    // Floor: one Ed25519 signature over a clearance-sized message.
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let message = vec![b'x'; 560];
    group.bench_function("floor_ed25519_sign", |bench| {
        bench.iter(|| key.sign(black_box(&message)))
    });
    group.finish();

    // The effect of action slicing, policy stage only.
    let mut group = c.benchmark_group("policy_slicing");
    let policy = CompiledPolicy::compile(&sets[1].1).unwrap();
    let args = json!({"amount": 120, "currency": "EUR"});
    let resource = clearance_model::ResourceRef::new("Tool", "stripe");
    let req = clearance_policy::PolicyRequest {
        principal: "billing-bot",
        action: "a57",
        resource: &resource,
        arguments: &args,
        context: &json!({}),
        request_time: NOW.seconds(),
        lineage: clearance_policy::Lineage {
            depth: 0,
            root: "billing-bot",
        },
        environment: None,
    };
    group.bench_function("sliced/1000_policies_100_actions", |bench| {
        bench.iter(|| policy.evaluate(black_box(&req)))
    });
    let all = policy.all_policies().unwrap();
    group.bench_function("unsliced/1000_policies_100_actions", |bench| {
        bench.iter(|| policy.evaluate_unsliced(&all, black_box(&req)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(60).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
