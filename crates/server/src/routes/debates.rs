//! Debates over HTTP (workspace-scoped): start one (run by the debates worker), import a finished
//! transcript, list and read them.

use crate::auth::{Auth, perm};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;
use crate::workers::debates::{self as worker, DebateJob};
use aragora_core::consensus;
use aragora_core::debate::{
    Agent, AgentFailure, ConsensusConfig, ConsensusMode, Debate, DebateStatus, Evidence, Judgement,
    Round, Vote,
};
use aragora_core::ids::{is_valid_external_id, new_id, prefix};
use aragora_core::page::{clamp_limit, decode_cursor, encode_cursor};
use aragora_core::time::rfc3339;
use aragora_core::{Error, Result};
use aragora_debate::DebateSpec;
use aragora_queue::{NewJob, enqueue_in};
use aragora_store::debates::{self, DebateRow, DebateSummary, ListFilter};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use utoipa::{IntoParams, ToSchema};

/// Body of `POST /api/v1/debates` (DESIGN.md §10 "Starting a debate").
#[derive(Debug, Deserialize, ToSchema)]
pub struct StartDebate {
    /// What the agents debate (1..=10,000 characters).
    pub task: String,
    /// Background shown to every agent.
    #[serde(default)]
    pub context: Option<String>,
    /// 2 to 20 agents: `name`, `provider` (`demo`, `openai`, `openai-compatible`, `ollama`,
    /// `openrouter`, `anthropic`), `model`, `base_url`, `api_key_env`, `weight`.
    pub agents: Vec<Agent>,
    /// 1 to 10, counting the proposal round (default 3).
    #[serde(default)]
    pub rounds: Option<u32>,
    #[serde(default)]
    pub consensus: Option<ConsensusConfig>,
    /// Evidence the agents may cite by id.
    #[serde(default)]
    pub evidence: Vec<Evidence>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DebateStarted {
    pub debate_id: String,
    /// Always `pending`: the debates worker picks it up.
    pub status: String,
}

/// Start a debate; the debates worker runs it. Poll `GET /api/v1/debates/{id}` or read the events.
#[utoipa::path(post, path = "/api/v1/debates", tag = "debates", request_body = StartDebate,
    responses((status = 202, body = DebateStarted), (status = 422, description = "invalid field, named in error.details.field")),
    security(("bearer" = [])))]
pub async fn create(
    auth: Auth<perm::DebatesWrite>,
    State(state): State<AppState>,
    Json(body): Json<StartDebate>,
) -> ApiResult<(StatusCode, HeaderMap, axum::Json<DebateStarted>)> {
    let id = new_id(prefix::DEBATE);
    let mut spec = DebateSpec::new(body.task, body.agents);
    spec.id = Some(id.clone());
    spec.context = body.context;
    if let Some(r) = body.rounds {
        spec.rounds = r;
    }
    if let Some(c) = body.consensus {
        spec.consensus = c;
    }
    spec.evidence = body.evidence;
    spec.validate()?;

    let debate = Debate {
        id: id.clone(),
        task: spec.task.clone(),
        context: spec.context.clone(),
        consensus: spec.consensus.clone(),
        agents: spec.agents.clone(),
        evidence: spec.evidence.clone(),
        rounds: Vec::new(),
        votes: Vec::new(),
        judge: None,
        status: DebateStatus::Pending,
        final_answer: None,
        winner: None,
        consensus_reached: false,
        confidence: 0.0,
        consensus_strength: 0.0,
        rounds_used: 0,
        agent_failures: Vec::new(),
    };
    let payload = serde_json::to_value(DebateJob {
        workspace: auth.workspace.clone(),
        debate_id: id.clone(),
        spec,
    })
    .map_err(Error::internal)?;
    let job_id = new_id(prefix::JOB);
    // The debate and its job exist together or not at all.
    let mut tx = state.db.begin().await?;
    enqueue_in(
        &mut tx,
        state.db.dialect(),
        &NewJob::new(worker::QUEUE, payload)
            .id(job_id.clone())
            .max_attempts(worker::JOB_MAX_ATTEMPTS),
    )
    .await?;
    debates::insert_run_in(&mut tx, &auth.workspace, &debate, &auth.user, &job_id).await?;
    tx.commit().await?;
    state.queue.notify_local(worker::QUEUE);
    metrics::counter!("aragora_debates_requested_total").increment(1);

    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/debates/{id}")) {
        headers.insert(header::LOCATION, v);
    }
    Ok((
        StatusCode::ACCEPTED,
        headers,
        axum::Json(DebateStarted {
            debate_id: id,
            status: "pending".into(),
        }),
    ))
}

