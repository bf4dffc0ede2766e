//! A client of Snowflake's SQL API v2: `POST /api/v2/statements` with key-pair JWT auth,
//! asynchronous statements (202 + `GET /api/v2/statements/{handle}`), result partitions
//! (`?partition=n`) and retries of 429/503/504 with the same `requestId` and `retry=true`.

use crate::CdcError;
use crate::pipeline::retry_delay;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// A key pair for Snowflake's key-pair authentication, from an unencrypted PEM (PKCS#8
/// `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
pub struct KeyPair {
    key: RsaKeyPair,
    fingerprint: String,
}

fn der_len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

fn der(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

/// `SubjectPublicKeyInfo` DER of a PKCS#1 RSA public key (what `openssl rsa -pubout -outform
/// DER` prints, and what Snowflake fingerprints).
pub fn spki_der(pkcs1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption, NULL }
    let alg = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0u8];
    bits.extend_from_slice(pkcs1);
    let mut body = alg.to_vec();
    body.extend(der(0x03, &bits));
    der(0x30, &body)
}

impl KeyPair {
    pub fn from_pem(pem: &str) -> Result<KeyPair, CdcError> {
        // Server-managed, the PEM is what `credentials.password_file` / `password_env` points at.
        let bad = |m: &str| CdcError::config("credentials", format!("private key: {m}"));
        if pem.contains("ENCRYPTED PRIVATE KEY") {
            return Err(bad(
                "encrypted private keys are not supported: decrypt it (openssl pkcs8 -nocrypt)",
            ));
        }
        let (label, pkcs8) = if pem.contains("BEGIN PRIVATE KEY") {
            ("PRIVATE KEY", true)
        } else if pem.contains("BEGIN RSA PRIVATE KEY") {
            ("RSA PRIVATE KEY", false)
        } else {
            return Err(bad(
                "expected a PEM `PRIVATE KEY` (PKCS#8) or `RSA PRIVATE KEY`",
            ));
        };
        let body: String = pem
            .split(&format!("-----BEGIN {label}-----"))
            .nth(1)
            .and_then(|r| r.split(&format!("-----END {label}-----")).next())
            .ok_or_else(|| bad("unterminated PEM block"))?
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = STANDARD
            .decode(body)
            .map_err(|e| bad(&format!("PEM body is not base64: {e}")))?;
        let key = if pkcs8 {
            RsaKeyPair::from_pkcs8(&der)
        } else {
            RsaKeyPair::from_der(&der)
        }
        .map_err(|e| bad(&format!("not a usable RSA key: {e}")))?;
        let spki = spki_der(key.public().as_ref());
        let fingerprint = format!("SHA256:{}", STANDARD.encode(Sha256::digest(&spki)));
        Ok(KeyPair { key, fingerprint })
    }

    /// `SHA256:<base64 of the SHA-256 of the public key's DER>`, as `DESC USER` shows it in
    /// `RSA_PUBLIC_KEY_FP`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// An RS256 JWT: `iss` = `<ACCOUNT>.<USER>.<fingerprint>`, `sub` = `<ACCOUNT>.<USER>`, valid
    /// for an hour from `now_s`.
    pub fn jwt(&self, account: &str, user: &str, now_s: i64) -> Result<String, CdcError> {
        let qualified = format!("{}.{}", jwt_account(account), user.to_ascii_uppercase());
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = json!({
            "iss": format!("{qualified}.{}", self.fingerprint),
            "sub": qualified,
            "iat": now_s,
            "exp": now_s + 3600,
        });
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{payload}");
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| CdcError::Source("signing the JWT failed".into()))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// The account part of a JWT: upper case, without a region or cloud suffix
/// (`xy12345.us-east-1` → `XY12345`).
pub fn jwt_account(account: &str) -> String {
    account
        .split('.')
        .next()
        .unwrap_or(account)
        .to_ascii_uppercase()
}

/// A statement's result: column names and types, and the rows (every value as Snowflake's
/// `jsonv2` sends it: a string or null).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultSet {
    pub columns: Vec<(String, String)>,
    pub rows: Vec<Vec<Option<String>>>,
    pub handle: String,
}

/// Session settings sent with each statement.
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub database: String,
    pub schema: String,
    pub warehouse: Option<String>,
    pub role: Option<String>,
    pub timeout_seconds: u64,
}

pub struct SqlApi {
    http: reqwest::Client,
    base: String,
    account: String,
    user: String,
    key: KeyPair,
    session: Session,
    /// Most attempts of one request on 429/503/504.
    pub max_attempts: u32,
    /// Interval between polls of a running statement.
    pub poll: Duration,
}

