use clearance_artifact::ClearanceSigner;
use clearance_model::wire::{AuthorizeRequest, PolicyBundle};
use clearance_model::{Decision, DenyReason, ExecutionId, LogIndex, ResourceRef, Role, Timestamp};
use clearance_policy::CompiledPolicy;
use serde_json::{Value, json};

use crate::{Caller, DecisionEngine, EngineConfig};

const SCHEMA: &str = r#"
entity Agent;
entity Tool;
action refund appliesTo {
    principal: Agent, resource: Tool,
    context: { arguments: { amount: Long, currency: String }, request_time: Long }
};
"#;
const POLICIES: &str = r#"
@id("small-refunds")
permit(principal, action == Action::"refund", resource) when { context.arguments.amount <= 500 };
@id("no-large-refunds")
forbid(principal, action == Action::"refund", resource) when { context.arguments.amount > 1000 };
@id("overflow")
forbid(principal, action == Action::"refund", resource) when { context.arguments.amount == 999 && context.request_time * 1000000000000 > 0 };
"#;

fn engine() -> DecisionEngine {
    DecisionEngine::new(
        ClearanceSigner::generate().unwrap(),
        EngineConfig {
            issuer: "https://clearance.test".into(),
            require_environment: false,
            ..EngineConfig::default()
        },
    )
}

fn policy() -> CompiledPolicy {
    CompiledPolicy::compile(&PolicyBundle {
        schema: SCHEMA.into(),
        policies: POLICIES.into(),
    })
    .unwrap()
}

fn agent() -> Caller {
    Caller {
        id: "billing-bot".parse().unwrap(),
        roles: vec![Role::Agent],
    }
}

fn request(arguments: Value) -> AuthorizeRequest {
    serde_json::from_value(json!({
        "action": "refund",
        "resource": {"type": "Tool", "id": "stripe"},
        "arguments": arguments,
    }))
    .unwrap()
}

const NOW: Timestamp = Timestamp(1_795_428_000);

/// Caller, request, policy, and the expected decision, reasons and determining policies.
type Case<'a> = (
    Caller,
    AuthorizeRequest,
    Option<&'a CompiledPolicy>,
    Decision,
    Vec<DenyReason>,
    Vec<&'static str>,
);

/// The decision path against a table of expected outcomes.
#[test]
fn decision_table() {
    let (e, p) = (engine(), policy());
    let eur = |amount: i64| json!({"amount": amount, "currency": "EUR"});
    let mut with_ttl = request(eur(1));
    with_ttl.ttl_seconds = Some(301);
    let mut with_parent = request(eur(1));
    with_parent.parent = Some("eyJ...".into());
    let mut bad_args = request(json!([1]));
    bad_args.arguments = json!([1]);
    let auditor = Caller {
        id: "eve".parse().unwrap(),
        roles: vec![Role::Auditor, Role::Admin],
    };
    let cases: Vec<Case<'_>> = vec![
        (
            agent(),
            request(eur(120)),
            Some(&p),
            Decision::Allow,
            vec![],
            vec!["small-refunds"],
        ),
        (
            agent(),
            request(eur(700)),
            Some(&p),
            Decision::Deny,
            vec![DenyReason::PolicyDenied],
            vec![],
        ),
        (
            agent(),
            request(eur(5000)),
            Some(&p),
            Decision::Deny,
            vec![DenyReason::PolicyForbidden],
            vec!["no-large-refunds"],
        ),
        (
            agent(),
            request(eur(999)),
            Some(&p),
            Decision::Deny,
            vec![DenyReason::PolicyError],
            vec!["overflow"],
        ),
        (
            agent(),
            request(json!({"amount": "1", "currency": "EUR"})),
            Some(&p),
            Decision::Deny,
            vec![DenyReason::InvalidRequest],
            vec![],
        ),
        (
            agent(),
            request(eur(120)),
            None,
            Decision::Deny,
            vec![DenyReason::NoActivePolicy],
            vec![],
        ),
        (
            auditor,
            request(eur(120)),
            Some(&p),
            Decision::Deny,
            vec![DenyReason::UnauthorizedRole],
            vec![],
        ),
        (
            agent(),
            with_ttl,
            Some(&p),
            Decision::Deny,
            vec![DenyReason::InvalidRequest],
            vec![],
        ),
        (
            agent(),
            with_parent,
            Some(&p),
            Decision::Deny,
            vec![DenyReason::ParentInvalid],
            vec![],
        ),
        (
            agent(),
            bad_args,
            Some(&p),
            Decision::Deny,
            vec![DenyReason::InvalidRequest],
            vec![],
        ),
    ];
    for (i, (caller, req, policy, decision, reasons, policies)) in cases.into_iter().enumerate() {
        let v = e.decide(
            &caller,
            &req,
            &crate::ParentCheck::None,
            &crate::EnvironmentCheck::Unbound,
            policy,
            NOW,
        );
        assert_eq!((v.decision, &v.reasons), (decision, &reasons), "case {i}: {v:?}");
        assert_eq!(v.policies, policies, "case {i}");
        // Denies record the arguments as asked, not a placeholder.
        assert_eq!(
            v.arguments,
            clearance_model::argument_digest(&req.arguments).unwrap(),
            "case {i}"
        );
        assert_eq!(v.ttl_seconds > 0, decision == Decision::Allow, "case {i}");
    }
}