/// Body of `POST /api/v1/debates/import`: the §10 record shape. The outcome fields (`status`,
/// `winner`, `consensus_reached`, `confidence`, `consensus_strength`, `rounds_used`) may be sent
/// but are ignored: the server computes them from the votes and the consensus rule.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ImportDebate {
    /// Kept when given (1..=128 characters of `[A-Za-z0-9._:-]`, not `import`, `.` or `..`);
    /// generated (`deb-…`) when absent or null. An empty string is a 422.
    #[serde(default)]
    pub id: Option<String>,
    pub task: String,
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub consensus: ConsensusConfig,
    pub agents: Vec<Agent>,
    #[serde(default)]
    pub evidence: Vec<Evidence>,
    #[serde(default)]
    pub rounds: Vec<Round>,
    #[serde(default)]
    pub votes: Vec<Vote>,
    #[serde(default)]
    pub judge: Option<Judgement>,
    /// Used only when the winner has no recorded position.
    #[serde(default)]
    pub final_answer: Option<String>,
    #[serde(default)]
    pub agent_failures: Vec<AgentFailure>,
}

/// Ids an imported debate may not take: `/api/v1/debates/{id}` would reach another route
/// (`import`, and every other literal segment under `/api/v1/debates/`) or be rewritten by
/// clients as a dot segment (`.`, `..`). A test checks the list against the router.
pub const RESERVED_IDS: [&str; 3] = ["import", ".", ".."];

pub const MAX_IMPORT_AGENTS: usize = 100;
pub const MAX_IMPORT_ROUNDS: usize = 100;
pub const MAX_IMPORT_EVIDENCE: usize = 1_000;

fn in_unit(x: f64) -> bool {
    x.is_finite() && (0.0..=1.0).contains(&x)
}

