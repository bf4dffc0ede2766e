//! The Aragora HTTP API. Routes live in [`routes`], one module per capability; each handler
//! declares its permission through the [`auth::Auth`] extractor and its OpenAPI operation through
//! `#[utoipa::path]`, and [`router`] registers both at once so the document covers every route.

pub mod auth;
pub mod cdc;
pub mod config;
pub mod error;
pub mod extract;
pub mod jobs;
pub mod metrics;
pub mod observe;
pub mod routes;
pub mod state;

use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::any::Any;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_scalar::{Scalar, Servable};

pub use config::ServerConfig;

#[derive(OpenApi)]
#[openapi(
    info(title = "Aragora API", description = "Multi-agent debates, template marketplace, decision explainability, webhooks and CDC connectors."),
    modifiers(&SecuritySchemes),
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("ara_…")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// Paths that answer without a token (documented in README "Security").
pub const PUBLIC_PATHS: [&str; 5] = ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"];

/// Every route with its OpenAPI operation.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::ops::healthz))
        .routes(routes!(routes::ops::readyz))
        .routes(routes!(routes::ops::metrics))
        .routes(routes!(routes::tokens::create, routes::tokens::list))
        .routes(routes!(routes::tokens::revoke))
        .routes(routes!(routes::workers::status))
        .routes(routes!(
            routes::connectors::create,
            routes::connectors::list
        ))
        .routes(routes!(routes::connectors::get, routes::connectors::delete))
        .routes(routes!(routes::connectors::health))
        .routes(routes!(routes::connectors::start))
        .routes(routes!(routes::connectors::stop))
        .routes(routes!(routes::connectors::events))
}

/// The OpenAPI document (also served at `/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

/// The complete application.
pub fn router(state: AppState) -> Router {
    let (api, doc) = api().split_for_parts();
    let doc_json = doc.clone();
    api.route(
        "/openapi.json",
        axum::routing::get(move || async move { axum::Json(doc_json.clone()) }),
    )
    .merge(Scalar::with_url("/docs", doc))
    .fallback(|| async { ApiError::not_found("route") })
    .method_not_allowed_fallback(|| async {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        )
    })
    .route_layer(axum::middleware::from_fn(metrics::track_http))
    .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
    .layer(CatchPanicLayer::custom(panic_response))
    .with_state(state)
}

fn panic_response(_err: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal server error",
    )
    .into_response()
}
