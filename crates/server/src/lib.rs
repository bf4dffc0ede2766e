//! The Aragora HTTP API. Routes live in [`routes`], one module per capability; each handler
//! declares its permission through the [`auth::Auth`] extractor and its OpenAPI operation through
//! `#[utoipa::path]`, and [`router`] registers both at once so the document covers every route.

pub mod auth;
pub mod cdc;
pub mod config;
mod docs_page;
pub mod error;
pub mod explainability;
pub mod extract;
pub mod jobs;
pub mod list_cache;
pub mod metrics;
pub mod observe;
pub mod routes;
pub mod state;
pub mod webhook_delivery;
pub mod workers;

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
        .routes(routes!(routes::debates::create, routes::debates::list))
        .routes(routes!(routes::debates::import))
        .routes(routes!(routes::debates::get))
        .routes(routes!(routes::events::list))
        .routes(routes!(routes::knowledge::search))
        .routes(routes!(
            routes::knowledge::get_item,
            routes::knowledge::delete_item
        ))
        .routes(routes!(
            routes::knowledge::create_item,
            routes::knowledge::delete_by_source
        ))
        .routes(routes!(
            routes::webhooks::create_webhook,
            routes::webhooks::list_webhooks
        ))
        .routes(routes!(
            routes::webhooks::get_webhook,
            routes::webhooks::update_webhook,
            routes::webhooks::delete_webhook
        ))
        .routes(routes!(routes::webhooks::test_webhook))
        .routes(routes!(routes::webhooks::list_receipts))
        .routes(routes!(routes::webhooks::resend_receipt))
        .routes(routes!(routes::webhooks::recover_failed))
        .routes(routes!(routes::webhooks::rotate_secret))
        .routes(routes!(routes::webhooks::webhook_stats))
        .routes(routes!(routes::webhooks::publish_event))
        .routes(routes!(
            routes::marketplace::list,
            routes::marketplace::publish
        ))
        .routes(routes!(
            routes::marketplace::get,
            routes::marketplace::update,
            routes::marketplace::unlist
        ))
        .routes(routes!(
            routes::marketplace::list_versions,
            routes::marketplace::create_version
        ))
        .routes(routes!(routes::marketplace::get_version))
        .routes(routes!(routes::marketplace::yank))
        .routes(routes!(routes::marketplace::unyank))
        .routes(routes!(routes::marketplace::download))
        .routes(routes!(routes::marketplace::rate))
        .routes(routes!(
            routes::marketplace::create_review,
            routes::marketplace::list_reviews
        ))
        .routes(routes!(routes::marketplace::categories))
        .routes(routes!(routes::explain::explanation))
        .routes(routes!(routes::explain::stored))
        .routes(routes!(routes::explain::create_batch))
        .routes(routes!(routes::explain::batch_status))
        .routes(routes!(routes::explain::batch_results))
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
    let mut doc = api().split_for_parts().1;
    document_errors(&mut doc);
    doc
}

/// Adds the error responses every protected operation can give (the one error shape) unless the
/// operation documents them itself, so clients and fuzzers see every status code we answer.
fn document_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::SchemaType;
    use utoipa::openapi::{ContentBuilder, ObjectBuilder, RefOr, ResponseBuilder, Type};
    let error_schema = ObjectBuilder::new()
        .property(
            "error",
            ObjectBuilder::new()
                .property("code", ObjectBuilder::new().schema_type(Type::String))
                .property("message", ObjectBuilder::new().schema_type(Type::String))
                .property(
                    "details",
                    ObjectBuilder::new()
                        .schema_type(SchemaType::from_iter([Type::Object, Type::Null])),
                )
                .required("code")
                .required("message"),
        )
        .required("error")
        .build();
    let common: [(&str, &str); 9] = [
        ("400", "malformed request (e.g. invalid JSON)"),
        ("401", "missing, invalid or revoked token"),
        ("403", "the token lacks the permission"),
        ("404", "not found, or not visible to this workspace"),
        ("405", "method not allowed"),
        ("413", "request body too large"),
        ("415", "expected Content-Type: application/json"),
        ("422", "invalid field, named in error.details.field"),
        ("429", "rate limited; see Retry-After"),
    ];
    for (path, item) in doc.paths.paths.iter_mut() {
        let public = PUBLIC_PATHS.contains(&path.as_str());
        document_page_ranges(item);
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            for (code, description) in common {
                if public && code != "405" {
                    continue;
                }
                op.responses
                    .responses
                    .entry(code.to_string())
                    .or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(description)
                                .content(
                                    "application/json",
                                    ContentBuilder::new()
                                        .schema(Some(error_schema.clone()))
                                        .build(),
                                )
                                .build(),
                        )
                    });
            }
        }
    }
}

/// `limit` and `page` are parsed as u32 and then clamped, so every value from 0 to u32::MAX is
/// accepted; utoipa renders u32 as `format: int32`, which would claim a smaller range.
fn document_page_ranges(item: &mut utoipa::openapi::PathItem) {
    use utoipa::Number;
    use utoipa::openapi::{RefOr, Schema};
    for op in [
        &mut item.get,
        &mut item.post,
        &mut item.put,
        &mut item.patch,
        &mut item.delete,
    ]
    .into_iter()
    .flatten()
    {
        for p in op.parameters.iter_mut().flatten() {
            if !matches!(p.name.as_str(), "limit" | "page") {
                continue;
            }
            if let Some(RefOr::T(Schema::Object(o))) = p.schema.as_mut() {
                o.format = None;
                // `page` starts at 1; `limit` 0 is clamped up to 1.
                let min = usize::from(p.name == "page");
                o.minimum = Some(Number::UInt(min));
                o.maximum = Some(Number::UInt(u32::MAX as usize));
            }
        }
    }
}

/// The complete application.
pub fn router(state: AppState) -> Router {
    let (api, mut doc) = api().split_for_parts();
    document_errors(&mut doc);
    // Rendered once and shared: the router's handlers are cloned per connection, and a handler
    // that captured the OpenAPI document itself copied megabytes for every open connection.
    let doc_json = bytes::Bytes::from(serde_json::to_vec(&doc).expect("OpenAPI serialises"));
    let docs_html = bytes::Bytes::from(docs_page::html(doc));
    api.route(
        "/openapi.json",
        axum::routing::get(move || {
            let body = doc_json.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
            }
        }),
    )
    .route(
        "/docs",
        axum::routing::get(move || {
            let body = docs_html.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    body,
                )
            }
        }),
    )
    .fallback(|method: axum::http::Method| async move {
        let resp = ApiError::not_found("route").into_response();
        metrics::record_http(
            method.as_str().to_string(),
            "unmatched".into(),
            resp.status(),
            std::time::Duration::ZERO,
        );
        resp
    })
    .method_not_allowed_fallback(|| async {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        )
    })
    .route_layer(axum::middleware::from_fn(metrics::track_http))
    .route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        routes::marketplace::invalidate_lists_after_writes,
    ))
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
