//! Rust client for the Aragora HTTP API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), aragora_client::ClientError> {
//! let client = aragora_client::Client::new("http://127.0.0.1:8080", "ara_…");
//! let templates = client.marketplace().list(&[("category", "workflow")]).await?;
//! for t in &templates.items {
//!     println!("{} v{}", t.name, t.latest_version);
//! }
//! let batch = client.explainability().create_batch(&["deb-1".into()], Default::default()).await?;
//! let status = client.explainability().batch_status(&batch.batch_id).await?;
//! # Ok(()) }
//! ```
//!
//! Responses are typed ([`types`]); every field the server sends beyond the named ones is kept in
//! each struct's `extra`. [`Client::request`] sends anything else and returns the JSON. 429 and
//! 503 are retried up to three times, honouring `Retry-After` (capped at 30 s).

pub mod types;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::time::Duration;
pub use types::*;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error (the one error shape).
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        details: Value,
    },
    #[error("transport error: {0}")]
    Transport(#[from] reqwest::Error),
    /// A success response that does not have the documented shape.
    #[error("unexpected response: {0}")]
    Unexpected(String),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Transport(_) | ClientError::Unexpected(_) => None,
        }
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    max_retries: u32,
}

fn enc(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

impl Client {
    pub fn new(base_url: &str, token: &str) -> Self {
        Client {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            base: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            max_retries: 3,
        }
    }

    /// Sends one request; `body` is JSON; returns the JSON (or text as a JSON string) body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, ClientError> {
        let mut attempt = 0;
        loop {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .query(query);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await?;
            let status = resp.status();
            if (status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::SERVICE_UNAVAILABLE)
                && attempt < self.max_retries
            {
                let wait = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.25 * f64::from(1u32 << attempt))
                    .clamp(0.0, 30.0);
                tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                attempt += 1;
                continue;
            }
            let is_json = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.contains("json"));
            let bytes = resp.bytes().await?;
            let value = if bytes.is_empty() {
                Value::Null
            } else if is_json {
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            } else {
                Value::String(String::from_utf8_lossy(&bytes).into_owned())
            };
            if status.is_success() {
                return Ok(value);
            }
            let err = &value["error"];
            return Err(ClientError::Api {
                status: status.as_u16(),
                code: err["code"].as_str().unwrap_or("http_error").to_string(),
                message: err["message"].as_str().unwrap_or("").to_string(),
                details: err["details"].clone(),
            });
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        let v = self.request(method, path, query, body, &[]).await?;
        serde_json::from_value(v).map_err(|e| ClientError::Unexpected(format!("{path}: {e}")))
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ClientError> {
        self.call(Method::GET, path, query, None).await
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, ClientError> {
        self.call(Method::POST, path, &[], Some(body)).await
    }

    async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.request(Method::DELETE, path, &[], None, &[])
            .await
            .map(drop)
    }

    pub fn marketplace(&self) -> Marketplace<'_> {
        Marketplace(self)
    }
    pub fn explainability(&self) -> Explainability<'_> {
        Explainability(self)
    }
    pub fn webhooks(&self) -> Webhooks<'_> {
        Webhooks(self)
    }
    pub fn debates(&self) -> Debates<'_> {
        Debates(self)
    }
    pub fn knowledge(&self) -> Knowledge<'_> {
        Knowledge(self)
    }
    pub fn connectors(&self) -> Connectors<'_> {
        Connectors(self)
    }

    /// `GET /api/workers/status` (admin).
    pub async fn workers_status(&self) -> Result<WorkersStatus, ClientError> {
        self.get("/api/workers/status", &[]).await
    }

    /// `POST /api/v1/events`: publish a custom event.
    pub async fn publish_event(&self, event_type: &str, data: Value) -> Result<Value, ClientError> {
        self.post(
            "/api/v1/events",
            &json!({"event_type": event_type, "data": data}),
        )
        .await
    }
}

