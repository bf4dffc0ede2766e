//! Anthropic Messages API (`POST {base_url}/v1/messages`, `x-api-key`, `anthropic-version`).

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

use crate::http::{Egress, HttpSettings, KeySource, endpoint, post_json};
use crate::openai::{api_key, u64_at};
use crate::parse::parse_reply;
use crate::prompt::{system_prompt, user_prompt};
use crate::provider::{AgentReply, AgentRequest, Provider, ProviderError, TokenUsage};

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Used when the agent names no `api_key_env`.
pub const DEFAULT_KEY_ENV: &str = "ANTHROPIC_API_KEY";

pub struct AnthropicProvider {
    egress: Egress,
    settings: HttpSettings,
    keys: KeySource,
}

impl AnthropicProvider {
    pub fn new(egress: Egress, settings: HttpSettings, keys: KeySource) -> Self {
        AnthropicProvider {
            egress,
            settings,
            keys,
        }
    }
}

/// `{base}/v1/messages`, whether `base` is the host, `…/v1` or the full endpoint.
fn messages_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1") {
        endpoint(base, "/messages")
    } else {
        endpoint(base, "/v1/messages")
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    async fn call(&self, req: &AgentRequest<'_>) -> Result<AgentReply, ProviderError> {
        let agent = req.agent;
        let model = agent
            .model
            .as_deref()
            .filter(|m| !m.trim().is_empty())
            .ok_or_else(|| ProviderError::Config(format!("agent '{}' has no model", agent.name)))?;
        let env = agent.api_key_env.as_deref().unwrap_or(DEFAULT_KEY_ENV);
        let key = api_key(&self.keys, Some(env))?.unwrap_or_default();
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_str(&key).map_err(|_| {
                ProviderError::Config("the API key holds characters not allowed in a header".into())
            })?,
        );
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
        let mut body = json!({
            "model": model,
            "max_tokens": self.settings.max_tokens,
            "system": system_prompt(req),
            "messages": [{"role": "user", "content": user_prompt(req)}],
        });
        if let Some(t) = self.settings.temperature {
            body["temperature"] = json!(t.clamp(0.0, 1.0));
        }
        let url = messages_url(agent.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL));
        let client = self.egress.client_for(&url, agent.base_url.is_some())?;
        let response = post_json(client, &self.settings, &url, &headers, &body).await?;
        let text = match response.get("content") {
            Some(Value::Array(blocks)) => blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
            _ => {
                return Err(ProviderError::Unusable(format!(
                    "not a Messages API response: {}",
                    crate::http::snippet(&response.to_string())
                )));
            }
        };
        let mut reply = parse_reply(req.role, &text, req.targets)?;
        reply.usage = TokenUsage {
            input_tokens: u64_at(&response, "/usage/input_tokens"),
            output_tokens: u64_at(&response, "/usage/output_tokens"),
        };
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_url_accepts_host_v1_or_full_endpoint() {
        for base in [
            "https://api.anthropic.com",
            "https://api.anthropic.com/",
            "https://api.anthropic.com/v1",
            "https://api.anthropic.com/v1/messages",
        ] {
            assert_eq!(
                super::messages_url(base),
                "https://api.anthropic.com/v1/messages"
            );
        }
    }
}
