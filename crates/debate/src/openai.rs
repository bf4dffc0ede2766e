//! OpenAI-compatible chat completions (`POST {base_url}/chat/completions`): OpenAI, Ollama, vLLM,
//! LM Studio, OpenRouter and anything else that speaks the same protocol.

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Value, json};

use crate::http::{Egress, HttpSettings, KeySource, endpoint, post_json};
use crate::parse::parse_reply;
use crate::prompt::{system_prompt, user_prompt};
use crate::provider::{AgentReply, AgentRequest, Provider, ProviderError, TokenUsage};

pub struct OpenAiProvider {
    egress: Egress,
    settings: HttpSettings,
    keys: KeySource,
    /// Used when the agent names no `base_url`.
    default_base: Option<&'static str>,
    /// The API-key variable used when the agent names none; `None`: the key is optional
    /// (local servers such as Ollama or vLLM).
    default_key_env: Option<&'static str>,
}

impl OpenAiProvider {
    pub fn new(
        egress: Egress,
        settings: HttpSettings,
        keys: KeySource,
        default_base: Option<&'static str>,
        default_key_env: Option<&'static str>,
    ) -> Self {
        OpenAiProvider {
            egress,
            settings,
            keys,
            default_base,
            default_key_env,
        }
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    async fn call(&self, req: &AgentRequest<'_>) -> Result<AgentReply, ProviderError> {
        let agent = req.agent;
        let base = agent
            .base_url
            .as_deref()
            .or(self.default_base)
            .ok_or_else(|| {
                ProviderError::Config(format!("agent '{}' has no base_url", agent.name))
            })?;
        let model = agent
            .model
            .as_deref()
            .filter(|m| !m.trim().is_empty())
            .ok_or_else(|| ProviderError::Config(format!("agent '{}' has no model", agent.name)))?;
        let mut headers = HeaderMap::new();
        let env = agent.api_key_env.as_deref().or(self.default_key_env);
        if let Some(key) = api_key(&self.keys, env)? {
            let value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                ProviderError::Config("the API key holds characters not allowed in a header".into())
            })?;
            headers.insert(AUTHORIZATION, value);
        }
        let mut body = json!({
            "model": model,
            "messages": [
                {"role": "system", "content": system_prompt(req)},
                {"role": "user", "content": user_prompt(req)},
            ],
            "max_tokens": self.settings.max_tokens,
        });
        if let Some(t) = self.settings.temperature {
            body["temperature"] = json!(t);
        }
        let url = endpoint(base, "/chat/completions");
        let client = self.egress.client_for(&url, agent.base_url.is_some())?;
        let response = post_json(client, &self.settings, &url, &headers, &body).await?;
        let text = completion_text(&response)?;
        let mut reply = parse_reply(req.role, &text, req.targets)?;
        reply.usage = TokenUsage {
            input_tokens: u64_at(&response, "/usage/prompt_tokens"),
            output_tokens: u64_at(&response, "/usage/completion_tokens"),
        };
        Ok(reply)
    }
}

/// The key held by the variable `env` names; `None` when no variable is named. A named but
/// unset variable is a configuration error (never retried).
pub(crate) fn api_key(
    keys: &KeySource,
    env: Option<&str>,
) -> Result<Option<String>, ProviderError> {
    let Some(name) = env else {
        return Ok(None);
    };
    crate::http::check_key_env_name(name).map_err(ProviderError::Config)?;
    keys.get(name)
        .map(Some)
        .ok_or_else(|| ProviderError::Config(format!("environment variable {name} is not set")))
}

/// `choices[0].message.content` (string, or a list of text parts).
fn completion_text(response: &Value) -> Result<String, ProviderError> {
    let content = response
        .pointer("/choices/0/message/content")
        .or_else(|| response.pointer("/choices/0/text"));
    match content {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => Ok(parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("")),
        _ => {
            let refusal = response
                .pointer("/choices/0/message/refusal")
                .and_then(Value::as_str);
            Err(ProviderError::Unusable(match refusal {
                Some(r) => format!("model refused: {}", crate::http::snippet(r)),
                None => format!(
                    "not a chat completion: {}",
                    crate::http::snippet(&response.to_string())
                ),
            }))
        }
    }
}

pub(crate) fn u64_at(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}