#[test]
fn decisions_are_deterministic() {
    let (e, p) = (engine(), policy());
    for amount in [1, 500, 501, 999, 1001] {
        let req = request(json!({"amount": amount, "currency": "EUR"}));
        let first = e.decide(
            &agent(),
            &req,
            &crate::ParentCheck::None,
            &crate::EnvironmentCheck::Unbound,
            Some(&p),
            NOW,
        );
        for _ in 0..20 {
            assert_eq!(
                e.decide(
                    &agent(),
                    &req,
                    &crate::ParentCheck::None,
                    &crate::EnvironmentCheck::Unbound,
                    Some(&p),
                    NOW
                ),
                first
            );
        }
        // A second engine with another key, same policy text: same verdict.
        assert_eq!(
            engine().decide(
                &agent(),
                &req,
                &crate::ParentCheck::None,
                &crate::EnvironmentCheck::Unbound,
                Some(&policy()),
                NOW
            ),
            first
        );
    }
}

#[test]
fn deep_arguments_are_rejected() {
    let e = engine();
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!({"a": deep});
    }
    let v = e.decide(
        &agent(),
        &request(deep),
        &crate::ParentCheck::None,
        &crate::EnvironmentCheck::Unbound,
        Some(&policy()),
        NOW,
    );
    assert_eq!(v.reasons, vec![DenyReason::InvalidRequest]);
    assert!(v.message.unwrap_or_default().contains("deeper than 32"));
}

#[test]
fn issue_signs_only_allows() {
    let (e, p) = (engine(), policy());
    let id = ExecutionId::random().unwrap();
    let req = request(json!({"amount": 5000, "currency": "EUR"}));
    let deny = e.decide(
        &agent(),
        &req,
        &crate::ParentCheck::None,
        &crate::EnvironmentCheck::Unbound,
        Some(&p),
        NOW,
    );
    assert!(e.prepare(&agent(), &req, &deny, &id, NOW).is_err());
    let req = request(json!({"amount": 5, "currency": "EUR"}));
    let allow = e.decide(
        &agent(),
        &req,
        &crate::ParentCheck::None,
        &crate::EnvironmentCheck::Unbound,
        Some(&p),
        NOW,
    );
    let unsealed = e.prepare(&agent(), &req, &allow, &id, NOW).unwrap();
    assert_eq!(unsealed.expires(), Timestamp(NOW.0 + 60));
    let token = unsealed.sign(crate::engine::Recorded::sequenced(LogIndex(7))).unwrap();
    assert_eq!(token.split('.').count(), 3);
    let claims = clearance_artifact::UnverifiedToken::parse(&token)
        .unwrap()
        .verify_signature(&e.signer().verifying_key())
        .unwrap();
    assert_eq!(claims.log, LogIndex(7), "the clearance names the entry's index");
    assert_eq!(req.resource, ResourceRef::new("Tool", "stripe"));
}

fn parent_claims(dep: u32, dlg: Option<clearance_model::execution::Delegation>) -> clearance_model::ClearanceClaims {
    clearance_model::ClearanceClaims {
        iss: "https://clearance.test".into(),
        sub: "orchestrator".into(),
        aud: None,
        jti: ExecutionId::random().unwrap(),
        iat: NOW.seconds(),
        nbf: NOW.seconds(),
        exp: NOW.seconds() + 60,
        act: "refund".into(),
        res: ResourceRef::new("Tool", "stripe"),
        args: clearance_model::Digest::of(b"{}"),
        env: None,
        pol: clearance_model::PolicyVersion::from_digest(clearance_model::Digest::of(b"p")),
        log: LogIndex(0),
        par: None,
        dep,
        dlg,
    }
}