/// Snowflake's documented error body: `{"code", "message", "sqlState", "statementHandle"}`.
fn failure(status: reqwest::StatusCode, body: &str) -> CdcError {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let message = v["message"].as_str().unwrap_or(body).to_string();
    let code = v["code"].as_str().unwrap_or("");
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return CdcError::Source(format!(
            "Snowflake refused the key-pair JWT ({status}, {code}): {message}; check the \
             account, the user and that the user's RSA_PUBLIC_KEY matches the private key"
        ));
    }
    CdcError::Source(format!("Snowflake {status} {code}: {message}"))
}

impl SqlApi {
    pub fn new(
        base: impl Into<String>,
        account: impl Into<String>,
        user: impl Into<String>,
        key: KeyPair,
        session: Session,
    ) -> Result<SqlApi, CdcError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("aragora-cdc/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CdcError::Source(e.to_string()))?;
        Ok(SqlApi {
            http,
            base: base.into().trim_end_matches('/').to_string(),
            account: account.into(),
            user: user.into(),
            key,
            session,
            max_attempts: 8,
            poll: Duration::from_millis(200),
        })
    }

    pub fn fingerprint(&self) -> &str {
        self.key.fingerprint()
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, CdcError> {
        let jwt = self.key.jwt(
            &self.account,
            &self.user,
            aragora_core::time::now_ms() / 1000,
        )?;
        Ok(req
            .bearer_auth(jwt)
            .header("X-Snowflake-Authorization-Token-Type", "KEYPAIR_JWT")
            .header("Accept", "application/json"))
    }

    /// Sends a request built by `make(retry)` until it gets something other than 429/503/504.
    async fn send<F>(&self, make: F) -> Result<(reqwest::StatusCode, String), CdcError>
    where
        F: Fn(bool) -> reqwest::RequestBuilder,
    {
        let mut attempt = 0u32;
        loop {
            let res = self.auth(make(attempt > 0))?.send().await;
            let retryable = match res {
                Ok(r) => {
                    let status = r.status();
                    if matches!(status.as_u16(), 429 | 503 | 504) {
                        format!("HTTP {status}")
                    } else {
                        let body = r
                            .text()
                            .await
                            .map_err(|e| CdcError::Source(format!("reading Snowflake: {e}")))?;
                        return Ok((status, body));
                    }
                }
                Err(e) if e.is_connect() || e.is_timeout() => format!("no answer: {}", chain(&e)),
                Err(e) => {
                    return Err(CdcError::Source(format!(
                        "Snowflake request: {}",
                        chain(&e)
                    )));
                }
            };
            attempt += 1;
            if attempt >= self.max_attempts {
                return Err(CdcError::Source(format!(
                    "Snowflake at {}: {retryable} (after {attempt} attempts)",
                    self.base
                )));
            }
            tokio::time::sleep(retry_delay(attempt - 1)).await;
        }
    }

    /// Posts one request (one statement, or several with `MULTI_STATEMENT_COUNT`) and waits for
    /// its result: a `202` is polled at `GET /api/v2/statements/{handle}` until it finishes.
    async fn run(&self, statement: &str, count: Option<usize>) -> Result<Value, CdcError> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut params = json!({"TIMEZONE": "UTC"});
        if let Some(n) = count {
            // The SQL API's documented way to send several statements in one request; Snowflake
            // refuses the request when the number of statements differs.
            params["MULTI_STATEMENT_COUNT"] = json!(n.to_string());
        }
        let mut body = json!({
            "statement": statement,
            "timeout": self.session.timeout_seconds,
            "database": self.session.database,
            "schema": self.session.schema,
            "parameters": params,
        });
        if let Some(w) = &self.session.warehouse {
            body["warehouse"] = json!(w);
        }
        if let Some(r) = &self.session.role {
            body["role"] = json!(r);
        }
        let url = format!("{}/api/v2/statements", self.base);
        let (mut status, mut text) = self
            .send(|retry| {
                let mut q = vec![("requestId", request_id.clone())];
                if retry {
                    q.push(("retry", "true".into()));
                }
                self.http.post(&url).query(&q).json(&body)
            })
            .await?;
        let mut handle = String::new();
        // 202: still running; poll the handle until it finishes.
        while status == reqwest::StatusCode::ACCEPTED {
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| CdcError::Source(format!("Snowflake 202 body: {e}")))?;
            handle = v["statementHandle"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if handle.is_empty() {
                return Err(CdcError::Source(
                    "Snowflake 202 without a statementHandle".into(),
                ));
            }
            tokio::time::sleep(self.poll).await;
            let status_url = format!("{}/api/v2/statements/{handle}", self.base);
            (status, text) = self.send(|_| self.http.get(&status_url)).await?;
        }
        if status != reqwest::StatusCode::OK {
            return Err(failure(status, &text));
        }
        let mut v: Value = serde_json::from_str(&text)
            .map_err(|e| CdcError::Source(format!("Snowflake result: {e}")))?;
        if v["statementHandle"].as_str().is_none() && !handle.is_empty() {
            v["statementHandle"] = json!(handle);
        }
        Ok(v)
    }