fn template_path(id: &str) -> String {
    format!("/api/marketplace/templates/{}", enc(id))
}

pub struct Marketplace<'a>(&'a Client);

impl Marketplace<'_> {
    /// `GET /api/marketplace/templates` with filters such as `category`, `q`, `sort`, `page`, `limit`.
    pub async fn list(&self, query: &[(&str, &str)]) -> Result<Page<Template>, ClientError> {
        self.0.get("/api/marketplace/templates", query).await
    }
    /// Publishes a template from the guide's body (`name`, `category`, `template_data`, …).
    pub async fn publish(&self, template: &Value) -> Result<Template, ClientError> {
        self.0.post("/api/marketplace/templates", template).await
    }
    pub async fn get(&self, id: &str) -> Result<Template, ClientError> {
        self.0.get(&template_path(id), &[]).await
    }
    /// `PATCH` (owner): `fields` holds what changes (name, description, tags, …).
    pub async fn update(&self, id: &str, fields: &Value) -> Result<Template, ClientError> {
        self.0
            .call(Method::PATCH, &template_path(id), &[], Some(fields))
            .await
    }
    /// Unlists the template (owner or admin).
    pub async fn delete(&self, id: &str) -> Result<(), ClientError> {
        self.0.delete(&template_path(id)).await
    }
    pub async fn download(&self, id: &str, version: Option<&str>) -> Result<Download, ClientError> {
        let body = version.map(|v| json!({"version": v})).unwrap_or(json!({}));
        self.0
            .post(&format!("{}/download", template_path(id)), &body)
            .await
    }
    pub async fn versions(&self, id: &str) -> Result<Page<TemplateVersion>, ClientError> {
        self.0
            .get(&format!("{}/versions", template_path(id)), &[])
            .await
    }
    /// One version, with its `template_data`.
    pub async fn version(&self, id: &str, version: &str) -> Result<TemplateVersion, ClientError> {
        self.0
            .get(
                &format!("{}/versions/{}", template_path(id), enc(version)),
                &[],
            )
            .await
    }
    /// Publishes a new immutable version (owner).
    pub async fn publish_version(
        &self,
        id: &str,
        version: &str,
        template_data: &Value,
        changelog: &str,
    ) -> Result<TemplateVersion, ClientError> {
        self.0
            .post(
                &format!("{}/versions", template_path(id)),
                &json!({"version": version, "template_data": template_data, "changelog": changelog}),
            )
            .await
    }
    /// Yanks (`yank = true`) or restores a version (owner).
    pub async fn yank(
        &self,
        id: &str,
        version: &str,
        yank: bool,
    ) -> Result<TemplateVersion, ClientError> {
        let action = if yank { "yank" } else { "unyank" };
        self.0
            .post(
                &format!("{}/versions/{}/{action}", template_path(id), enc(version)),
                &json!({}),
            )
            .await
    }
    pub async fn rate(&self, id: &str, rating: u8) -> Result<Rating, ClientError> {
        self.0
            .post(
                &format!("{}/rate", template_path(id)),
                &json!({"rating": rating}),
            )
            .await
    }
    pub async fn review(
        &self,
        id: &str,
        rating: u8,
        title: &str,
        content: &str,
    ) -> Result<Review, ClientError> {
        self.0
            .post(
                &format!("{}/reviews", template_path(id)),
                &json!({"rating": rating, "title": title, "content": content}),
            )
            .await
    }
    pub async fn reviews(&self, id: &str) -> Result<Page<Review>, ClientError> {
        self.0
            .get(&format!("{}/reviews", template_path(id)), &[])
            .await
    }
}

/// Options of a batch explanation job.
#[derive(Debug, Clone, Serialize)]
pub struct BatchOptions {
    pub include_evidence: bool,
    pub include_counterfactuals: bool,
    pub include_vote_pivots: bool,
    pub format: String,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            include_evidence: true,
            include_counterfactuals: true,
            include_vote_pivots: true,
            format: "json".into(),
        }
    }
}

