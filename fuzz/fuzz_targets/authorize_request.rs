//! An agent's authorize request body, decided by the engine (stages 2 to 6) under a real
//! policy: never panics, and an allow always comes from a permit with no deny reason.
#![no_main]

use std::sync::OnceLock;

use clearance_core::{Caller, DecisionEngine, EngineConfig, EnvironmentCheck, ParentCheck};
use clearance_model::wire::{AuthorizeRequest, PolicyBundle};
use clearance_model::{Decision, Role, Timestamp};
use clearance_policy::CompiledPolicy;
use libfuzzer_sys::fuzz_target;

const SCHEMA: &str = r#"
entity Agent;
entity Tool;
action refund appliesTo {
    principal: Agent,
    resource: Tool,
    context: { arguments: { amount: Long, currency: String }, request_time: Long }
};
"#;
const POLICIES: &str = r#"
@id("small-refunds")
permit (principal, action == Action::"refund", resource)
when { context.arguments.amount <= 500 };
@id("no-large-refunds")
forbid (principal, action == Action::"refund", resource)
when { context.arguments.amount > 1000 };
"#;

fn fixture() -> &'static (DecisionEngine, CompiledPolicy, Caller) {
    static F: OnceLock<(DecisionEngine, CompiledPolicy, Caller)> = OnceLock::new();
    F.get_or_init(|| {
        let signer = clearance_artifact::ClearanceSigner::generate().expect("a signing key");
        let engine = DecisionEngine::new(
            signer,
            EngineConfig {
                issuer: "https://cp.test".into(),
                default_ttl_seconds: 60,
                max_ttl_seconds: 300,
                max_lineage_depth: 8,
                lease_seconds: 30,
                require_environment: false,
                attestation_freshness_seconds: 300,
                challenge_ttl_seconds: 60,
            },
        );
        let policy = CompiledPolicy::compile(&PolicyBundle {
            schema: SCHEMA.into(),
            policies: POLICIES.into(),
        })
        .expect("the fixture policy compiles");
        let caller = Caller {
            id: "billing-bot".parse().expect("a principal id"),
            roles: vec![Role::Agent],
        };
        (engine, policy, caller)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<AuthorizeRequest>(data) else {
        return;
    };
    let (engine, policy, caller) = fixture();
    let verdict = engine.decide(
        caller,
        &req,
        &ParentCheck::None,
        &EnvironmentCheck::Unbound,
        Some(policy),
        Timestamp(1_800_000_000),
    );
    if verdict.decision == Decision::Allow {
        assert!(verdict.reasons.is_empty(), "an allow with deny reasons: {verdict:?}");
        assert_eq!(req.action, "refund", "an allow for an action no policy permits");
    }
});