#[test]
fn lineage_stage_narrows_authority() {
    use clearance_model::execution::Delegation;

    use crate::{ParentCheck, ParentFacts};
    let e = engine();
    let p = policy();
    let dlg = |depth: u32, ttl: Option<u64>| {
        Some(Delegation {
            actions: vec!["refund".into()],
            resources: None,
            ttl_seconds: ttl,
            depth,
        })
    };
    let live = |claims| {
        ParentCheck::Live(Box::new(ParentFacts {
            claims,
            live_until: Timestamp(NOW.seconds() + 40),
            root_principal: "orchestrator".parse().unwrap(),
        }))
    };
    let child = |mutate: &dyn Fn(&mut AuthorizeRequest)| {
        let mut r = request(json!({"amount": 120, "currency": "EUR"}));
        r.parent = Some("parent-token".into());
        mutate(&mut r);
        r
    };
    let reasons = |check: &ParentCheck, req: &AuthorizeRequest| {
        e.decide(&agent(), req, check, &crate::EnvironmentCheck::Unbound, Some(&p), NOW)
            .reasons
    };

    // Inside the parent's scope: allowed, one level down, capped by the parent's life.
    let ok = e.decide(
        &agent(),
        &child(&|_| {}),
        &live(parent_claims(0, dlg(1, None))),
        &crate::EnvironmentCheck::Unbound,
        Some(&p),
        NOW,
    );
    assert_eq!(ok.decision, Decision::Allow, "{ok:?}");
    let placement = ok.placement.unwrap();
    assert_eq!(
        (placement.depth, placement.root_principal.as_str()),
        (1, "orchestrator")
    );
    assert_eq!(
        ok.ttl_seconds, 40,
        "default TTL 60 is capped by the parent's remaining 40 s"
    );

    // Nothing delegable, another action, another resource.
    assert_eq!(
        reasons(&live(parent_claims(0, None)), &child(&|_| {})),
        vec![DenyReason::ScopeExceedsParent]
    );
    let other_resource = child(&|r| r.resource = ResourceRef::new("Tool", "paypal"));
    assert_eq!(
        reasons(&live(parent_claims(0, dlg(1, None))), &other_resource),
        vec![DenyReason::ScopeExceedsParent]
    );
    // A longer lifetime than the parent allows.
    let long = child(&|r| r.ttl_seconds = Some(50));
    assert_eq!(
        reasons(&live(parent_claims(0, dlg(1, None))), &long),
        vec![DenyReason::ScopeExceedsParent]
    );
    let over_dlg_ttl = child(&|r| r.ttl_seconds = Some(20));
    assert_eq!(
        reasons(&live(parent_claims(0, dlg(1, Some(10)))), &over_dlg_ttl),
        vec![DenyReason::ScopeExceedsParent]
    );
    // Depth: past the global bound, or re-delegating what may not go further down.
    assert_eq!(
        reasons(&live(parent_claims(8, dlg(1, None))), &child(&|_| {})),
        vec![DenyReason::LineageTooDeep]
    );
    let redelegate = child(&|r| {
        r.delegate = Some(Delegation {
            actions: vec!["refund".into()],
            resources: None,
            ttl_seconds: None,
            depth: 1,
        })
    });
    assert_eq!(
        reasons(&live(parent_claims(0, dlg(1, None))), &redelegate),
        vec![DenyReason::LineageTooDeep]
    );
    assert_eq!(
        e.decide(
            &agent(),
            &redelegate,
            &live(parent_claims(0, dlg(2, None))),
            &crate::EnvironmentCheck::Unbound,
            Some(&p),
            NOW
        )
        .decision,
        Decision::Allow
    );
    // Parent problems found by the control plane keep their own reasons.
    assert_eq!(
        reasons(
            &ParentCheck::Revoked {
                parent: ExecutionId::random().unwrap(),
                message: "gone".into()
            },
            &child(&|_| {})
        ),
        vec![DenyReason::ParentRevoked]
    );
    assert_eq!(
        reasons(&ParentCheck::Invalid("bad".into()), &child(&|_| {})),
        vec![DenyReason::ParentInvalid]
    );
}