pub struct Explainability<'a>(&'a Client);

impl Explainability<'_> {
    /// The JSON explanation of a debate's decision.
    pub async fn get(&self, debate_id: &str) -> Result<Explanation, ClientError> {
        self.0
            .get(
                &format!("/api/v1/debates/{}/explanation", enc(debate_id)),
                &[("format", "json")],
            )
            .await
    }
    /// Any `format` (json, summary, detailed, visual) as returned: text formats come back as a
    /// JSON string, `json` and `visual` as objects.
    pub async fn explanation(&self, debate_id: &str, format: &str) -> Result<Value, ClientError> {
        self.0
            .get(
                &format!("/api/v1/debates/{}/explanation", enc(debate_id)),
                &[("format", format)],
            )
            .await
    }
    /// `format=visual` rendered by the server: `render` is `html` (a standalone page), `svg` or
    /// `mermaid`; returns the document itself.
    pub async fn visual(&self, debate_id: &str, render: &str) -> Result<String, ClientError> {
        let v: Value = self
            .0
            .get(
                &format!("/api/v1/debates/{}/explanation", enc(debate_id)),
                &[("format", "visual"), ("render", render)],
            )
            .await?;
        match v {
            Value::String(doc) => Ok(doc),
            other => Err(ClientError::Unexpected(format!(
                "render={render} answered {other} instead of a document"
            ))),
        }
    }
    pub async fn create_batch(
        &self,
        debate_ids: &[String],
        options: BatchOptions,
    ) -> Result<BatchCreated, ClientError> {
        self.0
            .post(
                "/api/v1/explainability/batch",
                &json!({"debate_ids": debate_ids, "options": options}),
            )
            .await
    }
    pub async fn batch_status(&self, batch_id: &str) -> Result<BatchStatus, ClientError> {
        self.0
            .get(
                &format!("/api/v1/explainability/batch/{}/status", enc(batch_id)),
                &[],
            )
            .await
    }
    /// One page of results (200 per page); pass the previous page's `next_cursor`.
    pub async fn batch_results(
        &self,
        batch_id: &str,
        cursor: Option<&str>,
    ) -> Result<BatchResults, ClientError> {
        let mut q = vec![("limit", "200")];
        if let Some(c) = cursor {
            q.push(("cursor", c));
        }
        self.0
            .get(
                &format!("/api/v1/explainability/batch/{}/results", enc(batch_id)),
                &q,
            )
            .await
    }
}

fn webhook_path(id: &str) -> String {
    format!("/api/webhooks/{}", enc(id))
}

pub struct Webhooks<'a>(&'a Client);

impl Webhooks<'_> {
    /// Registers a webhook; the answer carries the `secret` (generated when `None`) once.
    pub async fn register(
        &self,
        url: &str,
        event_types: &[String],
        secret: Option<&str>,
    ) -> Result<Webhook, ClientError> {
        let mut body = json!({"url": url, "event_types": event_types});
        if let Some(s) = secret {
            body["secret"] = json!(s);
        }
        self.0.post("/api/webhooks", &body).await
    }
    pub async fn list(&self) -> Result<Page<Webhook>, ClientError> {
        self.0.get("/api/webhooks", &[]).await
    }
    pub async fn get(&self, id: &str) -> Result<Webhook, ClientError> {
        self.0.get(&webhook_path(id), &[]).await
    }
    /// `PUT /api/webhooks/{id}`: changes the fields that are `Some`.
    pub async fn update(&self, id: &str, update: &WebhookUpdate) -> Result<Webhook, ClientError> {
        let body = serde_json::to_value(update).expect("plain struct serialises");
        self.0
            .call(Method::PUT, &webhook_path(id), &[], Some(&body))
            .await
    }
    /// Sends a signed `webhook.test` event now and returns its receipt.
    pub async fn test(&self, id: &str) -> Result<Receipt, ClientError> {
        self.0
            .post(&format!("{}/test", webhook_path(id)), &json!({}))
            .await
    }
    pub async fn receipts(
        &self,
        id: &str,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Page<Receipt>, ClientError> {
        let limit = limit.to_string();
        let mut q = vec![("limit", limit.as_str())];
        if let Some(s) = status {
            q.push(("status", s));
        }
        self.0
            .get(&format!("{}/receipts", webhook_path(id)), &q)
            .await
    }
    pub async fn delete(&self, id: &str) -> Result<(), ClientError> {
        self.0.delete(&webhook_path(id)).await
    }
}

