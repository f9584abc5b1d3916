//! Turning a bundle into a validated, action-sliced policy.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    ActionConstraint, Entities, EntityTypeName, EntityUid, PolicyId, PolicySet, Schema, SchemaFragment, ValidationMode,
    Validator,
};
use clearance_model::canonical::{Digest, canonical_json};
use clearance_model::ids::PolicyVersion;
use clearance_model::limits::{MAX_POLICY_BUNDLE_BYTES, MAX_POLICY_NESTING};
use clearance_model::wire::PolicyBundle;

use serde_json::Value;

use crate::PRINCIPAL_TYPE;
use crate::context::{ActionContext, ContextShape, DeclaredInputs, context_shapes};
use crate::located::{POLICIES_SOURCE, SCHEMA_SOURCE, line_column, messages};

/// Why a bundle was rejected. Each variant carries the engine's messages verbatim.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("policy bundle is {got} bytes, more than the limit of {max}")]
    TooLarge { got: usize, max: usize },
    #[error("schema is invalid: {}", .0.join("; "))]
    Schema(Vec<String>),
    #[error("policies do not parse: {}", .0.join("; "))]
    Parse(Vec<String>),
    #[error("policies do not validate against the schema: {}", .0.join("; "))]
    Validation(Vec<String>),
    #[error("{0}")]
    Unsupported(String),
    #[error("the {what} nest brackets more than {max} deep (line {line})")]
    TooDeep {
        what: &'static str,
        line: usize,
        max: usize,
    },
}

impl PolicyError {
    /// The individual messages, for clients that show them one per line.
    pub fn messages(&self) -> Vec<String> {
        match self {
            Self::Schema(m) | Self::Parse(m) | Self::Validation(m) => m.clone(),
            other => vec![other.to_string()],
        }
    }
}

