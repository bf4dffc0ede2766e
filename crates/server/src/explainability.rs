//! The explainability service, shared by the HTTP routes and the batch worker: computing a
//! debate's explanation in a requested format, and submitting batches (batch row + queue job +
//! idempotency key in one transaction).

use crate::error::ApiError;
use crate::state::AppState;
use aragora_core::auth::Principal;
use aragora_core::debate::{Debate, DebateStatus};
use aragora_core::ids::{is_valid_external_id, new_id, prefix};
use aragora_explain::{
    ALGORITHM_VERSION, ExplainOptions, explain, render_html, render_markdown, render_mermaid,
    render_summary, render_svg, to_json,
};
use aragora_queue::{NewJob, enqueue_in};
use aragora_store::explain::{self as repo, Batch, KeyClaim, NewBatch, StoredExplanation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// The job queue batch jobs go through.
pub const BATCH_QUEUE: &str = "explainability_batch";
/// Worker kind shown in `GET /api/workers/status`.
pub const BATCH_KIND: &str = "batch_explainability";
/// Most debates one batch may name.
pub const MAX_BATCH_SIZE: usize = 10_000;
/// `idempotency_keys.scope` of batch submissions.
pub const IDEMPOTENCY_SCOPE: &str = "explainability.batch";
/// Event published when a batch finishes (`status` `completed`, whatever its `phase`).
pub const BATCH_COMPLETED_EVENT: &str = "explainability.batch.completed";
/// Attempts a batch job gets (each crash of its worker uses one; progress is kept across them).
pub const BATCH_JOB_ATTEMPTS: u32 = 10;

/// What an explanation is rendered as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The explanation object (`application/json`).
    #[default]
    Json,
    /// A few sentences of plain text.
    Summary,
    /// Markdown with every section.
    Detailed,
    /// The debate graph: Mermaid source and an SVG drawing.
    Visual,
}

impl Format {
    pub const NAMES: &'static str = "json, summary, detailed, visual";

    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "json" => Some(Format::Json),
            "summary" => Some(Format::Summary),
            "detailed" => Some(Format::Detailed),
            "visual" => Some(Format::Visual),
            _ => None,
        }
    }
}

/// Why a debate cannot be explained (yet).
pub fn unfinished(d: &Debate) -> Option<String> {
    match d.status {
        DebateStatus::Pending | DebateStatus::Running => Some(format!(
            "debate {} is still {}; explanations are computed from finished debates",
            d.id,
            d.status.as_str()
        )),
        DebateStatus::Completed | DebateStatus::Failed => None,
    }
}

/// One debate's explanation, rendered.
pub struct Rendered {
    pub decision_id: String,
    /// The JSON explanation (what `format=json` returns and what is stored).
    pub json: String,
    pub output: Output,
    /// The standalone HTML page, when asked for.
    pub html: Option<String>,
}

pub enum Output {
    /// `format=json`: the body is [`Rendered::json`].
    Json,
    /// `summary` (plain text) or `detailed` (Markdown).
    Text(String),
    /// `visual`.
    Visual { mermaid: String, svg: String },
}

/// The `format=visual` JSON body.
#[derive(Serialize, ToSchema)]
pub struct Visual<'a> {
    pub decision_id: &'a str,
    pub debate_id: &'a str,
    /// Mermaid `flowchart LR` source.
    pub mermaid: &'a str,
    /// A standalone SVG drawing of the same graph.
    pub svg: &'a str,
}

impl Rendered {
    /// The result as a JSON value's text: the explanation object, a string for text formats, or
    /// `{"mermaid", "svg"}` for `visual` (what batch results hold).
    pub fn into_result_json(self, debate_id: &str) -> (String, String) {
        let text = match &self.output {
            Output::Json => self.json.clone(),
            Output::Text(t) => serde_json::to_string(t).expect("a string serialises"),
            Output::Visual { mermaid, svg } => serde_json::to_string(&Visual {
                decision_id: &self.decision_id,
                debate_id,
                mermaid,
                svg,
            })
            .expect("strings serialise"),
        };
        (text, self.json)
    }
}

