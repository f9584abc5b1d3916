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
    modifiers(&BearerKey)
)]
pub(crate) struct ApiDoc;

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
