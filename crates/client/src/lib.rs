//! Rust client for the Aragora HTTP API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), aragora_client::ClientError> {
//! let client = aragora_client::Client::new("http://127.0.0.1:8080", "ara_…");
//! let templates = client.marketplace().list(&[("category", "workflow")]).await?;
//! let batch = client.explainability().create_batch(&["deb-1".into()], Default::default()).await?;
//! # Ok(()) }
//! ```
//!
//! Responses are `serde_json::Value`s in the shapes of the API reference (docs/api.md). 429 and
//! 503 are retried up to three times, honouring `Retry-After` (capped at 30 s).

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use std::time::Duration;

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

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, ClientError> {
        self.request(Method::GET, path, query, None, &[]).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.request(Method::POST, path, &[], Some(body), &[]).await
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

    /// `GET /api/workers/status` (admin).
    pub async fn workers_status(&self) -> Result<Value, ClientError> {
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

pub struct Marketplace<'a>(&'a Client);

impl Marketplace<'_> {
    /// `GET /api/marketplace/templates` with filters such as `category`, `q`, `sort`, `page`, `limit`.
    pub async fn list(&self, query: &[(&str, &str)]) -> Result<Value, ClientError> {
        self.0.get("/api/marketplace/templates", query).await
    }
    pub async fn publish(&self, template: &Value) -> Result<Value, ClientError> {
        self.0.post("/api/marketplace/templates", template).await
    }
    pub async fn get(&self, id: &str) -> Result<Value, ClientError> {
        self.0
            .get(&format!("/api/marketplace/templates/{}", enc(id)), &[])
            .await
    }
    pub async fn download(&self, id: &str, version: Option<&str>) -> Result<Value, ClientError> {
        let body = version.map(|v| json!({"version": v})).unwrap_or(json!({}));
        self.0
            .post(
                &format!("/api/marketplace/templates/{}/download", enc(id)),
                &body,
            )
            .await
    }
    pub async fn rate(&self, id: &str, rating: u8) -> Result<Value, ClientError> {
        self.0
            .post(
                &format!("/api/marketplace/templates/{}/rate", enc(id)),
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
    ) -> Result<Value, ClientError> {
        self.0
            .post(
                &format!("/api/marketplace/templates/{}/reviews", enc(id)),
                &json!({"rating": rating, "title": title, "content": content}),
            )
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
    /// `format` is json, summary, detailed or visual; non-JSON formats come back as a JSON string.
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
        let v = self
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
    ) -> Result<Value, ClientError> {
        self.0
            .post(
                "/api/v1/explainability/batch",
                &json!({"debate_ids": debate_ids, "options": options}),
            )
            .await
    }
    pub async fn batch_status(&self, batch_id: &str) -> Result<Value, ClientError> {
        self.0
            .get(
                &format!("/api/v1/explainability/batch/{}/status", enc(batch_id)),
                &[],
            )
            .await
    }
    pub async fn batch_results(
        &self,
        batch_id: &str,
        cursor: Option<&str>,
    ) -> Result<Value, ClientError> {
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

pub struct Webhooks<'a>(&'a Client);

impl Webhooks<'_> {
    pub async fn register(
        &self,
        url: &str,
        event_types: &[String],
        secret: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut body = json!({"url": url, "event_types": event_types});
        if let Some(s) = secret {
            body["secret"] = json!(s);
        }
        self.0.post("/api/webhooks", &body).await
    }
    pub async fn list(&self) -> Result<Value, ClientError> {
        self.0.get("/api/webhooks", &[]).await
    }
    pub async fn test(&self, id: &str) -> Result<Value, ClientError> {
        self.0
            .post(&format!("/api/webhooks/{}/test", enc(id)), &json!({}))
            .await
    }
    pub async fn receipts(
        &self,
        id: &str,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Value, ClientError> {
        let limit = limit.to_string();
        let mut q = vec![("limit", limit.as_str())];
        if let Some(s) = status {
            q.push(("status", s));
        }
        self.0
            .get(&format!("/api/webhooks/{}/receipts", enc(id)), &q)
            .await
    }
    pub async fn delete(&self, id: &str) -> Result<Value, ClientError> {
        self.0
            .request(
                Method::DELETE,
                &format!("/api/webhooks/{}", enc(id)),
                &[],
                None,
                &[],
            )
            .await
    }
}

pub struct Debates<'a>(&'a Client);

impl Debates<'_> {
    /// `POST /api/v1/debates` with the "Starting a debate" body.
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

#[cfg(test)]
mod tests {
    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(super::enc("deb-1"), "deb-1");
        assert_eq!(super::enc("a/b c"), "a%2Fb%20c");
    }
}