fn check_text(field: &str, s: &str, max: usize) -> Result<()> {
    if s.chars().count() > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// Validates a transcript and computes its outcome. Every error names the field, e.g.
/// `votes[2].choice` or `rounds[1].critiques[0].target`.
pub fn validate_import(body: ImportDebate) -> Result<Debate> {
    // Absent and `null` both mean "assign one"; an empty string is a bad id like any other.
    let id = match body.id {
        Some(id) if RESERVED_IDS.contains(&id.as_str()) => {
            return Err(Error::invalid(
                "id",
                format!(
                    "'{id}' is reserved: /api/v1/debates/{id} could not address the debate \
                     (reserved: {})",
                    RESERVED_IDS.join(", ")
                ),
            ));
        }
        Some(id) if is_valid_external_id(&id) => id,
        Some(_) => {
            return Err(Error::invalid(
                "id",
                "must be 1..=128 characters of [A-Za-z0-9._:-]",
            ));
        }
        None => new_id(prefix::DEBATE),
    };
    if body.task.trim().is_empty() {
        return Err(Error::invalid("task", "must not be empty"));
    }
    check_text("task", &body.task, 10_000)?;
    if let Some(c) = &body.context {
        check_text("context", c, 100_000)?;
    }
    if body.agents.is_empty() || body.agents.len() > MAX_IMPORT_AGENTS {
        return Err(Error::invalid(
            "agents",
            format!("must list 1 to {MAX_IMPORT_AGENTS} agents"),
        ));
    }
    let mut agents = HashSet::new();
    for (i, a) in body.agents.iter().enumerate() {
        let f = |s: &str| format!("agents[{i}].{s}");
        if a.name.is_empty()
            || a.name.len() > 64
            || !a
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(Error::invalid(
                f("name"),
                "must be 1..=64 characters of [A-Za-z0-9._-]",
            ));
        }
        if !agents.insert(a.name.as_str()) {
            return Err(Error::invalid(
                f("name"),
                format!("duplicate agent name '{}'", a.name),
            ));
        }
        if !a.weight.is_finite() || a.weight <= 0.0 || a.weight > 1_000.0 {
            return Err(Error::invalid(
                f("weight"),
                format!("must be greater than 0 and at most 1000, got {}", a.weight),
            ));
        }
        // Any provider name is accepted (the record may come from a system with providers this
        // server lacks; an import never runs), but it must say which one ran the agent.
        if a.provider.trim().is_empty() {
            return Err(Error::invalid(
                f("provider"),
                "required: the provider that ran this agent",
            ));
        }
        check_text(&f("provider"), &a.provider, 64)?;
        if let Some(m) = &a.model {
            check_text(&f("model"), m, 200)?;
        }
    }
    let known = |name: &str| agents.contains(name);

    let c = &body.consensus;
    if !in_unit(c.threshold) {
        return Err(Error::invalid(
            "consensus.threshold",
            format!("must be between 0 and 1, got {}", c.threshold),
        ));
    }
    if let Some(j) = &c.judge {
        if c.mode != ConsensusMode::Judge {
            return Err(Error::invalid(
                "consensus.judge",
                format!("only used in judge mode, not in {} mode", c.mode.as_str()),
            ));
        }
        if !known(j) {
            return Err(Error::invalid(
                "consensus.judge",
                format!("'{j}' is not one of the agents"),
            ));
        }
    }

    if body.evidence.len() > MAX_IMPORT_EVIDENCE {
        return Err(Error::invalid(
            "evidence",
            format!("at most {MAX_IMPORT_EVIDENCE} items"),
        ));
    }
    let mut evidence = HashSet::new();
    for (i, e) in body.evidence.iter().enumerate() {
        if !is_valid_external_id(&e.id) {
            return Err(Error::invalid(
                format!("evidence[{i}].id"),
                "must be 1..=128 characters of [A-Za-z0-9._:-]",
            ));
        }
        if !evidence.insert(e.id.as_str()) {
            return Err(Error::invalid(
                format!("evidence[{i}].id"),
                format!("duplicate evidence id '{}'", e.id),
            ));
        }
        if e.claim.trim().is_empty() {
            return Err(Error::invalid(
                format!("evidence[{i}].claim"),
                "must not be empty",
            ));
        }
    }

    if body.rounds.len() > MAX_IMPORT_ROUNDS {
        return Err(Error::invalid(
            "rounds",
            format!("at most {MAX_IMPORT_ROUNDS} rounds"),
        ));
    }
    // Agents with a position anywhere (votes refer to final positions).
    let mut positioned: HashSet<&str> = HashSet::new();
    for (r, round) in body.rounds.iter().enumerate() {
        if round.round as usize != r {
            return Err(Error::invalid(
                format!("rounds[{r}].round"),
                format!("rounds are numbered 0, 1, 2, … in order; expected {r}"),
            ));
        }
        let mut here: HashMap<&str, usize> = HashMap::new();
        for (j, p) in round.positions.iter().enumerate() {
            let f = |s: &str| format!("rounds[{r}].positions[{j}].{s}");
            if !known(&p.agent) {
                return Err(Error::invalid(
                    f("agent"),
                    format!("'{}' is not one of the agents", p.agent),
                ));
            }
            if here.insert(p.agent.as_str(), j).is_some() {
                return Err(Error::invalid(
                    f("agent"),
                    format!("'{}' already has a position in round {r}", p.agent),
                ));
            }
            if !in_unit(p.confidence) {
                return Err(Error::invalid(
                    f("confidence"),
                    format!("must be between 0 and 1, got {}", p.confidence),
                ));
            }
            for (k, ev) in p.evidence_ids.iter().enumerate() {
                if !evidence.contains(ev.as_str()) {
                    return Err(Error::invalid(
                        format!("rounds[{r}].positions[{j}].evidence_ids[{k}]"),
                        format!("evidence '{ev}' is not in the debate's evidence"),
                    ));
                }
            }
            positioned.insert(p.agent.as_str());
        }
        for (j, cr) in round.critiques.iter().enumerate() {
            let f = |s: &str| format!("rounds[{r}].critiques[{j}].{s}");
            if !known(&cr.critic) {
                return Err(Error::invalid(
                    f("critic"),
                    format!("'{}' is not one of the agents", cr.critic),
                ));
            }
            if !here.contains_key(cr.target.as_str()) {
                return Err(Error::invalid(
                    f("target"),
                    format!("'{}' has no position in round {r} to critique", cr.target),
                ));
            }
            if !cr.severity.is_finite() || !(0.0..=10.0).contains(&cr.severity) {
                return Err(Error::invalid(
                    f("severity"),
                    format!("must be between 0 and 10, got {}", cr.severity),
                ));
            }
        }
    }

    let mut voters = HashSet::new();
    for (i, v) in body.votes.iter().enumerate() {
        let f = |s: &str| format!("votes[{i}].{s}");
        if !known(&v.agent) {
            return Err(Error::invalid(
                f("agent"),
                format!("'{}' is not one of the agents", v.agent),
            ));
        }
        if !voters.insert(v.agent.as_str()) {
            return Err(Error::invalid(
                f("agent"),
                format!("'{}' already voted", v.agent),
            ));
        }
        if !known(&v.choice) {
            return Err(Error::invalid(
                f("choice"),
                format!("'{}' is not one of the agents", v.choice),
            ));
        }
        if !positioned.is_empty() && !positioned.contains(v.choice.as_str()) {
            return Err(Error::invalid(
                f("choice"),
                format!("'{}' has no position to vote for", v.choice),
            ));
        }
        if !in_unit(v.confidence) {
            return Err(Error::invalid(
                f("confidence"),
                format!("must be between 0 and 1, got {}", v.confidence),
            ));
        }
    }
    if let Some(j) = &body.judge {
        if c.mode != ConsensusMode::Judge {
            return Err(Error::invalid(
                "judge",
                format!(
                    "a judgement is only used in judge mode, not in {} mode",
                    c.mode.as_str()
                ),
            ));
        }
        if !known(&j.agent) {
            return Err(Error::invalid(
                "judge.agent",
                format!("'{}' is not one of the agents", j.agent),
            ));
        }
        if c.judge.as_deref().is_some_and(|cj| cj != j.agent) {
            return Err(Error::invalid(
                "judge.agent",
                "must be the agent named in consensus.judge",
            ));
        }
        if !known(&j.choice) {
            return Err(Error::invalid(
                "judge.choice",
                format!("'{}' is not one of the agents", j.choice),
            ));
        }
        // The same rule as a vote's choice: the winner is an agent with a position.
        if !positioned.is_empty() && !positioned.contains(j.choice.as_str()) {
            return Err(Error::invalid(
                "judge.choice",
                format!("'{}' has no position to choose", j.choice),
            ));
        }
    } else if c.mode == ConsensusMode::Judge {
        return Err(Error::invalid(
            "judge",
            "required in judge mode: the judgement decides the outcome",
        ));
    }
    for (i, fl) in body.agent_failures.iter().enumerate() {
        if !known(&fl.agent) {
            return Err(Error::invalid(
                format!("agent_failures[{i}].agent"),
                format!("'{}' is not one of the agents", fl.agent),
            ));
        }
    }

    let mut d = Debate {
        id,
        task: body.task,
        context: body.context,
        consensus: body.consensus,
        agents: body.agents,
        evidence: body.evidence,
        rounds: body.rounds,
        votes: body.votes,
        judge: body.judge,
        status: DebateStatus::Completed,
        final_answer: None,
        winner: None,
        consensus_reached: false,
        confidence: 0.0,
        consensus_strength: 0.0,
        rounds_used: 0,
        agent_failures: body.agent_failures,
    };
    let outcome = consensus::decide(&d.consensus, &d.agents, &d.votes, d.judge.as_ref());
    d.final_answer = outcome
        .winner
        .as_deref()
        .and_then(|w| d.final_position(w))
        .map(|p| p.answer.clone())
        .or(body.final_answer);
    d.winner = outcome.winner;
    d.consensus_reached = outcome.consensus_reached;
    d.confidence = outcome.confidence;
    d.consensus_strength = outcome.consensus_strength;
    d.rounds_used = d.rounds.len() as u32;
    Ok(d)
}