/// Explains `debate` and renders it as `format`. Pure CPU work (call from a blocking task when
/// doing many).
pub fn compute(debate: &Debate, opts: &ExplainOptions, format: Format) -> Rendered {
    compute_with_html(debate, opts, format, false)
}

/// [`compute`], plus the standalone HTML page when `html`.
pub fn compute_with_html(
    debate: &Debate,
    opts: &ExplainOptions,
    format: Format,
    html: bool,
) -> Rendered {
    let e = explain(debate, opts);
    let html = html.then(|| render_html(debate, &e));
    let json = to_json(&e);
    let output = match format {
        Format::Json => Output::Json,
        Format::Summary => Output::Text(render_summary(&e)),
        Format::Detailed => Output::Text(render_markdown(&e)),
        Format::Visual => Output::Visual {
            mermaid: render_mermaid(debate, &e),
            svg: render_svg(debate, &e),
        },
    };
    Rendered {
        decision_id: e.decision_id,
        json,
        output,
        html,
    }
}

/// The row that keeps an explanation for `GET /api/v1/explanations/{decision_id}`.
pub fn stored(
    decision_id: &str,
    debate_id: &str,
    opts: &ExplainOptions,
    json: String,
) -> StoredExplanation {
    StoredExplanation {
        decision_id: decision_id.to_string(),
        debate_id: debate_id.to_string(),
        options: serde_json::to_string(opts).expect("options serialise"),
        algorithm_version: ALGORITHM_VERSION.to_string(),
        explanation: json,
    }
}

fn yes() -> bool {
    true
}

/// Batch options. Unknown fields are rejected (a misspelt switch would otherwise be ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchOptions {
    #[serde(default = "yes")]
    pub include_evidence: bool,
    #[serde(default = "yes")]
    pub include_counterfactuals: bool,
    #[serde(default = "yes")]
    pub include_vote_pivots: bool,
    /// What each result's `explanation` holds: `json` (the object), `summary` / `detailed` (a
    /// string), `visual` (`{"mermaid", "svg"}`).
    #[serde(default)]
    pub format: Format,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            include_evidence: true,
            include_counterfactuals: true,
            include_vote_pivots: true,
            format: Format::Json,
        }
    }
}

impl BatchOptions {
    pub fn explain_options(&self) -> ExplainOptions {
        ExplainOptions {
            include_evidence: self.include_evidence,
            include_counterfactuals: self.include_counterfactuals,
            include_vote_pivots: self.include_vote_pivots,
        }
    }
}

/// A debate id as the OpenAPI document describes it: 1 to 128 characters of `[A-Za-z0-9._:-]`.
#[derive(utoipa::ToSchema)]
#[schema(pattern = "^[A-Za-z0-9._:-]{1,128}$")]
pub struct DebateIdSchema(#[allow(dead_code)] String);

/// `POST /api/v1/explainability/batch` body. Unknown fields are refused: a misspelt `options`
/// would otherwise run the batch with every section switched on.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Debates of the caller's workspace, 1 to 10,000 ids. Results keep this order (`position`);
    /// an id listed twice is explained twice.
    #[schema(value_type = Vec<DebateIdSchema>, min_items = 1, max_items = 10000)]
    pub debate_ids: Vec<String>,
    /// Absent or `null`: every section, `json`.
    #[serde(default, deserialize_with = "object_or_null")]
    #[schema(value_type = Option<BatchOptions>)]
    pub options: BatchOptions,
}

