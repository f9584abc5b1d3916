//! Named bounds on everything a caller controls. Each has its own error where it is checked.

/// Largest request body the API accepts, except on the policy routes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest request body of the policy routes (push, validate): a bundle at its limit
/// with room for JSON escaping.
pub const MAX_POLICY_REQUEST_BYTES: usize = 2 * MAX_POLICY_BUNDLE_BYTES + 64 * 1024;
/// Deepest nesting of JSON arrays and objects in `arguments` and `context`.
pub const MAX_JSON_DEPTH: usize = 32;
/// Longest action name.
pub const MAX_ACTION_BYTES: usize = 128;
/// Longest resource type or id.
pub const MAX_RESOURCE_BYTES: usize = 256;
/// Actions one `POST /v1/authorize/permitted` may ask about.
pub const MAX_PERMITTED_ACTIONS: usize = 1024;
/// Longest environment id.
pub const MAX_ENVIRONMENT_BYTES: usize = 128;
/// Longest principal id.
pub const MAX_PRINCIPAL_ID_BYTES: usize = 128;
/// Largest clearance token an enforcement point will parse.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Largest policy bundle (schema plus policies) accepted on push: room for 10,000
/// policies over 1,000 actions and more.
pub const MAX_POLICY_BUNDLE_BYTES: usize = 16 * 1024 * 1024;
/// Deepest nesting of brackets (parentheses, set literals, records, type arguments) in a
/// policy or schema text, checked before parsing: Cedar's parser and validator recurse
/// per level, and a few dozen levels overflow a thread's stack.
pub const MAX_POLICY_NESTING: usize = 24;
/// Default clearance lifetime.
pub const DEFAULT_TTL_SECONDS: u64 = 60;
/// Default upper bound on a requested clearance lifetime.
pub const DEFAULT_MAX_TTL_SECONDS: u64 = 300;
/// Default clock leeway at enforcement points.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 5;
