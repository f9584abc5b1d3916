use clearance_model::ResourceRef;
use clearance_model::wire::PolicyBundle;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::{CompiledPolicy, PolicyError, PolicyOutcome, PolicyRequest};

const SCHEMA: &str = r#"
entity Agent;
entity Tool;
type RefundArgs = { amount: Long, currency: String };
action payments;
action refund in [payments] appliesTo {
    principal: Agent, resource: Tool,
    context: { arguments: RefundArgs, request_time: Long }
};
action charge in [payments] appliesTo {
    principal: Agent, resource: Tool,
    context: { arguments: { amount: Long } }
};
action ping appliesTo { principal: Agent, resource: Tool };
"#;

const POLICIES: &str = r#"
@id("small-refunds")
permit(principal, action == Action::"refund", resource)
when { context.arguments.amount <= 500 };

@id("no-large-refunds")
forbid(principal, action == Action::"refund", resource)
when { context.arguments.amount > 1000 };

@id("overflowing")
forbid(principal, action == Action::"charge", resource)
when { context.arguments.amount * 4611686018427387904 > 0 };

@id("charges")
permit(principal, action in Action::"payments", resource)
when { context has arguments };

@id("ping")
permit(principal, action, resource == Tool::"health");
"#;

fn bundle(schema: &str, policies: &str) -> PolicyBundle {
    PolicyBundle {
        schema: schema.into(),
        policies: policies.into(),
    }
}

fn compiled() -> Result<CompiledPolicy, PolicyError> {
    CompiledPolicy::compile(&bundle(SCHEMA, POLICIES))
}