/// `null` means the defaults, as leaving the field out does; anything but an object is refused
/// (serde would read a struct from an array). The object is read through the same deserializer,
/// so an error inside still names its field (`options.format`).
fn object_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BatchOptions, D::Error> {
    struct Options;
    impl<'de> serde::de::Visitor<'de> for Options {
        type Value = BatchOptions;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of options or null")
        }
        fn visit_none<E>(self) -> Result<BatchOptions, E> {
            Ok(BatchOptions::default())
        }
        fn visit_unit<E>(self) -> Result<BatchOptions, E> {
            Ok(BatchOptions::default())
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<BatchOptions, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<BatchOptions, A::Error> {
            BatchOptions::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_option(Options)
}

impl BatchRequest {
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.debate_ids.is_empty() {
            return Err(ApiError::invalid(
                "debate_ids",
                "must name at least one debate",
            ));
        }
        if self.debate_ids.len() > MAX_BATCH_SIZE {
            return Err(ApiError::invalid(
                "debate_ids",
                format!(
                    "at most {MAX_BATCH_SIZE} debates per batch ({} given); split the list",
                    self.debate_ids.len()
                ),
            ));
        }
        if let Some((i, _)) = self
            .debate_ids
            .iter()
            .enumerate()
            .find(|(_, id)| !is_valid_external_id(id))
        {
            return Err(ApiError::invalid(
                &format!("debate_ids[{i}]"),
                "must be 1 to 128 characters of [A-Za-z0-9._:-]",
            ));
        }
        Ok(())
    }

    /// SHA-256 of the normalised request (defaults filled in), so equivalent bodies match.
    pub fn hash(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("request serialises");
        hex::encode(Sha256::digest(&canonical))
    }
}

/// A submitted batch; `replayed` when an `Idempotency-Key` matched an earlier identical request.
pub struct Submitted {
    pub batch: Batch,
    pub replayed: bool,
}

/// Checks an `Idempotency-Key` header value.
pub fn check_idempotency_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(())
}

/// Creates the batch and enqueues its job in one transaction; with an idempotency key, the key is
/// claimed in the same transaction (same key + same body → the earlier batch; different body →
/// 422).
pub async fn submit_batch(
    state: &AppState,
    who: &Principal,
    req: &BatchRequest,
    idempotency_key: Option<&str>,
) -> Result<Submitted, ApiError> {
    req.validate()?;
    if let Some(k) = idempotency_key {
        check_idempotency_key(k)?;
    }
    let db = &state.db;
    let batch_id = new_id(prefix::BATCH);
    let options = serde_json::to_string(&req.options).expect("options serialise");
    let mut tx = db.begin().await?;
    if let Some(key) = idempotency_key {
        let hash = req.hash();
        let response = serde_json::json!({"batch_id": batch_id}).to_string();
        match repo::claim_idempotency_key_in(
            &mut tx,
            &who.workspace,
            IDEMPOTENCY_SCOPE,
            key,
            &hash,
            202,
            &response,
        )
        .await?
        {
            KeyClaim::Claimed => {}
            KeyClaim::Existing {
                request_hash,
                response,
                ..
            } => {
                tx.rollback().await?;
                if request_hash != hash {
                    return Err(ApiError::invalid(
                        "Idempotency-Key",
                        "this key was already used with a different request body; use a new key",
                    ));
                }
                let earlier: serde_json::Value =
                    serde_json::from_str(&response).unwrap_or_default();
                let id = earlier["batch_id"].as_str().unwrap_or_default();
                let batch = repo::get_batch(db, &who.workspace, id)
                    .await?
                    .ok_or_else(|| {
                        aragora_core::Error::internal(format!(
                            "idempotency key names missing batch {id}"
                        ))
                    })?;
                return Ok(Submitted {
                    batch,
                    replayed: true,
                });
            }
        }
    }
    let job_id = format!("job-{batch_id}");
    let batch = repo::insert_batch_in(
        &mut tx,
        &NewBatch {
            id: &batch_id,
            workspace: &who.workspace,
            debate_ids: &req.debate_ids,
            options: &options,
            idempotency_key,
            created_by: &who.user,
            job_id: &job_id,
        },
    )
    .await?;
    enqueue_in(
        &mut tx,
        db.dialect(),
        &NewJob::new(BATCH_QUEUE, serde_json::json!({"batch_id": batch_id}))
            .id(job_id)
            .max_attempts(BATCH_JOB_ATTEMPTS),
    )
    .await?;
    tx.commit().await?;
    state.queue.notify_local(BATCH_QUEUE);
    tracing::info!(batch = %batch.id, total = batch.total, by = %who.user, "explainability batch submitted");
    Ok(Submitted {
        batch,
        replayed: false,
    })
}
