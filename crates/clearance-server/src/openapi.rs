//! The OpenAPI 3.1 document, generated from the handlers and wire types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "Clearance control plane", description = "Pre-execution authorization for AI agents."),
    paths(
        routes::authorize::authorize,
        routes::authorize::authorize_and_start,
        routes::authorize::permitted,
        routes::principals::create_principal,
        routes::principals::list_principals,
        routes::principals::issue_key,
        routes::principals::list_keys,
        routes::principals::revoke_key,
        routes::principals::whoami,
        routes::environments::register,
        routes::environments::list,
        routes::environments::show,
        routes::environments::update,
        routes::environments::quarantine,
        routes::environments::release,
        routes::environments::challenge,
        routes::environments::attest,
        routes::executions::start,
        routes::executions::renew,
        routes::executions::complete,
        routes::executions::revoke_execution,
        routes::executions::revoke_principal,
        routes::executions::revoke_signing_key,
        routes::executions::rotate_signing_key,
        routes::executions::lineage,
        routes::executions::revocations,
        routes::executions::stream,
        routes::policies::push_policy,
        routes::policies::validate_policy,
        routes::policies::activate_policy,
        routes::policies::list_policies,
        routes::log::checkpoint,
        routes::log::new_checkpoint,
        routes::log::verifier_key,
        routes::log::entries,
        routes::log::inclusion,
        routes::log::consistency,
        routes::log::evidence,
        routes::meta::jwks,
        routes::meta::livez,
        routes::meta::readyz,
        routes::meta::metrics,
        routes::meta::openapi,
    ),
    modifiers(&BearerKey, &CommonAnswers)
)]
pub(crate) struct ApiDoc;

/// Every answer an operation can give besides its own: the refusals of the layers around
/// every handler (authentication, roles, the limiter, body limits, storage, timeouts), the
/// 404 of a path naming something absent, and the format of every id in a path. Added
/// here once, so no handler's list can forget one.
struct CommonAnswers;

impl CommonAnswers {
    /// The format of a path parameter, by the path it is in and its name.
    fn pattern(path: &str, name: &str) -> Option<&'static str> {
        use clearance_model::ids::patterns;
        Some(match name {
            "key_id" => patterns::KEY,
            "kid" => patterns::SIGNING_KEY,
            "version" => patterns::POLICY_VERSION,
            "execution_id" => patterns::EXECUTION,
            "id" if path.starts_with("/v1/executions/") => patterns::EXECUTION,
            "id" if path.starts_with("/v1/principals/") || path.starts_with("/v1/revocations/principals/") => {
                patterns::PRINCIPAL
            }
            "id" if path.starts_with("/v1/environments/") => patterns::ENVIRONMENT,
            _ => return None,
        })
    }

    fn error(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
            .into()
    }
}

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
        for (path, item) in &mut openapi.paths.paths {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let mut answers: Vec<(&str, &str)> = Vec::new();
                if secured {
                    answers.extend([
                        ("401", "No valid API key (`invalid_api_key`)"),
                        ("403", "The key's principal lacks the role (`unauthorized_role`)"),
                        (
                            "429",
                            "Too many invalid keys from this address (`rate_limited`, with `Retry-After`)",
                        ),
                    ]);
                }
                if op.request_body.is_some() {
                    answers.extend([
                        ("400", "Malformed or invalid request (`invalid_request`)"),
                        ("413", "Body over the size limit (`request_too_large`)"),
                        ("415", "Body not sent as `application/json` (`unsupported_media_type`)"),
                    ]);
                }
                let queried = op
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| matches!(p.parameter_in, ParameterIn::Query));
                if queried {
                    answers.push((
                        "400",
                        "A query parameter missing, malformed or out of range (`invalid_request`)",
                    ));
                }
                if path.contains('{') {
                    answers.push(("400", "A path id in the wrong format (`invalid_request`)"));
                    answers.push(("404", "Nothing by that id (`not_found`)"));
                }
                if path.starts_with("/v1/") {
                    answers.push((
                        "503",
                        "Storage unavailable (`storage_unavailable`, `audit_unavailable`)",
                    ));
                }
                answers.extend([
                    ("408", "The request took too long (`timeout`)"),
                    ("431", "Request head too large (`headers_too_large`)"),
                    ("500", "Internal error (`internal`)"),
                ]);
                for (status, description) in answers {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| Self::error(description));
                }
                for param in op.parameters.iter_mut().flatten() {
                    if !matches!(param.parameter_in, ParameterIn::Path) {
                        continue;
                    }
                    if let Some(pattern) = Self::pattern(path, &param.name) {
                        param.schema = Some(
                            Schema::Object(
                                ObjectBuilder::new()
                                    .schema_type(Type::String)
                                    .pattern(Some(pattern))
                                    .build(),
                            )
                            .into(),
                        );
                    }
                }
            }
        }
    }
}

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A Clearance API key: `Authorization: Bearer clr_...`"))
                    .build(),
            ),
        );
    }
}