fn ask(policy: &CompiledPolicy, action: &str, resource: &str, arguments: Value) -> PolicyOutcome {
    policy.evaluate(&PolicyRequest {
        principal: "billing-bot",
        action,
        resource: &ResourceRef::new("Tool", resource),
        arguments: &arguments,
        context: &json!({}),
        request_time: 1_795_428_000,
        lineage: crate::Lineage {
            depth: 0,
            root: "billing-bot",
        },
        environment: None,
    })
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn permit_forbid_and_no_permit() -> Result<(), PolicyError> {
    let p = compiled()?;
    let small = json!({"amount": 120, "currency": "EUR"});
    assert_eq!(
        ask(&p, "refund", "stripe", small),
        PolicyOutcome::Permit {
            policies: ids(&["charges", "small-refunds"])
        }
    );
    // 700 is permitted by `charges` (action group) only.
    let mid = json!({"amount": 700, "currency": "EUR"});
    assert_eq!(
        ask(&p, "refund", "stripe", mid),
        PolicyOutcome::Permit {
            policies: ids(&["charges"])
        }
    );
    let large = json!({"amount": 5000, "currency": "EUR"});
    assert_eq!(
        ask(&p, "refund", "stripe", large),
        PolicyOutcome::Forbidden {
            policies: ids(&["no-large-refunds"])
        }
    );
    assert_eq!(ask(&p, "ping", "other", json!({})), PolicyOutcome::NotPermitted);
    assert_eq!(
        ask(&p, "ping", "health", json!({})),
        PolicyOutcome::Permit {
            policies: ids(&["ping"])
        }
    );
    Ok(())
}

/// Cedar skips a policy whose evaluation errors: here the erroring forbid would be
/// ignored and the permit would allow. Clearance denies with the erroring policy named.
#[test]
fn evaluation_error_denies_where_cedar_alone_would_allow() -> Result<(), Box<dyn std::error::Error>> {
    use std::str::FromStr;
    let p = compiled()?;
    let outcome = ask(&p, "charge", "stripe", json!({"amount": 3}));
    let PolicyOutcome::EvaluationError { policies, message } = outcome else {
        return Err(format!("expected an evaluation error, got {outcome:?}").into());
    };
    assert_eq!(policies, ids(&["overflowing"]));
    assert!(message.contains("overflow"), "{message}");

    // The same request straight through Cedar: allowed, with the error only in diagnostics.
    let schema = cedar_policy::Schema::from_str(SCHEMA)?;
    let pset = cedar_policy::PolicySet::from_str(POLICIES)?;
    let action = cedar_policy::EntityUid::from_str(r#"Action::"charge""#)?;
    let ctx = cedar_policy::Context::from_json_value(json!({"arguments": {"amount": 3}}), Some((&schema, &action)))?;
    let req = cedar_policy::Request::new(
        cedar_policy::EntityUid::from_str(r#"Agent::"billing-bot""#)?,
        action,
        cedar_policy::EntityUid::from_str(r#"Tool::"stripe""#)?,
        ctx,
        Some(&schema),
    )?;
    let entities = schema.action_entities()?;
    let response = cedar_policy::Authorizer::new().is_authorized(&req, &pset, &entities);
    assert_eq!(response.decision(), cedar_policy::Decision::Allow);
    assert_eq!(response.diagnostics().errors().count(), 1);
    Ok(())
}

#[test]
fn ill_typed_and_unknown_requests_are_invalid() -> Result<(), PolicyError> {
    let p = compiled()?;
    let cases = [
        ask(&p, "refund", "stripe", json!({"amount": "120", "currency": "EUR"})),
        ask(&p, "refund", "stripe", json!({"amount": 120})),
        ask(
            &p,
            "refund",
            "stripe",
            json!({"amount": 120, "currency": "EUR", "extra": 1}),
        ),
        ask(&p, "teleport", "stripe", json!({})),
        ask(&p, "ping", "health", json!({"unexpected": true})),
    ];
    for outcome in cases {
        assert!(matches!(outcome, PolicyOutcome::InvalidRequest { .. }), "{outcome:?}");
    }
    let wrong_type = p.evaluate(&PolicyRequest {
        principal: "billing-bot",
        action: "ping",
        resource: &ResourceRef::new("Agent", "x"),
        arguments: &json!({}),
        context: &json!({}),
        request_time: 0,
        lineage: crate::Lineage {
            depth: 0,
            root: "billing-bot",
        },
        environment: None,
    });
    assert!(
        matches!(wrong_type, PolicyOutcome::InvalidRequest { .. }),
        "{wrong_type:?}"
    );
    Ok(())
}

#[test]
fn rejects_bad_bundles_with_messages() {
    let cases: [(PolicyBundle, &str); 7] = [
        (
            bundle(
                "entity Agent; action x appliesTo { principal: Agent, resource: Agent, context: { nope: Long } };",
                "",
            ),
            "`nope`",
        ),
        (bundle("entity Tool;", ""), "`Agent`"),
        (
            bundle(
                SCHEMA,
                "permit(principal, action == Action::\"refund\", resource) when { context.arguments.amout > 1 };",
            ),
            "amout",
        ),
        (bundle(SCHEMA, "permit(principal, action, resource"), "parse"),
        (
            bundle(
                SCHEMA,
                "@id(\"a\") permit(principal, action, resource);\n@id(\"a\") forbid(principal, action, resource);",
            ),
            "used twice",
        ),
        (
            bundle(SCHEMA, "@approval(\"required\") permit(principal, action, resource);"),
            "approval",
        ),
        (
            bundle(SCHEMA, "permit(principal == ?principal, action, resource);"),
            "template",
        ),
    ];
    for (b, needle) in cases {
        match CompiledPolicy::compile(&b) {
            Ok(_) => panic!("bundle accepted, expected an error mentioning {needle}"),
            Err(e) => assert!(e.to_string().contains(needle), "{e} should mention {needle}"),
        }
    }
}

#[test]
fn version_is_content_address() -> Result<(), PolicyError> {
    let a = compiled()?;
    let b = compiled()?;
    assert_eq!(a.version(), b.version());
    let c = CompiledPolicy::compile(&bundle(SCHEMA, &format!("{POLICIES}\n// comment")))?;
    assert_ne!(a.version(), c.version());
    Ok(())
}

#[test]
fn slicing_keeps_only_policies_that_can_apply() -> Result<(), PolicyError> {
    let p = compiled()?;
    // refund: small-refunds, no-large-refunds, charges (via group), ping (any action).
    assert_eq!(p.policies_for_action("refund"), Some(4));
    assert_eq!(p.policies_for_action("charge"), Some(3));
    assert_eq!(p.policies_for_action("ping"), Some(1));
    assert_eq!(p.policies_for_action("nope"), None);
    Ok(())
}

proptest! {
    /// The sliced evaluation agrees with evaluating the whole bundle, for any request.
    #[test]
    fn sliced_equals_unsliced(
        action in prop::sample::select(vec!["refund", "charge", "ping", "payments", "unknown"]),
        resource in prop::sample::select(vec!["stripe", "health"]),
        amount in prop_oneof![-5i64..2000, Just(i64::MAX), Just(i64::MIN)],
        with_currency in any::<bool>(),
        time in any::<i64>(),
    ) {
        let p = compiled().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut args = json!({"amount": amount});
        if with_currency { args["currency"] = json!("EUR"); }
        if action == "ping" || action == "payments" { args = json!({}); }
        let req = PolicyRequest {
            principal: "p",
            action,
            resource: &ResourceRef::new("Tool", resource),
            arguments: &args,
            context: &json!({}),
            request_time: time,
            lineage: crate::Lineage { depth: 0, root: "billing-bot" },
            environment: None,
        };
        let all = p.all_policies().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(all.policies().count(), p.policy_ids().len());
        prop_assert_eq!(p.evaluate(&req), p.evaluate_unsliced(&all, &req));
    }
}

#[test]
fn policies_see_lineage_depth_and_root() -> Result<(), PolicyError> {
    let schema = r#"
entity Agent;
entity Tool;
action run appliesTo {
    principal: Agent, resource: Tool,
    context: { lineage: { depth: Long, root: String } }
};
"#;
    let policies = r#"
@id("shallow-from-ops")
permit(principal, action, resource)
when { context.lineage.depth <= 1 && context.lineage.root == "ops-bot" };
"#;
    let p = CompiledPolicy::compile(&bundle(schema, policies))?;
    let ask = |depth: u32, root: &str| {
        p.evaluate(&PolicyRequest {
            principal: "worker",
            action: "run",
            resource: &ResourceRef::new("Tool", "shell"),
            arguments: &json!({}),
            context: &json!({}),
            request_time: 0,
            lineage: crate::Lineage { depth, root },
            environment: None,
        })
    };
    assert!(matches!(ask(1, "ops-bot"), PolicyOutcome::Permit { .. }));
    assert_eq!(ask(2, "ops-bot"), PolicyOutcome::NotPermitted);
    assert_eq!(ask(0, "someone-else"), PolicyOutcome::NotPermitted);
    Ok(())
}

const SCOPED: &str = r#"
@id("anyone-pings-health")
permit(principal, action == Action::"ping", resource == Tool::"health");

@id("only-ops-refunds")
permit(principal == Agent::"ops", action == Action::"refund", resource)
when { context.arguments.amount < 10 };

@id("agents-charge-stripe")
permit(principal is Agent, action == Action::"charge", resource in Tool::"stripe");

@id("nobody-charges-paypal")
forbid(principal, action == Action::"charge", resource == Tool::"paypal");
"#;

#[test]
fn may_permit_reads_the_scope_of_permits_only() -> Result<(), PolicyError> {
    let p = CompiledPolicy::compile(&bundle(SCHEMA, SCOPED))?;
    let tool = |id: &str| ResourceRef::new("Tool", id);
    for (principal, action, resource, expected) in [
        ("bot", "ping", "health", true),
        ("bot", "ping", "stripe", false),
        ("ops", "refund", "stripe", true),
        ("bot", "refund", "stripe", false),
        ("bot", "charge", "stripe", true),
        ("bot", "charge", "paypal", false),
        ("bot", "payments", "stripe", false),
        ("bot", "undeclared", "stripe", false),
    ] {
        assert_eq!(
            p.may_permit(principal, action, &tool(resource)),
            expected,
            "{principal} {action} {resource}"
        );
    }
    assert!(!p.may_permit("bot", "ping", &ResourceRef::new("not a type", "health")));
    Ok(())
}

proptest! {
    /// Whatever a request's arguments, it is permitted only where `may_permit` says it
    /// may be: hiding what `may_permit` rules out never hides something usable.
    #[test]
    fn nothing_permitted_is_ruled_out(
        principal in prop::sample::select(vec!["ops", "bot"]),
        action in prop::sample::select(vec!["refund", "charge", "ping"]),
        resource in prop::sample::select(vec!["stripe", "health", "paypal"]),
        amount in -5i64..2000,
        scoped in any::<bool>(),
    ) {
        let policies = if scoped { SCOPED } else { POLICIES };
        let p = CompiledPolicy::compile(&bundle(SCHEMA, policies)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let args = match action {
            "refund" => json!({"amount": amount, "currency": "EUR"}),
            "charge" => json!({"amount": amount}),
            _ => json!({}),
        };
        let outcome = p.evaluate(&PolicyRequest {
            principal,
            action,
            resource: &ResourceRef::new("Tool", resource),
            arguments: &args,
            context: &json!({}),
            request_time: 1_795_428_000,
            lineage: crate::Lineage { depth: 0, root: principal },
            environment: None,
        });
        if matches!(outcome, PolicyOutcome::Permit { .. }) {
            prop_assert!(p.may_permit(principal, action, &ResourceRef::new("Tool", resource)));
        }
    }
}

/// Nesting that would overflow the parser's stack is refused before parsing, wherever it
/// is (parentheses, set literals, records, type arguments); strings and comments do not
/// count, and the deepest allowed nesting still compiles.
#[test]
fn deep_nesting_is_refused_before_parsing() {
    use clearance_model::limits::MAX_POLICY_NESTING;
    let deep = 10_000;
    let policy = |expr: String| {
        bundle(
            SCHEMA,
            &format!("permit(principal, action == Action::\"refund\", resource) when {{ {expr} }};"),
        )
    };
    for (b, what) in [
        (
            policy(format!("{}1{} == 1", "(".repeat(deep), ")".repeat(deep))),
            "policies",
        ),
        (
            policy(format!("{}1{} == 1", "[".repeat(deep), "]".repeat(deep))),
            "policies",
        ),
        (
            bundle(
                &format!(
                    "entity Agent; entity Tool; type T = {}Long{};",
                    "Set<".repeat(deep),
                    ">".repeat(deep)
                ),
                "",
            ),
            "schema",
        ),
    ] {
        match CompiledPolicy::compile(&b) {
            Err(PolicyError::TooDeep {
                what: got,
                line: 1,
                max,
            }) => {
                assert_eq!((got, max), (what, MAX_POLICY_NESTING));
            }
            other => panic!("{what}: {:?}", other.map(|_| ())),
        }
    }
    // Brackets inside strings and comments are not nesting.
    let quoted = policy(format!(
        "context.arguments.currency == \"{}\" // {}\n",
        "(".repeat(100),
        "[".repeat(100)
    ));
    assert!(!matches!(
        CompiledPolicy::compile(&quoted),
        Err(PolicyError::TooDeep { .. })
    ));
    let limit = MAX_POLICY_NESTING - 1;
    let allowed = policy(format!(
        "context.arguments.amount == {}1{}",
        "(".repeat(limit),
        ")".repeat(limit)
    ));
    let compiled = CompiledPolicy::compile(&allowed);
    assert!(compiled.is_ok(), "{:?}", compiled.map(|_| ()));
}

/// Validation narrowed per action must judge every bundle as Cedar does over the whole
/// schema: the same verdict and, on failure, the same errors.
#[test]
fn narrowed_validation_agrees_with_cedar_over_the_whole_schema() {
    let cases = [
        // Scoped to one action: validated against that action alone.
        r#"permit(principal, action == Action::"refund", resource) when { context.arguments.amount < 5 };"#,
        // Ill-typed for its own action.
        r#"permit(principal, action == Action::"charge", resource) when { context.arguments.currency == "EUR" };"#,
        // Ill-typed only if it were checked for another action: still valid.
        r#"permit(principal, action == Action::"ping", resource) when { false && context.arguments.amount > 1 };"#,
        // Names another action in its condition: the narrowed schema lacks it, the whole one has it.
        r#"permit(principal, action == Action::"refund", resource) when { Action::"charge" in Action::"payments" };"#,
        // Not scoped to one action: validated against the whole schema.
        r#"permit(principal, action in Action::"payments", resource) when { context.arguments.amount > 1 };"#,
        // Any action, ill-typed for `ping` (no arguments).
        r#"permit(principal, action, resource) when { context.arguments.amount > 1 };"#,
        // An undeclared action.
        r#"permit(principal, action == Action::"missing", resource);"#,
    ];
    let mut refused = 0;
    for policies in cases {
        let schema = cedar_policy::Schema::from_cedarschema_str(SCHEMA).unwrap().0;
        let set: cedar_policy::PolicySet = policies.parse().unwrap();
        let whole = cedar_policy::Validator::new(schema).validate(&set, cedar_policy::ValidationMode::Strict);
        // Cedar's own errors, located as Clearance locates them.
        let expected: Vec<String> = whole
            .validation_errors()
            .flat_map(|e| crate::located::messages(crate::POLICIES_SOURCE, policies, 0, e))
            .collect();
        match CompiledPolicy::compile(&bundle(SCHEMA, policies)) {
            Ok(_) => assert!(
                whole.validation_passed(),
                "{policies}: accepted, Cedar refuses: {expected:?}"
            ),
            Err(PolicyError::Validation(got)) => {
                assert!(
                    !whole.validation_passed(),
                    "{policies}: refused, Cedar accepts: {got:?}"
                );
                assert_eq!(got, expected, "{policies}");
                refused += 1;
            }
            Err(e) => panic!("{policies}: {e}"),
        }
    }
    assert_eq!(refused, 3, "the two ill-typed bundles and the undeclared action");
}

/// A bundle of `n` policies: every third named by `@id`, every third after a comment, and
/// `;` and `//` inside strings and comments throughout. Statement `bad` (if any) does not
/// parse.
fn many_policies(n: usize, bad: Option<usize>) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    for i in 0..n {
        let statement = match i % 3 {
            0 => format!(
                "@id(\"p{i}\")\npermit(principal, action, resource) when {{ context has note && context.note == \"a; b // {i}\" }};"
            ),
            1 => format!("// {i}; a comment with a semicolon\nforbid(principal, action, resource == Tool::\"t{i}\");"),
            _ => format!("permit(principal, action == Action::\"ping\", resource) when {{ \"x;{i}\" like \"*;*\" }};"),
        };
        let statement = if bad == Some(i) {
            statement.replacen("permit(principal", "permit(principal principal", 1)
        } else {
            statement
        };
        writeln!(text, "{statement}").unwrap();
    }
    text
}

/// Large bundles are parsed a chunk of statements at a time (the whole bundle's parse tree
/// was most of the server's resident memory): the same policies, ids and text as one
/// parse of the whole, whatever `;` hides in strings and comments; a statement missing its
/// `;` at the end, or a bad one in a middle chunk, still fails the whole bundle.
#[test]
fn chunked_parsing_gives_what_one_parse_gives() {
    use std::str::FromStr as _;
    let text = many_policies(700, None);
    let chunked = crate::compile::parse_policies(&text).unwrap().set;
    let whole = cedar_policy::PolicySet::from_str(&text).unwrap();
    assert_eq!(chunked.policies().count(), 700);
    for p in whole.policies() {
        let n: usize = p.id().to_string().strip_prefix("policy").unwrap().parse().unwrap();
        let id = if n.is_multiple_of(3) {
            format!("p{n}")
        } else {
            format!("policy{n}")
        };
        let got = chunked
            .policy(&cedar_policy::PolicyId::new(&id))
            .unwrap_or_else(|| panic!("no policy `{id}`"));
        assert_eq!(got.to_string(), p.to_string(), "{id}");
    }
    let unterminated = format!("{text}permit(principal, action, resource)");
    assert!(matches!(
        crate::compile::parse_policies(&unterminated),
        Err(PolicyError::Parse(_))
    ));
    assert!(matches!(
        crate::compile::parse_policies(&many_policies(700, Some(402))),
        Err(PolicyError::Parse(_))
    ));
}

/// Parse, schema and validation errors name the line and column they are at; a policy
/// without `@id` is named after its position, with a warning saying where it is.
#[test]
fn errors_and_warnings_say_where_they_are() {
    let parse = CompiledPolicy::compile(&bundle(
        SCHEMA,
        "@id(\"a\")\npermit(principal, action, resource)\n  when { 1 + };\n",
    ));
    assert_eq!(
        parse.err(),
        Some(PolicyError::Parse(vec!["policies:3:14: unexpected token `}`".into()]))
    );
    let schema = CompiledPolicy::compile(&bundle("entity Agent;\nentity Tool\naction x;\n", POLICIES));
    assert_eq!(
        schema.err(),
        Some(PolicyError::Schema(vec![
            "schema:3:1: error parsing schema: unexpected token `action`".into()
        ]))
    );
    let typed = CompiledPolicy::compile(&bundle(
        SCHEMA,
        "@id(\"a\")\npermit(principal, action == Action::\"refund\", resource)\n  when { context.arguments.amount == \"x\" };\n",
    ));
    let Some(PolicyError::Validation(messages)) = typed.err() else {
        panic!("not a validation error")
    };
    assert!(
        messages[0].starts_with("policies:3:10: the types Long and String are not compatible"),
        "{messages:?}"
    );
    assert!(messages[0].contains("for policy `a`"), "{messages:?}");

    let unnamed = CompiledPolicy::compile(&bundle(
        SCHEMA,
        "// x\npermit(principal, action == Action::\"refund\", resource);\n\n// may forbid nothing\n  forbid(principal, action, resource) when { false };",
    ))
    .unwrap();
    let warnings = unnamed.warnings();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("policies:2:1: this policy has no @id"),
        "{warnings:?}"
    );
    assert!(
        // At the keyword, not at the comment above it that mentions it.
        warnings[1].starts_with("policies:5:3: this policy has no @id"),
        "{warnings:?}"
    );
    assert!(warnings[1].contains("`policy1`"), "{warnings:?}");
    assert!(compiled().unwrap().warnings().is_empty());
}

/// A validation error in a policy parsed in a later chunk of a large bundle still points
/// at its line in the whole text.
#[test]
fn errors_in_later_chunks_point_into_the_whole_text() {
    let mut text: String = (0..600)
        .map(|i| format!("@id(\"p{i}\")\npermit(principal, action == Action::\"ping\", resource);\n"))
        .collect();
    let line = text.matches('\n').count() + 3;
    text.push_str("\n@id(\"late\")\npermit(principal, action == Action::\"refund\", resource) when { context.arguments.amount == \"x\" };\n");
    let Some(PolicyError::Validation(messages)) = CompiledPolicy::compile(&bundle(SCHEMA, &text)).err() else {
        panic!("not a validation error")
    };
    assert!(
        messages[0].starts_with(&format!("policies:{line}:")),
        "line {line}: {messages:?}"
    );
}

/// A request whose arguments do not fit the schema is refused naming the field and what
/// it should be, without quoting any value.
#[test]
fn ill_typed_arguments_name_the_field() {
    let policy = compiled().unwrap();
    let why = |arguments: Value| match ask(&policy, "refund", "stripe", arguments) {
        PolicyOutcome::InvalidRequest { message } => message,
        other => panic!("not refused: {other:?}"),
    };
    assert_eq!(
        why(json!({"amount": "12", "currency": "EUR"})),
        "request does not match action `refund`: `context.arguments.amount` must be a Long (a whole number \
         within 64 bits), but it is a string"
    );
    assert_eq!(
        why(json!({"amount": 1.5, "currency": "EUR"})),
        "request does not match action `refund`: `context.arguments.amount` must be a Long (a whole number \
         within 64 bits), but it is a number with a fraction"
    );
    assert_eq!(
        why(json!({"amount": 12, "currency": 5})),
        "request does not match action `refund`: `context.arguments.currency` must be a String, but it is a number"
    );
    assert_eq!(
        why(json!({"amount": 12})),
        "request does not match action `refund`: `context.arguments.currency` is missing"
    );
    assert_eq!(
        why(json!({"amount": 12, "currency": "EUR", "memo": "secret"})),
        "request does not match action `refund`: `context.arguments.memo` is not declared in the schema for this action"
    );
}
