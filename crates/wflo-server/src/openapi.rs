//! The OpenAPI 3.1 document, generated from the handlers' and the views' types.

use crate::{api, error, events};
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Wflo API",
        description = "Start and follow agent workflow runs, decide approvals, read costs and budgets. \
                       Every endpoint but /healthz needs an API token (`wflo tokens create`).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        api::healthz, api::readyz,
        api::start, api::list, api::get_one, api::cancel, api::resume, api::rollback,
        api::approvals, api::decide,
        api::costs, api::budgets,
        api::tokens, api::create_token, api::revoke_token,
        api::webhooks, api::create_webhook, api::remove_webhook, api::webhook_deliveries,
        events::stream,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&Security),
    tags(
        (name = "executions", description = "runs of workflows"),
        (name = "approvals", description = "human decisions runs wait for"),
        (name = "costs", description = "the ledger and budgets"),
        (name = "events", description = "live events (Server-Sent Events)"),
        (name = "tokens", description = "API tokens (admin)"),
        (name = "webhooks", description = "events POSTed to other systems, signed (admin)"),
        (name = "health", description = "liveness and readiness"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "an API token: `wflo tokens create --name NAME --role ROLE`",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::auth::SESSION_COOKIE,
            ))),
        );
    }
}

/// The document, as JSON.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}