/// A debate as the API shows it: the §10 record plus run facts.
#[derive(Debug, Serialize, ToSchema)]
pub struct DebateView {
    #[serde(flatten)]
    pub record: Debate,
    /// `consensus`, `no_consensus` or `failed` once finished; null before.
    pub outcome: Option<String>,
    /// `run` (started through the API) or `import`.
    pub origin: String,
    /// Why a run failed.
    pub failure: Option<String>,
    /// Token usage per agent: `{"agent": {"input_tokens", "output_tokens"}}` (zero for demo).
    #[schema(value_type = Option<Object>)]
    pub usage: Option<Value>,
    /// Agent calls made by the run.
    pub calls: Option<i64>,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    /// Run time in milliseconds (started → completed).
    pub duration_ms: Option<i64>,
}

impl From<DebateRow> for DebateView {
    fn from(r: DebateRow) -> Self {
        let finished = matches!(
            r.debate.status,
            DebateStatus::Completed | DebateStatus::Failed
        );
        DebateView {
            outcome: finished.then(|| worker::outcome(&r.debate).to_string()),
            record: r.debate,
            origin: r.origin,
            failure: r.failure,
            usage: r.usage,
            calls: r.calls,
            created_by: r.created_by,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
            started_at: r.started_at.map(rfc3339),
            completed_at: r.completed_at.map(rfc3339),
            duration_ms: r.started_at.zip(r.completed_at).map(|(s, c)| c - s),
        }
    }
}