pub struct Debates<'a>(&'a Client);

impl Debates<'_> {
    /// `POST /api/v1/debates` with the "Starting a debate" body; answers `{debate_id, status}`.
    pub async fn start(&self, spec: &Value) -> Result<Value, ClientError> {
        self.0.post("/api/v1/debates", spec).await
    }
    pub async fn import(&self, record: &Value) -> Result<Value, ClientError> {
        self.0.post("/api/v1/debates/import", record).await
    }
    pub async fn get(&self, id: &str) -> Result<Value, ClientError> {
        self.0
            .get(&format!("/api/v1/debates/{}", enc(id)), &[])
            .await
    }
}

pub struct Knowledge<'a>(&'a Client);

impl Knowledge<'_> {
    /// Full-text search; exact-phrase hits first.
    pub async fn search(
        &self,
        q: &str,
        source_type: Option<&str>,
        limit: u32,
    ) -> Result<Page<SearchHit>, ClientError> {
        let limit = limit.to_string();
        let mut query = vec![("q", q), ("limit", limit.as_str())];
        if let Some(t) = source_type {
            query.push(("source_type", t));
        }
        self.0.get("/api/v1/knowledge/search", &query).await
    }
    pub async fn get(&self, id: &str) -> Result<KnowledgeItem, ClientError> {
        self.0
            .get(&format!("/api/v1/knowledge/items/{}", enc(id)), &[])
            .await
    }
    /// Ingests an item (the same source key again updates it).
    pub async fn ingest(&self, item: &NewKnowledgeItem) -> Result<KnowledgeItem, ClientError> {
        let body = serde_json::to_value(item).expect("plain struct serialises");
        self.0.post("/api/v1/knowledge/items", &body).await
    }
}

fn connector_path(id: &str) -> String {
    format!("/api/v1/connectors/{}", enc(id))
}

pub struct Connectors<'a>(&'a Client);

impl Connectors<'_> {
    /// `POST /api/v1/connectors` with `name`, `type`, `config`, `credentials`, `handlers`.
    pub async fn create(&self, spec: &Value) -> Result<Connector, ClientError> {
        self.0.post("/api/v1/connectors", spec).await
    }
    pub async fn list(&self) -> Result<Page<Connector>, ClientError> {
        self.0.get("/api/v1/connectors", &[]).await
    }
    pub async fn get(&self, id: &str) -> Result<Connector, ClientError> {
        self.0.get(&connector_path(id), &[]).await
    }
    pub async fn delete(&self, id: &str) -> Result<(), ClientError> {
        self.0.delete(&connector_path(id)).await
    }
    pub async fn start(&self, id: &str) -> Result<Connector, ClientError> {
        self.0
            .post(&format!("{}/start", connector_path(id)), &json!({}))
            .await
    }
    pub async fn stop(&self, id: &str) -> Result<Connector, ClientError> {
        self.0
            .post(&format!("{}/stop", connector_path(id)), &json!({}))
            .await
    }
    pub async fn health(&self, id: &str) -> Result<ConnectorHealth, ClientError> {
        self.0
            .get(&format!("{}/health", connector_path(id)), &[])
            .await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(super::enc("deb-1"), "deb-1");
        assert_eq!(super::enc("a/b c"), "a%2Fb%20c");
    }
}