    /// Runs one statement and returns its whole result (every partition).
    pub async fn query(&self, statement: &str) -> Result<ResultSet, CdcError> {
        let mut pages = self.open(statement).await?;
        let mut rows = Vec::new();
        while let Some(page) = self.next_page(&mut pages).await? {
            rows.extend(page);
        }
        Ok(ResultSet {
            columns: pages.columns,
            rows,
            handle: pages.handle,
        })
    }

    /// Runs one statement and returns its first partition; [`SqlApi::next_page`] hands out the
    /// partitions one by one, so a large result is never held whole.
    pub async fn open(&self, statement: &str) -> Result<Pages, CdcError> {
        let v = self.run(statement, None).await?;
        let handle = v["statementHandle"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let meta = &v["resultSetMetaData"];
        let columns: Vec<(String, String)> = meta["rowType"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        (
                            c["name"].as_str().unwrap_or_default().to_string(),
                            c["type"].as_str().unwrap_or("text").to_ascii_lowercase(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let partitions = meta["partitionInfo"].as_array().map(Vec::len).unwrap_or(1);
        Ok(Pages {
            columns,
            handle,
            partitions,
            first: Some(parse_rows(&v["data"])?),
            next: 1,
        })
    }

    /// The next partition of `pages` (the first comes with the statement's response).
    pub async fn next_page(
        &self,
        pages: &mut Pages,
    ) -> Result<Option<Vec<Vec<Option<String>>>>, CdcError> {
        if let Some(first) = pages.first.take() {
            return Ok(Some(first));
        }
        if pages.next >= pages.partitions {
            return Ok(None);
        }
        let p = pages.next;
        pages.next += 1;
        let url = format!("{}/api/v2/statements/{}", self.base, pages.handle);
        let (status, text) = self
            .send(|_| self.http.get(&url).query(&[("partition", p.to_string())]))
            .await?;
        if status != reqwest::StatusCode::OK {
            return Err(failure(status, &text));
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| CdcError::Source(format!("Snowflake partition {p}: {e}")))?;
        Ok(Some(parse_rows(&v["data"])?))
    }

    /// Runs several statements in one request (`MULTI_STATEMENT_COUNT` = their number), in
    /// order; a `BEGIN; …; COMMIT` among them is one transaction. Returns the statements'
    /// handles (`statementHandles`). A statement that fails fails the whole request, and an
    /// open transaction is rolled back.
    pub async fn execute_all(&self, statements: &[String]) -> Result<Vec<String>, CdcError> {
        let text = statements.join(";\n");
        let v = self.run(&text, Some(statements.len())).await?;
        let handles: Vec<String> = v["statementHandles"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if statements.len() > 1 && handles.len() != statements.len() {
            return Err(CdcError::Source(format!(
                "Snowflake answered a {}-statement request with {} statement handles",
                statements.len(),
                handles.len()
            )));
        }
        Ok(handles)
    }
}

/// A result being read partition by partition ([`SqlApi::open`]).
#[derive(Debug, Clone, Default)]
pub struct Pages {
    pub columns: Vec<(String, String)>,
    pub handle: String,
    pub partitions: usize,
    first: Option<Vec<Vec<Option<String>>>>,
    next: usize,
}

fn parse_rows(data: &Value) -> Result<Vec<Vec<Option<String>>>, CdcError> {
    let Some(rows) = data.as_array() else {
        return Ok(Vec::new());
    };
    rows.iter()
        .map(|r| {
            r.as_array()
                .ok_or_else(|| CdcError::Source("Snowflake row is not an array".into()))
                .map(|cells| {
                    cells
                        .iter()
                        .map(|c| match c {
                            Value::Null => None,
                            Value::String(s) => Some(s.clone()),
                            other => Some(other.to_string()),
                        })
                        .collect()
                })
        })
        .collect()
}

/// A `jsonv2` value as JSON by its column type: numbers for `fixed` (scale 0) and `real`,
/// booleans, parsed `variant`/`object`/`array`, strings otherwise.
pub fn typed(kind: &str, v: Option<&str>) -> Value {
    let Some(s) = v else { return Value::Null };
    match kind {
        "fixed" => s
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(s.to_string())),
        "real" => s
            .parse::<f64>()
            .ok()
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
            .unwrap_or_else(|| Value::String(s.to_string())),
        "boolean" => Value::Bool(s.eq_ignore_ascii_case("true")),
        "variant" | "object" | "array" => {
            serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
        }
        _ => Value::String(s.to_string()),
    }
}

/// An error with its causes (`reqwest` puts "connection refused" or the DNS failure there).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
