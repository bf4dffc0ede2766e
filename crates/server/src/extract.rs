//! Body and query extractors whose rejections use the one error shape and name the field:
//! malformed JSON → 400, wrong type/value → 422 with the field path, oversized body → 413,
//! missing `Content-Type: application/json` → 415.
//!
//! Unknown JSON fields are ignored unless a type says otherwise (`deny_unknown_fields` is used
//! only where a typo would silently change behaviour, e.g. consensus settings).

use crate::error::ApiError;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// `axum::Json` with our rejections.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected `Content-Type: application/json`",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| json_rejection(e.into()))?;
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => {
                // PostgreSQL cannot store U+0000 in text or jsonb, so no backend accepts it.
                if let Some(field) = nul_field(&bytes) {
                    return Err(ApiError::invalid(
                        &field,
                        "must not contain the NUL character (U+0000)",
                    ));
                }
                Ok(Json(v))
            }
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// `application/json` or any `+json` type, as axum's own `Json` requires.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
}

/// The path (`a.b[2]`, or `body`) of the first string or key holding U+0000 in a JSON document,
/// if any. A cheap scan for an unescaped `\u0000` comes first; only then is the document walked.
fn nul_field(body: &[u8]) -> Option<String> {
    let has_escape = body.windows(6).enumerate().any(|(i, w)| {
        w == b"\\u0000" && body[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0
    });
    if !has_escape {
        return None;
    }
    fn walk(v: &serde_json::Value, path: &str) -> Option<String> {
        let join = |k: &str| {
            if path.is_empty() {
                k.to_string()
            } else {
                format!("{path}.{k}")
            }
        };
        match v {
            serde_json::Value::String(s) if s.contains('\0') => Some(if path.is_empty() {
                "body".into()
            } else {
                path.into()
            }),
            serde_json::Value::Array(a) => a
                .iter()
                .enumerate()
                .find_map(|(i, x)| walk(x, &format!("{path}[{i}]"))),
            serde_json::Value::Object(o) => o.iter().find_map(|(k, x)| {
                if k.contains('\0') {
                    Some(join(k))
                } else {
                    walk(x, &join(k))
                }
            }),
            _ => None,
        }
    }
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| walk(&v, ""))
        .or(Some("body".into()))
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => {
            let text = e.body_text();
            let detail = text
                .split("target type: ")
                .nth(1)
                .unwrap_or(&text)
                .to_string();
            let (field, message) = split_field(&detail);
            ApiError::invalid(&field, without_type_names(&message))
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!(
                "malformed JSON body: {}",
                e.body_text().split("input: ").last().unwrap_or("")
            ),
        ),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected `Content-Type: application/json`",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body exceeds the configured limit",
            )
        }
        other => ApiError::new(other.status(), "bad_request", other.body_text()),
    }
}

/// serde names our Rust types ("expected struct PublishBody"); clients see "a JSON object".
fn without_type_names(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("struct ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "struct ".len()..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        out.push_str("a JSON object");
        rest = &after[name_len..];
    }
    out.push_str(rest);
    out
}

/// serde_path_to_error renders `path: message`; `.` means the document root.
fn split_field(detail: &str) -> (String, String) {
    match detail.split_once(": ") {
        Some((path, msg)) if !path.contains(' ') && path != "." => {
            (path.to_string(), msg.to_string())
        }
        _ => {
            // "missing field `x` at line…" names the field in backticks.
            let field = detail
                .split('`')
                .nth(1)
                .filter(|_| detail.starts_with("missing field"))
                .unwrap_or("body")
                .to_string();
            (field, detail.to_string())
        }
    }
}

/// `axum::extract::Query` with our rejections (422 naming the parameter).
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                let text = e.body_text();
                let detail = text
                    .split("Query string: ")
                    .nth(1)
                    .unwrap_or(&text)
                    .to_string();
                // "limit: invalid digit…" names the parameter first; "missing field `q`" in
                // backticks.
                let rest = detail
                    .rsplit_once("query string: ")
                    .map(|(_, r)| r)
                    .unwrap_or(&detail);
                let field = match rest.split_once(": ") {
                    Some((name, _)) if !name.is_empty() && !name.contains(' ') => name,
                    _ => detail.split('`').nth(1).unwrap_or("query"),
                }
                .to_string();
                Err(ApiError::invalid(&field, detail))
            }
            Err(other) => Err(ApiError::new(
                other.status(),
                "bad_request",
                other.body_text(),
            )),
        }
    }
}

/// Deserializes an integer as JSON Schema counts them: `3` and `3.0` alike (`3.5` is refused).
pub fn whole_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    use serde::Deserialize;
    let n = serde_json::Number::deserialize(d)?;
    n.as_i64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= 9.0e15)
                .map(|f| f as i64)
        })
        .ok_or_else(|| serde::de::Error::custom(format!("expected a whole number, got {n}")))
}

/// `axum::extract::Path` with the one error shape (e.g. invalid UTF-8 in a path segment → 400).
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // No object id holds U+0000 (PostgreSQL could not even compare it): not found.
        if parts.uri.path().contains("%00") {
            return Err(ApiError::not_found("object"));
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(r) => Err(ApiError::new(r.status(), "bad_request", r.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn field_paths_are_split_from_messages() {
        assert_eq!(
            super::split_field("agents[1].provider: unknown variant `x`"),
            ("agents[1].provider".into(), "unknown variant `x`".into())
        );
        assert_eq!(
            super::without_type_names("invalid type: sequence, expected struct PublishBody"),
            "invalid type: sequence, expected a JSON object"
        );
        assert_eq!(
            super::split_field("missing field `task` at line 1 column 2").0,
            "task"
        );
    }
}