/// Import a finished transcript; the server computes its outcome.
#[utoipa::path(post, path = "/api/v1/debates/import", tag = "debates", request_body = ImportDebate,
    responses((status = 201, body = DebateView), (status = 409, description = "the id exists in this workspace"),
        (status = 422, description = "invalid field, named in error.details.field")),
    security(("bearer" = [])))]
pub async fn import(
    auth: Auth<perm::DebatesWrite>,
    State(state): State<AppState>,
    Json(body): Json<ImportDebate>,
) -> ApiResult<(StatusCode, axum::Json<DebateView>)> {
    let debate = validate_import(body)?;
    let mut tx = state.db.begin().await?;
    if let Err(e) = debates::insert_in(&mut tx, &auth.workspace, &debate, &auth.user).await {
        if debates::is_unique_violation(&e) {
            return Err(Error::Conflict(format!(
                "debate '{}' already exists in this workspace",
                debate.id
            ))
            .into());
        }
        return Err(e.into());
    }
    worker::publish_outcome_in(&mut tx, state.db.dialect(), &auth.workspace, &debate, None).await?;
    tx.commit().await?;
    worker::wake_webhooks(&state.queue);
    metrics::counter!("aragora_debates_imported_total").increment(1);
    let row = debates::get_row(&state.db, &auth.workspace, &debate.id)
        .await?
        .ok_or_else(|| Error::internal("imported debate vanished"))?;
    Ok((StatusCode::CREATED, axum::Json(row.into())))
}

/// One debate: the full record (transcript and outcome) and run facts.
#[utoipa::path(get, path = "/api/v1/debates/{debate_id}", tag = "debates",
    params(("debate_id" = String, Path, description = "debate id")),
    responses((status = 200, body = DebateView), (status = 404)), security(("bearer" = [])))]