/// Refuse text that nests any of `opening` brackets deeper than [`MAX_POLICY_NESTING`],
/// before any parser sees it. Strings and `//` comments are skipped.
fn check_nesting(what: &'static str, text: &str, opening: &str) -> Result<(), PolicyError> {
    let (mut depth, mut line) = (0usize, 1usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            '"' => {
                // A string literal, with backslash escapes.
                while let Some(s) = chars.next() {
                    match s {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        '\n' => line += 1,
                        _ => {}
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for s in chars.by_ref() {
                    if s == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            c if opening.contains(c) => {
                depth += 1;
                if depth > MAX_POLICY_NESTING {
                    return Err(PolicyError::TooDeep {
                        what,
                        line,
                        max: MAX_POLICY_NESTING,
                    });
                }
            }
            ')' | '}' | ']' | '>' => depth = depth.saturating_sub(usize::from(opening.contains(matching(c)))),
            _ => {}
        }
    }
    Ok(())
}

/// The opening bracket a closing one ends.
const fn matching(close: char) -> char {
    match close {
        ')' => '(',
        '}' => '{',
        ']' => '[',
        _ => '<',
    }
}

/// The version name of a bundle: SHA-256 of the RFC 8785 canonical JSON of
/// `{"policies": ..., "schema": ...}`, so the same texts always name the same version.
pub fn policy_version(bundle: &PolicyBundle) -> Result<PolicyVersion, PolicyError> {
    let bytes = canonical_json(bundle).map_err(|e| PolicyError::Schema(vec![e.to_string()]))?;
    Ok(PolicyVersion::from_digest(Digest::of(&bytes)))
}

/// A validated bundle, ready to evaluate.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub(crate) version: PolicyVersion,
    pub(crate) schema: Schema,
    pub(crate) principal_type: EntityTypeName,
    pub(crate) action_entities: Entities,
    /// Only the slices keep policies: with 10,000 policies a second, whole copy of the
    /// bundle would cost about 50 MB.
    pub(crate) slices: HashMap<String, ActionSlice>,
    policy_ids: Vec<String>,
    /// What is allowed but probably not meant, with where it is (unnamed policies).
    warnings: Vec<String>,
}

/// The policies that can apply to one action, and what its context holds.
#[derive(Debug)]
pub(crate) struct ActionSlice {
    pub uid: EntityUid,
    pub policies: PolicySet,
    pub context: ContextShape,
    /// Read only to explain a request that does not fit.
    pub inputs: DeclaredInputs,
}

impl CompiledPolicy {
    /// Parse, strictly validate and slice a bundle.
    pub fn compile(bundle: &PolicyBundle) -> Result<Self, PolicyError> {
        let size = bundle.schema.len() + bundle.policies.len();
        if size > MAX_POLICY_BUNDLE_BYTES {
            return Err(PolicyError::TooLarge {
                got: size,
                max: MAX_POLICY_BUNDLE_BYTES,
            });
        }
        check_nesting("schema", &bundle.schema, "({[<")?;
        check_nesting("policies", &bundle.policies, "({[")?;
        let version = policy_version(bundle)?;
        let schema_error =
            |e: &dyn miette::Diagnostic| PolicyError::Schema(messages(SCHEMA_SOURCE, &bundle.schema, 0, e));
        let (schema, _warnings) = Schema::from_cedarschema_str(&bundle.schema).map_err(|e| schema_error(&e))?;
        let (fragment, _) = SchemaFragment::from_cedarschema_str(&bundle.schema).map_err(|e| schema_error(&e))?;
        let fragment_json = fragment
            .to_json_value()
            .map_err(|e| PolicyError::Schema(vec![e.to_string()]))?;
        let (namespace, mut shapes) = context_shapes(&fragment_json)?;

        let qualify = |name: &str| {
            if namespace.is_empty() {
                name.to_owned()
            } else {
                format!("{namespace}::{name}")
            }
        };
        let principal_type =
            EntityTypeName::from_str(&qualify(PRINCIPAL_TYPE)).map_err(|e| PolicyError::Schema(vec![e.to_string()]))?;
        if !schema.entity_types().any(|t| t == &principal_type) {
            return Err(PolicyError::Schema(vec![format!(
                "schema must declare entity type `{principal_type}`: every request's principal is an `{principal_type}`"
            )]));
        }

        let Parsed {
            set: all,
            bases,
            unnamed,
        } = parse_policies(&bundle.policies)?;
        let action_entities = schema
            .action_entities()
            .map_err(|e| PolicyError::Schema(vec![e.to_string()]))?;
        validate(&schema, &fragment_json, &namespace, &action_entities, &all).map_err(|errors| {
            PolicyError::Validation(
                errors
                    .iter()
                    .flat_map(|e| {
                        let base = bases.get(e.policy_id()).copied().unwrap_or(0);
                        messages(POLICIES_SOURCE, &bundle.policies, base, e)
                    })
                    .collect(),
            )
        })?;
        let warnings = unnamed
            .iter()
            .map(|(id, offset)| {
                let (line, column) = line_column(&bundle.policies, *offset);
                format!(
                    "{POLICIES_SOURCE}:{line}:{column}: this policy has no @id(\"...\"), so it is named `{id}` after its \
                     position, and decisions and the log cite that name: it changes when a policy is added above it"
                )
            })
            .collect();
        // Each policy's action scope is read once: with thousands of policies and actions,
        // asking every policy once per action is quadratic.
        let mut by_action: HashMap<EntityUid, Vec<&cedar_policy::Policy>> = HashMap::new();
        let mut any_action = Vec::new();
        let mut in_actions = Vec::new();
        for policy in all.policies() {
            match policy.action_constraint() {
                ActionConstraint::Any => any_action.push(policy),
                ActionConstraint::Eq(target) => by_action.entry(target).or_default().push(policy),
                ActionConstraint::In(targets) => in_actions.push((policy, targets)),
            }
        }
        let mut slices = HashMap::new();
        for uid in schema.actions() {
            let name = uid.id().unescaped().to_owned();
            let mut in_scope: HashSet<&EntityUid> = HashSet::from([uid]);
            in_scope.extend(action_entities.ancestors(uid).into_iter().flatten());
            let mut policies = PolicySet::new();
            let scoped = in_actions
                .iter()
                .filter(|(_, targets)| targets.iter().any(|t| in_scope.contains(t)))
                .map(|(policy, _)| *policy);
            let applying = any_action
                .iter()
                .copied()
                .chain(by_action.get(uid).into_iter().flatten().copied())
                .chain(scoped);
            for policy in applying {
                policies
                    .add(policy.clone())
                    .map_err(|e| PolicyError::Parse(vec![e.to_string()]))?;
            }
            let ActionContext { shape, inputs } = shapes.remove(&name).unwrap_or_default();
            slices.insert(
                name,
                ActionSlice {
                    uid: uid.clone(),
                    policies,
                    context: shape,
                    inputs,
                },
            );
        }

        let mut policy_ids: Vec<String> = all.policies().map(|p| p.id().to_string()).collect();
        policy_ids.sort();
        Ok(Self {
            version,
            schema,
            principal_type,
            action_entities,
            slices,
            policy_ids,
            warnings,
        })
    }

    pub fn version(&self) -> PolicyVersion {
        self.version
    }

    /// The whole bundle, rebuilt from the slices, for [`Self::evaluate_unsliced`]: the
    /// reference that sliced evaluation is tested and measured against.
    pub fn all_policies(&self) -> Result<PolicySet, PolicyError> {
        let mut all = PolicySet::new();
        for slice in self.slices.values() {
            for policy in slice.policies.policies() {
                if all.policy(policy.id()).is_none() {
                    all.add(policy.clone())
                        .map_err(|e| PolicyError::Parse(vec![e.to_string()]))?;
                }
            }
        }
        Ok(all)
    }

    /// Every policy id in the bundle, sorted.
    pub fn policy_ids(&self) -> &[String] {
        &self.policy_ids
    }

    /// Warnings about the bundle as written, each with its place (`policies:LINE:COL`).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Every action the schema declares, sorted.
    pub fn actions(&self) -> Vec<String> {
        let mut actions: Vec<String> = self.slices.keys().cloned().collect();
        actions.sort();
        actions
    }

    /// How many policies a request for `action` meets (None for an unknown action).
    pub fn policies_for_action(&self, action: &str) -> Option<usize> {
        self.slices.get(action).map(|s| s.policies.policies().count())
    }
}

/// Strict validation with the outcome of validating the whole bundle against the whole
/// schema, without its cost for large bundles. Cedar typechecks each policy once per
/// action the schema declares: 10,000 policies over 1,000 actions are ten million checks
/// (about 12 s). A policy scoped to one action (`action == Action::"a"`) typechecks to
/// `false` at its scope for every other action, where Cedar's typechecker stops (`&&`
/// short-circuits), so those checks can find nothing: each such policy is validated
/// once, against the schema narrowed to its action and that action's groups. The other
/// policies are validated against the whole schema. If anything fails, the whole bundle
/// is validated the usual way, so the verdict and the errors are always Cedar's own for
/// the bundle (a scoped policy that names another action also passes that way).
fn validate(
    schema: &Schema,
    fragment: &Value,
    namespace: &str,
    action_entities: &Entities,
    all: &PolicySet,
) -> Result<(), ValidationErrors> {
    let mut scoped: HashMap<EntityUid, Vec<&cedar_policy::Policy>> = HashMap::new();
    let mut rest = PolicySet::new();
    // Ids are unique in `all`, so adding to a subset cannot fail; if it ever did, the
    // quick path is skipped and Cedar validates the whole bundle below.
    let mut split = true;
    for policy in all.policies() {
        match policy.action_constraint() {
            ActionConstraint::Eq(action) => scoped.entry(action).or_default().push(policy),
            ActionConstraint::Any | ActionConstraint::In(_) => split &= rest.add(policy.clone()).is_ok(),
        }
    }
    let passes = |schema: Schema, policies: &PolicySet| {
        Validator::new(schema)
            .validate(policies, ValidationMode::Strict)
            .validation_passed()
    };
    // One action's policies copied at a time: a copy of the whole bundle would double
    // the memory a large bundle needs while it compiles.
    let one_action = |action: &EntityUid, policies: &[&cedar_policy::Policy]| {
        let mut set = PolicySet::new();
        for policy in policies {
            if set.add((*policy).clone()).is_err() {
                return false;
            }
        }
        narrowed_schema(fragment, namespace, action, action_entities).is_some_and(|s| passes(s, &set))
    };
    let quick =
        split && passes(schema.clone(), &rest) && scoped.iter().all(|(action, policies)| one_action(action, policies));
    if quick {
        return Ok(());
    }
    let validation = Validator::new(schema.clone()).validate(all, ValidationMode::Strict);
    if validation.validation_passed() {
        Ok(())
    } else {
        Err(validation.validation_errors().cloned().collect())
    }
}

/// The validator's errors, each naming its policy.
type ValidationErrors = Vec<cedar_policy::ValidationError>;

/// The schema with every action but `action` and its groups left out; `None` if it
/// cannot be built.
fn narrowed_schema(
    fragment: &Value,
    namespace: &str,
    action: &EntityUid,
    action_entities: &Entities,
) -> Option<Schema> {
    let mut keep: HashSet<&str> = HashSet::from([action.id().unescaped()]);
    keep.extend(
        action_entities
            .ancestors(action)
            .into_iter()
            .flatten()
            .map(|group| group.id().unescaped()),
    );
    let body = fragment.get(namespace)?.as_object()?;
    let mut narrowed = serde_json::Map::new();
    for (key, value) in body {
        let value = if key == "actions" {
            Value::Object(
                value
                    .as_object()?
                    .iter()
                    .filter(|(name, _)| keep.contains(name.as_str()))
                    .map(|(name, decl)| (name.clone(), decl.clone()))
                    .collect(),
            )
        } else {
            value.clone()
        };
        narrowed.insert(key.clone(), value);
    }
    let mut whole = serde_json::Map::new();
    whole.insert(namespace.to_owned(), Value::Object(narrowed));
    Schema::from_json_value(Value::Object(whole)).ok()
}

/// Policies parsed at most this many at a time. Cedar's parse tree of a whole bundle is
/// several times the size of the policies it yields (about 60 MB for 10,000), and the
/// allocator keeps that peak resident after it is freed.
const PARSE_CHUNK: usize = 256;

/// A policy text, parsed.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub set: PolicySet,
    /// Where in the text the piece each policy was parsed from begins: Cedar's spans
    /// are relative to that piece.
    pub bases: HashMap<PolicyId, usize>,
    /// Policies without an `@id`: the name they were given, and where they start.
    pub unnamed: Vec<(String, usize)>,
}

/// Parse policies, naming each by its `@id("...")` annotation when it has one and
/// `policyN` (its position in the text) otherwise. Large bundles are parsed a chunk of
/// statements at a time; if a chunk does not parse, the whole text is parsed again, so
/// that errors point into the text as written.
pub(crate) fn parse_policies(text: &str) -> Result<Parsed, PolicyError> {
    let statements = statements(text);
    let mut sets = Vec::new();
    if statements.len() > PARSE_CHUNK {
        let chunks = statements.chunks(PARSE_CHUNK).count();
        for (i, chunk) in statements.chunks(PARSE_CHUNK).enumerate() {
            let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else {
                continue;
            };
            // The last chunk takes whatever follows the last `;` too: a statement missing
            // its `;` must fail, not vanish.
            let end = if i + 1 == chunks { text.len() } else { last.end };
            match text.get(first.start..end).map(PolicySet::from_str) {
                Some(Ok(set)) => sets.push((first.start, set)),
                // The whole text's parse below reports the error where it is.
                _ => {
                    sets.clear();
                    break;
                }
            }
        }
    }
    if sets.is_empty() {
        let set = PolicySet::from_str(text).map_err(|e| PolicyError::Parse(messages(POLICIES_SOURCE, text, 0, &e)))?;
        sets.push((0, set));
    }
    let mut named = PolicySet::new();
    let mut bases = HashMap::new();
    let mut unnamed = Vec::new();
    // The parser numbers each chunk's policies policy0, policy1, ...: source order.
    let mut offset = 0;
    for (base, parsed) in sets {
        if let Some(t) = parsed.templates().next() {
            return Err(PolicyError::Unsupported(format!(
                "policy templates are not supported (template `{}`)",
                t.id()
            )));
        }
        let mut policies: Vec<(usize, &cedar_policy::Policy)> = parsed
            .policies()
            .map(|p| {
                let n = p
                    .id()
                    .to_string()
                    .strip_prefix("policy")
                    .and_then(|n| n.parse::<usize>().ok());
                (n.unwrap_or(usize::MAX), p)
            })
            .collect();
        policies.sort_by_key(|(n, _)| *n);
        for (n, policy) in &policies {
            if policy.annotation("approval").is_some() {
                return Err(PolicyError::Unsupported(format!(
                    "policy `{}` has an `@approval` annotation, but human approval is not supported yet; \
                     remove it rather than have the policy allow without approval",
                    policy.annotation("id").unwrap_or(policy.id().as_ref())
                )));
            }
            let policy = match policy.annotation("id") {
                Some(id) => policy.new_id(PolicyId::new(id)),
                // The first chunk's numbers are already the whole text's, and an id the
                // parser did not number is kept as it is.
                None if offset == 0 || *n == usize::MAX => (*policy).clone(),
                None => policy.new_id(PolicyId::new(format!("policy{}", offset + n))),
            };
            let id = policy.id().to_string();
            if policy.annotation("id").is_none() {
                // The statement it came from, at its `permit` or `forbid`.
                let start = offset
                    .checked_add(*n)
                    .and_then(|i| statements.get(i))
                    .map(|s| keyword_start(text, *s))
                    .unwrap_or(base);
                unnamed.push((id.clone(), start));
            }
            bases.insert(policy.id().clone(), base);
            named
                .add(policy)
                .map_err(|_| PolicyError::Parse(vec![format!("policy id `{id}` is used twice")]))?;
        }
        offset += policies.len();
    }
    Ok(Parsed {
        set: named,
        bases,
        unnamed,
    })
}

/// Where a statement's effect keyword is: the first line, past its comments and
/// annotations, that starts with `permit` or `forbid`; or the statement's start.
fn keyword_start(text: &str, statement: Statement) -> usize {
    let piece = text.get(statement.start..statement.end).unwrap_or_default();
    let mut at = 0;
    for line in piece.split_inclusive('\n') {
        let code = line.trim_start();
        if code.starts_with("permit") || code.starts_with("forbid") {
            return statement.start + at + (line.len() - code.len());
        }
        at += line.len();
    }
    statement.start
}

/// Where one statement of a policy text lies: from the end of the one before (comments,
/// annotations and all) to its closing `;` inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Statement {
    start: usize,
    end: usize,
}

/// The statements of a policy text, found by a scan that skips string literals and
/// comments, where a `;` ends nothing. Text after the last `;` is not a statement.
fn statements(text: &str) -> Vec<Statement> {
    let mut out = Vec::new();
    let (mut start, mut in_string, mut escaped, mut in_comment) = (0, false, false, false);
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if in_comment {
            in_comment = c != '\n';
        } else if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else {
            match c {
                '"' => in_string = true,
                '/' if chars.peek().is_some_and(|(_, n)| *n == '/') => in_comment = true,
                ';' => {
                    out.push(Statement { start, end: i + 1 });
                    start = i + 1;
                }
                _ => {}
            }
        }
    }
    out
}