pub async fn get(
    auth: Auth<perm::DebatesRead>,
    State(state): State<AppState>,
    Path(debate_id): Path<String>,
) -> ApiResult<axum::Json<DebateView>> {
    match debates::get_row(&state.db, &auth.workspace, &debate_id).await? {
        Some(row) => Ok(axum::Json(row.into())),
        None => Err(ApiError::not_found("debate")),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListParams {
    /// `pending`, `running`, `completed` or `failed`.
    #[param(pattern = "^(|pending|running|completed|failed)$")]
    pub status: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1..=200 (default 20).
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DebateSummaryView {
    pub id: String,
    pub task: String,
    pub status: DebateStatus,
    pub outcome: Option<String>,
    pub consensus_mode: String,
    pub winner: Option<String>,
    pub consensus_reached: bool,
    pub confidence: f64,
    pub consensus_strength: f64,
    pub rounds_used: i64,
    pub origin: String,
    pub created_at: String,
    pub updated_at: String,
    pub completed_at: Option<String>,
}

impl From<DebateSummary> for DebateSummaryView {
    fn from(s: DebateSummary) -> Self {
        let outcome = match s.status {
            DebateStatus::Completed if s.consensus_reached => Some("consensus"),
            DebateStatus::Completed => Some("no_consensus"),
            DebateStatus::Failed => Some("failed"),
            _ => None,
        };
        DebateSummaryView {
            outcome: outcome.map(str::to_string),
            id: s.id,
            task: s.task,
            status: s.status,
            consensus_mode: s.consensus_mode,
            winner: s.winner,
            consensus_reached: s.consensus_reached,
            confidence: s.confidence,
            consensus_strength: s.consensus_strength,
            rounds_used: s.rounds_used,
            origin: s.origin,
            created_at: rfc3339(s.created_at),
            updated_at: rfc3339(s.updated_at),
            completed_at: s.completed_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DebateList {
    pub items: Vec<DebateSummaryView>,
    pub total: i64,
    pub next_cursor: Option<String>,
}

/// List the workspace's debates, newest first.
#[utoipa::path(get, path = "/api/v1/debates", tag = "debates", params(ListParams),
    responses((status = 200, body = DebateList), (status = 422)), security(("bearer" = [])))]
pub async fn list(
    auth: Auth<perm::DebatesRead>,
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<DebateList>> {
    let status = match params.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some("pending") => Some(DebateStatus::Pending),
        Some("running") => Some(DebateStatus::Running),
        Some("completed") => Some(DebateStatus::Completed),
        Some("failed") => Some(DebateStatus::Failed),
        Some(other) => {
            return Err(ApiError::invalid(
                "status",
                format!("unknown status '{other}'; expected pending, running, completed or failed"),
            ));
        }
    };
    let after = match params.cursor.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(c) => Some(
            decode_cursor(c)
                .and_then(|k| {
                    let (ts, id) = k.split_once('|')?;
                    Some((ts.parse::<i64>().ok()?, id.to_string()))
                })
                .ok_or_else(|| ApiError::invalid("cursor", "not a cursor this list issued"))?,
        ),
    };
    let limit = clamp_limit(params.limit);
    // One row more than the page tells whether another page follows (a full last page has no
    // cursor).
    let (mut rows, total) = debates::list(
        &state.db,
        &auth.workspace,
        &ListFilter {
            status,
            after,
            limit: limit + 1,
        },
    )
    .await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last()
            .map(|r| encode_cursor(&format!("{}|{}", r.created_at, r.id)))
    } else {
        None
    };
    Ok(axum::Json(DebateList {
        items: rows.into_iter().map(Into::into).collect(),
        total,
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    type Mutate = Box<dyn Fn(&mut Value)>;

    fn transcript() -> Value {
        json!({
            "id": "deb-imp-1", "task": "Design a rate limiter",
            "consensus": {"mode": "majority", "threshold": 0.6},
            "agents": [{"name": "alice", "provider": "openai", "model": "gpt-x"},
                       {"name": "bob", "provider": "anthropic", "model": "claude-x"},
                       {"name": "carol", "provider": "demo"}],
            "evidence": [{"id": "ev-1", "claim": "Token buckets allow bursts", "source": "RFC 6585", "url": null}],
            "rounds": [{"round": 0,
                "positions": [
                    {"agent": "alice", "answer": "Token bucket per tenant", "reasoning": "bursts", "confidence": 0.8, "evidence_ids": ["ev-1"]},
                    {"agent": "bob", "answer": "Sliding window", "reasoning": "precise", "confidence": 0.7},
                    {"agent": "carol", "answer": "Fixed window", "reasoning": "simple", "confidence": 0.5}],
                "critiques": [{"critic": "bob", "target": "alice", "issues": ["memory"], "suggestions": [], "severity": 6.5, "reasoning": "…"}]}],
            "votes": [{"agent": "alice", "choice": "alice", "confidence": 0.9},
                      {"agent": "bob", "choice": "alice", "confidence": 0.8},
                      {"agent": "carol", "choice": "bob", "confidence": 0.6}],
            "status": "failed", "winner": "carol", "consensus_reached": false, "confidence": 0.01
        })
    }

    fn import(v: Value) -> Result<Debate> {
        validate_import(serde_json::from_value(v).expect("shape"))
    }

    fn field_of(v: Value) -> String {
        match import(v) {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn the_outcome_is_recomputed_never_trusted() {
        let d = import(transcript()).unwrap();
        let o = consensus::decide(&d.consensus, &d.agents, &d.votes, None);
        assert_eq!(d.winner.as_deref(), Some("alice"));
        assert_eq!(d.winner, o.winner);
        assert_eq!(d.consensus_reached, o.consensus_reached);
        assert!(d.consensus_reached, "2 of 3 ≥ 0.6");
        assert_eq!(d.confidence, o.confidence);
        assert_eq!(d.consensus_strength, o.consensus_strength);
        assert_eq!(d.status, DebateStatus::Completed);
        assert_eq!(d.final_answer.as_deref(), Some("Token bucket per tenant"));
        assert_eq!(d.rounds_used, 1);
        assert_eq!(d.id, "deb-imp-1");
    }

    #[test]
    fn a_missing_id_is_generated_a_bad_one_refused() {
        let mut t = transcript();
        t.as_object_mut().unwrap().remove("id");
        assert!(import(t).unwrap().id.starts_with("deb-"));
        let mut t = transcript();
        t["id"] = json!("bad id!");
        assert_eq!(field_of(t), "id");
    }

    #[test]
    fn an_empty_or_reserved_id_is_refused_a_null_one_generated() {
        for bad in ["", "import", ".", ".."] {
            let mut t = transcript();
            t["id"] = json!(bad);
            assert_eq!(field_of(t), "id", "{bad:?}");
        }
        let mut t = transcript();
        t["id"] = json!(null);
        assert!(import(t).unwrap().id.starts_with("deb-"));
        // Only the exact segment collides: routes are case-sensitive.
        let mut t = transcript();
        t["id"] = json!("import-2");
        assert_eq!(import(t).unwrap().id, "import-2");
    }

    /// Every literal segment the router has right under `/api/v1/debates/` is a reserved id, so
    /// an imported debate can always be read back at `/api/v1/debates/{id}`.
    #[test]
    fn reserved_ids_cover_every_route_under_debates() {
        let doc = crate::openapi();
        let mut literals = Vec::new();
        for path in doc.paths.paths.keys() {
            if let Some(rest) = path.strip_prefix("/api/v1/debates/") {
                let segment = rest.split('/').next().unwrap_or_default();
                if !segment.starts_with('{') {
                    literals.push(segment.to_string());
                }
            }
        }
        assert!(literals.contains(&"import".to_string()), "{literals:?}");
        for l in &literals {
            assert!(RESERVED_IDS.contains(&l.as_str()), "'{l}' is not reserved");
        }
    }

    #[test]
    fn an_agent_needs_a_provider_any_name_will_do() {
        let mut t = transcript();
        t["agents"][1].as_object_mut().unwrap().remove("provider");
        assert_eq!(field_of(t), "agents[1].provider");
        let mut t = transcript();
        t["agents"][2]["provider"] = json!(" ");
        assert_eq!(field_of(t), "agents[2].provider");
        // A provider this server lacks: the record says what ran elsewhere; it is never run here.
        let mut t = transcript();
        t["agents"][0]["provider"] = json!("bedrock");
        assert_eq!(import(t).unwrap().agents[0].provider, "bedrock");
    }

    #[test]
    fn a_judgement_is_required_in_judge_mode_and_chooses_a_position() {
        let with_judge = |t: &mut Value| {
            t["agents"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "j", "provider": "openai", "model": "gpt-x"}));
            t["consensus"] = json!({"mode": "judge", "judge": "j"});
        };
        let mut t = transcript();
        with_judge(&mut t);
        assert_eq!(field_of(t), "judge");
        let mut t = transcript();
        t["consensus"] = json!({"mode": "judge"});
        assert_eq!(field_of(t), "judge");
        // The judge has no position: choosing itself would make a winner without an answer.
        let mut t = transcript();
        with_judge(&mut t);
        t["judge"] = json!({"agent": "j", "choice": "j", "reasoning": "me"});
        assert_eq!(field_of(t), "judge.choice");
        let mut t = transcript();
        with_judge(&mut t);
        t["judge"] = json!({"agent": "j", "choice": "bob"});
        let d = import(t).unwrap();
        assert_eq!(d.winner.as_deref(), Some("bob"));
        assert_eq!(d.final_answer.as_deref(), Some("Sliding window"));
    }

    #[test]
    fn every_inconsistency_names_its_field() {
        let cases: Vec<(&str, Mutate)> = vec![
            (
                "votes[2].choice",
                Box::new(|t| t["votes"][2]["choice"] = json!("mallory")),
            ),
            (
                "votes[1].agent",
                Box::new(|t| t["votes"][1]["agent"] = json!("mallory")),
            ),
            (
                "votes[1].agent",
                Box::new(|t| t["votes"][1]["agent"] = json!("alice")),
            ),
            (
                "votes[0].confidence",
                Box::new(|t| t["votes"][0]["confidence"] = json!(1.5)),
            ),
            (
                "rounds[0].critiques[0].target",
                Box::new(|t| t["rounds"][0]["critiques"][0]["target"] = json!("dave")),
            ),
            (
                "rounds[0].critiques[0].critic",
                Box::new(|t| t["rounds"][0]["critiques"][0]["critic"] = json!("dave")),
            ),
            (
                "rounds[0].critiques[0].severity",
                Box::new(|t| t["rounds"][0]["critiques"][0]["severity"] = json!(11)),
            ),
            (
                "rounds[0].positions[1].confidence",
                Box::new(|t| t["rounds"][0]["positions"][1]["confidence"] = json!(-0.1)),
            ),
            (
                "rounds[0].positions[0].evidence_ids[0]",
                Box::new(|t| t["rounds"][0]["positions"][0]["evidence_ids"] = json!(["ev-9"])),
            ),
            (
                "rounds[0].positions[2].agent",
                Box::new(|t| t["rounds"][0]["positions"][2]["agent"] = json!("alice")),
            ),
            (
                "rounds[0].round",
                Box::new(|t| t["rounds"][0]["round"] = json!(1)),
            ),
            (
                "agents[2].name",
                Box::new(|t| t["agents"][2]["name"] = json!("alice")),
            ),
            (
                "agents[0].weight",
                Box::new(|t| t["agents"][0]["weight"] = json!(0)),
            ),
            (
                "evidence[0].claim",
                Box::new(|t| t["evidence"][0]["claim"] = json!(" ")),
            ),
            (
                "consensus.threshold",
                Box::new(|t| t["consensus"]["threshold"] = json!(2)),
            ),
            (
                "judge",
                Box::new(|t| t["judge"] = json!({"agent": "carol", "choice": "alice"})),
            ),
            ("task", Box::new(|t| t["task"] = json!(""))),
            ("agents", Box::new(|t| t["agents"] = json!([]))),
        ];
        for (field, mutate) in cases {
            let mut t = transcript();
            mutate(&mut t);
            assert_eq!(field_of(t), field);
        }
    }

    #[test]
    fn judge_mode_follows_the_judge() {
        let mut t = transcript();
        t["consensus"] = json!({"mode": "judge", "judge": "carol"});
        t["judge"] = json!({"agent": "carol", "choice": "bob", "reasoning": "precise"});
        let d = import(t).unwrap();
        assert_eq!(d.winner.as_deref(), Some("bob"));
        assert!(d.consensus_reached);
        assert_eq!(d.final_answer.as_deref(), Some("Sliding window"));
        let mut t = transcript();
        t["consensus"] = json!({"mode": "judge", "judge": "carol"});
        t["judge"] = json!({"agent": "bob", "choice": "bob"});
        assert_eq!(field_of(t), "judge.agent");
    }
}
