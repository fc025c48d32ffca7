//! The REST API under `/api/v1`: thin handlers over the facade, their request and response
//! types (the OpenAPI document is generated from these), and the JSON body extractor that
//! turns malformed input into a 4xx with a message.

use crate::AppState;
use crate::auth::{Caller, hash_token, new_token};
use crate::error::{ApiError, ErrorBody};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use wflo_core::db::{Driver, ExecutionFilter, Executor};
use wflo_core::types::{ApprovalId, ExecutionId, ExecutionStatus, Role};
use wflo_core::{StartRun, WorkflowSource};

/// A JSON body: malformed JSON, a wrong type, an unknown field or a body over the limit is a
/// 4xx with the error's JSON, and nothing is stored.
pub(crate) struct Body<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(match &e {
                JsonRejection::JsonDataError(_) => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_input",
                    format!("{}; see /api/v1/openapi.json for the schema", e.body_text()),
                ),
                JsonRejection::JsonSyntaxError(_) => {
                    ApiError::invalid(format!("the body is not valid JSON: {}", e.body_text()))
                }
                JsonRejection::MissingJsonContentType(_) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as JSON with `Content-Type: application/json`",
                ),
                _ if e.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the body is larger than the server accepts; send less",
                ),
                _ => ApiError::invalid(e.body_text()),
            }),
        }
    }
}

fn parse_id<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, ApiError> {
    s.parse()
        .map_err(|_| ApiError::not_found(format!("no {what} has the id `{s}` (ids are uuids)")))
}

// ---- views -------------------------------------------------------------------------------

/// Tokens an execution or a step used.
#[derive(Debug, Serialize, ToSchema, Deserialize)]
pub struct TokensView {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
}

impl From<&wflo_core::db::Tokens> for TokensView {
    fn from(t: &wflo_core::db::Tokens) -> Self {
        TokensView {
            prompt: t.prompt,
            completion: t.completion,
            total: t.total(),
        }
    }
}

/// Who drives an execution now.
#[derive(Debug, Serialize, ToSchema, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DriverView {
    /// Temporal's workers.
    Temporal,
    /// An in-process engine holding the lease.
    Held {
        holder: String,
        until: DateTime<Utc>,
    },
    /// Nobody (since the last lease ended, when there was one).
    None { since: Option<DateTime<Utc>> },
}

/// An execution.
#[derive(Debug, Serialize, ToSchema, Deserialize)]
pub struct ExecutionView {
    #[schema(value_type = String, format = Uuid)]
    pub id: ExecutionId,
    pub workflow: String,
    #[schema(schema_with = execution_status_schema)]
    pub status: ExecutionStatus,
    /// `LOCAL` (the in-process engine) or `TEMPORAL`.
    pub engine: String,
    pub inputs: Value,
    pub outputs: Option<Value>,
    pub error: Option<String>,
    /// USD, exact (a decimal string).
    #[schema(value_type = Option<String>)]
    pub budget_usd: Option<Decimal>,
    /// USD, exact (a decimal string).
    #[schema(value_type = String)]
    pub cost_usd: Decimal,
    pub tokens: TokensView,
    pub correlation_id: Option<String>,
    pub trace_id: Option<String>,
    pub driver: DriverView,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

fn execution_status_schema() -> utoipa::openapi::schema::Object {
    vocab_schema(ExecutionStatus::ALL.iter().map(|s| s.as_str()))
}

/// A string schema whose values are the vocabulary's.
pub(crate) fn vocab_schema<'a>(
    values: impl Iterator<Item = &'a str>,
) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.map(str::to_string)))
        .build()
}

impl ExecutionView {
    /// The view of an execution row.
    pub fn of(e: &wflo_core::db::Execution) -> ExecutionView {
        ExecutionView {
            id: e.id,
            workflow: e.workflow_name.clone(),
            status: e.status,
            engine: e.engine.as_str().to_string(),
            inputs: e.inputs.clone(),
            outputs: e.outputs.clone(),
            error: e.error.clone(),
            budget_usd: e.budget_usd,
            cost_usd: e.cost_usd,
            tokens: (&e.tokens).into(),
            correlation_id: e.correlation_id.clone(),
            trace_id: e.trace_id.clone(),
            driver: match e.driver(Utc::now()) {
                Driver::Temporal => DriverView::Temporal,
                Driver::Held { holder, until } => DriverView::Held { holder, until },
                Driver::None { since } => DriverView::None { since },
                _ => DriverView::None { since: None },
            },
            created_at: e.created_at,
            started_at: e.started_at,
            completed_at: e.completed_at,
        }
    }
}

/// A step of an execution.
#[derive(Debug, Serialize, ToSchema, Deserialize)]
pub struct StepView {
    #[schema(value_type = String, format = Uuid)]
    pub id: wflo_core::types::StepId,
    /// The step's id in its workflow.
    pub key: String,
    /// `llm`, `code`, `approval`, `checkpoint` or `tool`.
    pub kind: String,
    #[schema(schema_with = step_status_schema)]
    pub status: wflo_core::types::StepStatus,
    pub attempts: i32,
    /// The output, in its kind's shape (LLM text and usage, code stdout/stderr/exit code, …).
    pub output: Option<Value>,
    pub error: Option<String>,
    #[schema(value_type = String)]
    pub cost_usd: Decimal,
    pub tokens: TokensView,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

fn step_status_schema() -> utoipa::openapi::schema::Object {
    vocab_schema(wflo_core::types::StepStatus::ALL.iter().map(|s| s.as_str()))
}

impl StepView {
    fn of(s: &wflo_core::StepSummary) -> StepView {
        let st = &s.step;
        StepView {
            id: st.id,
            key: st.step_key.clone(),
            kind: st.step_type.clone(),
            status: st.status,
            attempts: st.attempt,
            output: st.outputs.clone(),
            error: st.error.clone(),
            cost_usd: st.cost_usd,
            tokens: (&st.tokens).into(),
            started_at: st.started_at,
            completed_at: st.completed_at,
        }
    }
}

/// A snapshot of an execution's state.
#[derive(Debug, Serialize, ToSchema, Deserialize)]
pub struct SnapshotView {
    #[schema(value_type = String, format = Uuid)]
    pub id: wflo_core::types::SnapshotId,
    pub version: i32,
    pub step: Option<String>,
    pub superseded_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// An approval request.
#[derive(Debug, Serialize, ToSchema, Deserialize)]
pub struct ApprovalView {
    #[schema(value_type = String, format = Uuid)]
    pub id: ApprovalId,
    #[schema(value_type = String, format = Uuid)]
    pub execution_id: ExecutionId,
    pub step: Option<String>,
    #[schema(schema_with = approval_status_schema)]
    pub status: wflo_core::types::ApprovalStatus,
    /// What is asked.
    pub message: String,
    /// What the action is (its details, as the workflow gave them).
    pub context: Value,
    /// `LOW`, `MEDIUM`, `HIGH` or `CRITICAL`.
    pub risk: String,
    /// The fingerprint of the exact action: a decision authorises this action only.
    pub action_fingerprint: String,
    pub approver_group: Option<String>,
    pub deadline: Option<DateTime<Utc>>,
    /// What happens at the deadline: `REJECT`, `APPROVE` or `ESCALATE`.
    pub timeout_policy: String,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

fn approval_status_schema() -> utoipa::openapi::schema::Object {
    vocab_schema(
        wflo_core::types::ApprovalStatus::ALL
            .iter()
            .map(|s| s.as_str()),
    )
}

impl ApprovalView {
    /// The view of an approval request row.
    pub fn of(a: &wflo_core::db::Approval) -> ApprovalView {
        ApprovalView {
            id: a.id,
            execution_id: a.execution_id,
            step: a.step_key.clone(),
            status: a.status,
            message: a.message.clone(),
            context: a.context.clone(),
            risk: a.risk_level.as_str().to_string(),
            action_fingerprint: a.action_fingerprint.clone(),
            approver_group: a.approver_group.clone(),
            deadline: a.timeout_at,
            timeout_policy: a.timeout_policy.as_str().to_string(),
            decided_by: a.decided_by.clone(),
            reason: a.decision_reason.clone(),
            decided_at: a.decided_at,
            created_at: a.created_at,
        }
    }
}

/// A rollback of an execution.
#[derive(Debug, Serialize, ToSchema, Deserialize)]
pub struct RollbackView {
    pub id: uuid::Uuid,
    #[schema(value_type = String, format = Uuid)]
    pub snapshot_id: wflo_core::types::SnapshotId,
    pub snapshot_version: Option<i32>,
    /// `PENDING`, `IN_PROGRESS`, `COMPLETED` or `FAILED`.
    pub status: String,
    pub reason: String,
    pub initiated_by: String,
    pub details: Value,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// Calls, tokens and money over some of the ledger.
#[derive(Debug, Default, Serialize, ToSchema, Deserialize)]
pub struct CostView {
    pub calls: u64,
    #[schema(value_type = String)]
    pub cost_usd: Decimal,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_prompt_tokens: u64,
}

impl From<&wflo_core::cost::CostSummary> for CostView {
    fn from(s: &wflo_core::cost::CostSummary) -> Self {
        CostView {
            calls: s.calls,
            cost_usd: s.cost_usd,
            prompt_tokens: s.prompt_tokens,
            completion_tokens: s.completion_tokens,
            cached_prompt_tokens: s.cached_prompt_tokens,
        }
    }
}

/// Everything recorded about one execution.
#[derive(Debug, Serialize, ToSchema, Deserialize)]
pub struct ExecutionDetail {
    pub execution: ExecutionView,
    pub workflow_version: i32,
    pub steps: Vec<StepView>,
    pub snapshots: Vec<SnapshotView>,
    pub approvals: Vec<ApprovalView>,
    pub rollbacks: Vec<RollbackView>,
    /// The ledger's totals per model.
    pub costs_by_model: BTreeMap<String, CostView>,
}

impl ExecutionDetail {
    /// The view of an execution summary (what `GET /api/v1/executions/{id}` answers).
    pub fn of(s: &wflo_core::ExecutionSummary) -> ExecutionDetail {
        ExecutionDetail {
            execution: ExecutionView::of(&s.execution),
            workflow_version: s.workflow_version,
            steps: s.steps.iter().map(StepView::of).collect(),
            snapshots: s
                .snapshots
                .iter()
                .map(|p| SnapshotView {
                    id: p.id,
                    version: p.version,
                    step: p.step_key.clone(),
                    superseded_at: p.superseded_at,
                    created_at: p.created_at,
                })
                .collect(),
            approvals: s.approvals.iter().map(ApprovalView::of).collect(),
            rollbacks: s
                .rollbacks
                .iter()
                .map(|r| RollbackView {
                    id: r.id,
                    snapshot_id: r.snapshot_id,
                    snapshot_version: s.snapshot_version(r.snapshot_id),
                    status: r.status.as_str().to_string(),
                    reason: r.reason.clone(),
                    initiated_by: r.initiated_by.clone(),
                    details: r.details.clone(),
                    error: r.error.clone(),
                    created_at: r.created_at,
                    completed_at: r.completed_at,
                })
                .collect(),
            costs_by_model: s
                .costs_by_model
                .iter()
                .map(|(k, v)| (k.clone(), v.into()))
                .collect(),
        }
    }
}

// ---- health --------------------------------------------------------------------------------

/// Liveness.
#[derive(Debug, Serialize, ToSchema, Deserialize)]
pub(crate) struct Health {
    pub status: String,
}

/// Whether the process serves at all (no token needed, no dependency checked).
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "the process serves", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: the database answers and its migrations are this build's.
#[derive(Debug, Serialize, ToSchema, Deserialize)]
pub(crate) struct Ready {
    pub status: String,
    pub database: String,
    pub pending_migrations: usize,
}

/// Whether this instance can serve requests: the database is reachable and its schema current.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "ready", body = Ready),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 503, description = "the database is unreachable or its schema is not current", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn readyz(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Ready>, ApiError> {
    caller.require(Role::Viewer)?;
    let db = state.wflo.db();
    let unavailable = |m: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m);
    if db.ping().await.is_err() {
        return Err(unavailable(
            "the database does not answer; check that it runs and DATABASE_URL".into(),
        ));
    }
    let schema = db
        .schema_status()
        .await
        .map_err(|_| unavailable("the database schema cannot be read".into()))?;
    if !schema.pending.is_empty() || !schema.unknown.is_empty() {
        return Err(unavailable(format!(
            "the database schema is not this build's ({} pending, {} unknown migration(s)); run `wflo migrate`",
            schema.pending.len(),
            schema.unknown.len()
        )));
    }
    Ok(Json(Ready {
        status: "ready".into(),
        database: format!("{:?}", db.backend()).to_lowercase(),
        pending_migrations: 0,
    }))
}

// ---- executions ----------------------------------------------------------------------------

/// A run to start: a stored workflow by name (and version), or a workflow in YAML.
#[derive(Debug, Deserialize, ToSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// A stored workflow's name (with `version`, else its latest version).
    pub workflow: Option<String>,
    pub version: Option<i32>,
    /// A workflow definition in YAML (instead of `workflow`).
    pub yaml: Option<String>,
    /// Inputs by name.
    #[serde(default)]
    pub inputs: Map<String, Value>,
    /// The execution's budget in USD, a decimal string or number (overrides the workflow's).
    #[schema(value_type = Option<String>)]
    pub budget_usd: Option<Decimal>,
    /// The caller's own tag for the run.
    pub correlation_id: Option<String>,
}

/// A run accepted: it executes in the background.
#[derive(Debug, Serialize, ToSchema, Deserialize)]
pub struct StartResponse {
    #[schema(value_type = String, format = Uuid)]
    pub id: ExecutionId,
    pub workflow: String,
    /// `LOCAL` or `TEMPORAL`.
    pub engine: String,
    /// Where to follow it.
    pub links: Links,
}

/// Where to follow an execution.
#[derive(Debug, Serialize, ToSchema, Deserialize)]
pub struct Links {
    pub execution: String,
    pub events: String,
}

/// Starts a run; it executes in the background (follow it through `links`).
#[utoipa::path(post, path = "/api/v1/executions", tag = "executions",
    request_body = StartRequest,
    responses(
        (status = 202, description = "accepted", body = StartResponse),
        (status = 400, description = "bad workflow, inputs or budget", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "no stored workflow by that name or version", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<StartRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let source = match (req.workflow, req.yaml) {
        (Some(name), None) => WorkflowSource::Stored {
            name,
            version: req.version,
        },
        (None, Some(yaml)) if req.version.is_none() => WorkflowSource::Yaml(yaml),
        _ => {
            return Err(ApiError::invalid(
                "give either `workflow` (with an optional `version`) or `yaml`",
            ));
        }
    };
    let mut run = StartRun::new(source, caller.name.clone());
    run.inputs = req.inputs;
    run.budget_usd = req.budget_usd;
    run.correlation_id = req.correlation_id;
    let started = state.wflo.start_run(run).await?;
    let id = started.execution_id;
    let body = StartResponse {
        id,
        workflow: started.workflow,
        engine: started.engine.as_str().to_string(),
        links: Links {
            execution: format!("/api/v1/executions/{id}"),
            events: format!("/api/v1/events?execution={id}"),
        },
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Which executions to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only this status.
    #[param(value_type = Option<String>)]
    status: Option<String>,
    /// Only runs of this workflow.
    workflow: Option<String>,
    /// Only executions created at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size (1 to 200, default 50).
    limit: Option<u64>,
}

/// A page of executions.
#[derive(Debug, Serialize, ToSchema, Deserialize)]
pub struct ExecutionPage {
    pub items: Vec<ExecutionView>,
    /// Pass as `cursor` for the next page (none: this was the last).
    pub next_cursor: Option<String>,
}

/// Executions, newest first.
#[utoipa::path(get, path = "/api/v1/executions", tag = "executions",
    params(ListQuery),
    responses((status = 200, body = ExecutionPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ExecutionPage>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 200"));
    }
    let status = q
        .status
        .as_deref()
        .map(str::parse::<ExecutionStatus>)
        .transpose()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<ExecutionId>()
                .map_err(|_| ApiError::invalid("the cursor is not one this server gave"))
        })
        .transpose()?;
    let filter = ExecutionFilter {
        status,
        workflow: q.workflow,
        since: q.since,
        after,
        limit: limit + 1,
    };
    let mut rows = state
        .wflo
        .db()
        .executions()
        .page(&filter)
        .await
        .map_err(|e| match e {
            wflo_core::db::Error::NotFound { .. } => {
                ApiError::invalid("the cursor names no execution; start from the first page")
            }
            other => other.into(),
        })?;
    let next_cursor = if rows.len() as u64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|e| e.id.to_string())
    } else {
        None
    };
    Ok(Json(ExecutionPage {
        items: rows.iter().map(ExecutionView::of).collect(),
        next_cursor,
    }))
}

/// One execution with its steps, outputs, snapshots, approvals, rollbacks and costs.
#[utoipa::path(get, path = "/api/v1/executions/{id}", tag = "executions",
    params(("id" = String, Path, description = "the execution id")),
    responses((status = 200, body = ExecutionDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ExecutionDetail>, ApiError> {
    caller.require(Role::Viewer)?;
    let id: ExecutionId = parse_id(&id, "execution")?;
    let summary = state.wflo.execution_summary(id).await?;
    Ok(Json(ExecutionDetail::of(&summary)))
}

/// Why an operation is done.
#[derive(Debug, Deserialize, ToSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    pub reason: Option<String>,
}

/// Cancels an unfinished execution: its driver stops before its next step and its budget
/// reservations are released.
#[utoipa::path(post, path = "/api/v1/executions/{id}/cancel", tag = "executions",
    params(("id" = String, Path)), request_body = ReasonRequest,
    responses((status = 200, body = ExecutionView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "already finished", body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<ReasonRequest>,
) -> Result<Json<ExecutionView>, ApiError> {
    caller.require(Role::Operator)?;
    let id: ExecutionId = parse_id(&id, "execution")?;
    let reason = req
        .reason
        .unwrap_or_else(|| format!("cancelled by {}", caller.name));
    let exec = state.wflo.cancel(id, &caller.name, &reason).await?;
    Ok(Json(ExecutionView::of(&exec)))
}

/// Continues a stopped execution (failed, interrupted, rolled back) in the background.
#[utoipa::path(post, path = "/api/v1/executions/{id}/resume", tag = "executions",
    params(("id" = String, Path)),
    responses((status = 202, body = ExecutionView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "finished, or driven by another process", body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let id: ExecutionId = parse_id(&id, "execution")?;
    let exec = state.wflo.resume_in_background(id, &caller.name).await?;
    Ok((StatusCode::ACCEPTED, Json(ExecutionView::of(&exec))).into_response())
}

/// A rollback to ask for.
#[derive(Debug, Deserialize, ToSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The snapshot version to restore.
    pub snapshot_version: i32,
    pub reason: String,
}

/// What a rollback did.
#[derive(Debug, Serialize, ToSchema, Deserialize)]
pub struct RollbackDone {
    pub rollback_id: uuid::Uuid,
    pub snapshot_version: i32,
    pub undone_steps: Vec<String>,
    pub compensations: Vec<String>,
    pub superseded_snapshots: u64,
}

/// Rolls a stopped execution back to a snapshot (compensations run, later snapshots
/// superseded); resume it afterwards.
#[utoipa::path(post, path = "/api/v1/executions/{id}/rollback", tag = "executions",
    params(("id" = String, Path)), request_body = RollbackRequest,
    responses((status = 200, body = RollbackDone), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "the execution is running", body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<RollbackRequest>,
) -> Result<Json<RollbackDone>, ApiError> {
    caller.require(Role::Operator)?;
    let id: ExecutionId = parse_id(&id, "execution")?;
    if req.reason.trim().is_empty() {
        return Err(ApiError::invalid("say why in `reason`"));
    }
    let out = state
        .wflo
        .engine()
        .rollback(id, req.snapshot_version, &req.reason, &caller.name)
        .await?;
    Ok(Json(RollbackDone {
        rollback_id: out.rollback_id,
        snapshot_version: out.snapshot_version,
        undone_steps: out.undone_steps,
        compensations: out.compensations,
        superseded_snapshots: out.superseded,
    }))
}

// ---- approvals -----------------------------------------------------------------------------

/// The approval requests waiting for a decision, oldest first.
#[utoipa::path(get, path = "/api/v1/approvals", tag = "approvals",
    responses((status = 200, body = Vec<ApprovalView>), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn approvals(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ApprovalView>>, ApiError> {
    caller.require(Role::Viewer)?;
    let pending = state.wflo.db().approvals().pending().await?;
    Ok(Json(pending.iter().map(ApprovalView::of).collect()))
}

/// `approve` or `reject`.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Reject,
}

/// A decision on an approval request.
#[derive(Debug, Deserialize, ToSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub decision: Verdict,
    pub reason: Option<String>,
}

/// Decides an approval request once: the first decision stands (409 for a second, or for a
/// request whose action changed or that expired).
#[utoipa::path(post, path = "/api/v1/approvals/{id}/decision", tag = "approvals",
    params(("id" = String, Path)), request_body = DecisionRequest,
    responses((status = 200, body = ApprovalView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "already decided, expired, or stale", body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn decide(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<DecisionRequest>,
) -> Result<Json<ApprovalView>, ApiError> {
    caller.require(Role::Approver)?;
    let id: ApprovalId = parse_id(&id, "approval request")?;
    let decided = decide_as(&state, &caller, id, req.decision, req.reason).await?;
    Ok(Json(ApprovalView::of(&decided)))
}

/// A decision by `caller`, as the API and the page take it.
pub(crate) async fn decide_as(
    state: &AppState,
    caller: &Caller,
    id: ApprovalId,
    verdict: Verdict,
    reason: Option<String>,
) -> Result<wflo_core::db::Approval, ApiError> {
    caller.require(Role::Approver)?;
    let reason = reason.filter(|r| !r.trim().is_empty());
    let decided = state
        .wflo
        .decide_approval(id, verdict == Verdict::Approve, &caller.name, reason)
        .await?;
    Ok(decided.approval)
}

// ---- costs and budgets ---------------------------------------------------------------------

/// How to group a cost report.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    #[default]
    Model,
    Workflow,
    Day,
}

/// What a cost report covers.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct CostQuery {
    /// `model` (default), `workflow` or `day` (UTC).
    #[param(inline)]
    by: Option<GroupBy>,
    /// From this time (RFC 3339); by day, the last 30 days when none.
    since: Option<DateTime<Utc>>,
}

/// One group of a cost report.
#[derive(Debug, Serialize, ToSchema, Deserialize)]
pub struct CostRow {
    /// The model, workflow or day (YYYY-MM-DD).
    pub key: String,
    #[serde(flatten)]
    pub totals: CostView,
}

/// A cost report.
#[derive(Debug, Serialize, ToSchema, Deserialize)]
pub struct CostReport {
    pub by: GroupBy,
    pub rows: Vec<CostRow>,
    pub total: CostView,
}

/// LLM spend from the ledger, by model, workflow or day.
#[utoipa::path(get, path = "/api/v1/costs", tag = "costs",
    params(CostQuery),
    responses((status = 200, body = CostReport), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn costs(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<CostQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CostReport>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    Ok(Json(
        cost_report(&state, q.by.unwrap_or_default(), q.since).await?,
    ))
}

pub(crate) async fn cost_report(
    state: &AppState,
    by: GroupBy,
    since: Option<DateTime<Utc>>,
) -> Result<CostReport, ApiError> {
    let costs = state.wflo.engine().costs();
    let query = wflo_core::cost::CostQuery {
        since,
        ..Default::default()
    };
    let rows: Vec<(String, wflo_core::cost::CostSummary)> = match by {
        GroupBy::Model => costs.totals_by_model(&query).await?.into_iter().collect(),
        GroupBy::Workflow => costs
            .totals_by_workflow(&query)
            .await?
            .into_iter()
            .collect(),
        GroupBy::Day => costs
            .totals_by_day(since, Utc::now())
            .await?
            .into_iter()
            .map(|(d, s)| (d.to_string(), s))
            .collect(),
    };
    let mut total = CostView::default();
    let rows = rows
        .iter()
        .map(|(k, s)| {
            total.calls += s.calls;
            total.cost_usd += s.cost_usd;
            total.prompt_tokens += s.prompt_tokens;
            total.completion_tokens += s.completion_tokens;
            total.cached_prompt_tokens += s.cached_prompt_tokens;
            CostRow {
                key: k.clone(),
                totals: s.into(),
            }
        })
        .collect();
    Ok(CostReport { by, rows, total })
}

/// A budget and how much of it is used.
#[derive(Debug, Serialize, ToSchema, Deserialize)]
pub struct BudgetView {
    /// `execution:<id>`, `workflow:<name>`, `tenant:<name>`, …
    pub scope: String,
    /// Empty for a budget that never resets, else `2026-11` or `2026-11-25`.
    pub period: String,
    #[schema(value_type = String)]
    pub limit_usd: Decimal,
    #[schema(value_type = String)]
    pub spent_usd: Decimal,
    /// Held by calls in flight.
    #[schema(value_type = String)]
    pub reserved_usd: Decimal,
    #[schema(value_type = String)]
    pub available_usd: Decimal,
    /// `(spent + reserved) / limit`, 0 to 1 (above 1 only if a provider charged more than
    /// reserved).
    pub utilisation: f64,
    pub updated_at: DateTime<Utc>,
}

impl BudgetView {
    pub(crate) fn of(b: &wflo_core::db::Budget) -> BudgetView {
        use rust_decimal::prelude::ToPrimitive;
        let used = b.spent_usd + b.reserved_usd;
        let utilisation = if b.limit_usd > Decimal::ZERO {
            (used / b.limit_usd).to_f64().unwrap_or(0.0)
        } else {
            0.0
        };
        BudgetView {
            scope: b.key.scope.clone(),
            period: b.key.period.clone(),
            limit_usd: b.limit_usd,
            spent_usd: b.spent_usd,
            reserved_usd: b.reserved_usd,
            available_usd: b.available_usd(),
            utilisation,
            updated_at: b.updated_at,
        }
    }
}

/// Which budgets to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct BudgetQuery {
    /// Only scopes starting with this (`workflow:`, `tenant:acme`).
    scope: Option<String>,
    /// At most this many (1 to 1000, default 100).
    limit: Option<u64>,
}

/// Budgets with their utilisation, most recently changed first.
#[utoipa::path(get, path = "/api/v1/budgets", tag = "costs",
    params(BudgetQuery),
    responses((status = 200, body = Vec<BudgetView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn budgets(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<BudgetQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<BudgetView>>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let rows = state
        .wflo
        .db()
        .budgets()
        .list(q.scope.as_deref(), q.limit.unwrap_or(100))
        .await?;
    Ok(Json(rows.iter().map(BudgetView::of).collect()))
}

// ---- tokens --------------------------------------------------------------------------------

/// An API token (never its secret).
#[derive(Debug, Serialize, ToSchema, Deserialize)]
pub struct TokenView {
    pub name: String,
    /// `VIEWER`, `APPROVER`, `OPERATOR` or `ADMIN`.
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TokenView {
    fn of(t: &wflo_core::db::ApiToken) -> TokenView {
        TokenView {
            name: t.name.clone(),
            role: t.role.as_str().to_string(),
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// Every API token, revoked ones included.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, body = Vec<TokenView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    caller.require(Role::Admin)?;
    let all = state.wflo.db().api_tokens().list().await?;
    Ok(Json(all.iter().map(TokenView::of).collect()))
}

/// A token to create.
#[derive(Debug, Deserialize, ToSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewTokenRequest {
    pub name: String,
    /// `viewer`, `approver`, `operator` or `admin`.
    pub role: String,
}

/// A new token: its secret is shown this once.
#[derive(Debug, Serialize, ToSchema, Deserialize)]
pub struct NewTokenResponse {
    pub name: String,
    pub role: String,
    /// The secret: send it as `Authorization: Bearer <token>`. It is not stored and cannot be
    /// shown again.
    pub token: String,
}

/// Creates an API token.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = NewTokenRequest,
    responses((status = 201, body = NewTokenResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, description = "an active token has that name", body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<NewTokenRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let role: Role = req
        .role
        .parse()
        .map_err(|_| ApiError::invalid("role must be viewer, approver, operator or admin"))?;
    let secret = new_token();
    let t = state
        .wflo
        .db()
        .api_tokens()
        .create(&req.name, role, &hash_token(&secret))
        .await?;
    tracing::info!(actor = %caller.name, token = %t.name, role = %t.role, "api token created");
    let body = NewTokenResponse {
        name: t.name,
        role: t.role.as_str().to_string(),
        token: secret,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Revokes the active token with this name: refused from the next request on.
#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "tokens",
    params(("name" = String, Path)),
    responses((status = 200, body = TokenView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    caller.require(Role::Admin)?;
    let t = state.wflo.db().api_tokens().revoke(&name).await?;
    tracing::info!(actor = %caller.name, token = %t.name, "api token revoked");
    Ok(Json(TokenView::of(&t)))
}

// ---- webhooks ------------------------------------------------------------------------------

/// A webhook (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WebhookView {
    name: String,
    url: String,
    /// `approval.requested`, `approval.decided`, `execution.finished`, `cost.budget_alert`.
    #[schema(value_type = Vec<String>)]
    events: Vec<String>,
    /// `JSON` or `SLACK`.
    #[schema(schema_with = webhook_format_schema)]
    format: String,
    enabled: bool,
    created_at: DateTime<Utc>,
}

fn webhook_format_schema() -> utoipa::openapi::schema::Object {
    vocab_schema(wflo_core::db::WebhookFormat::ALL.iter().map(|f| f.as_str()))
}

impl WebhookView {
    fn of(w: &wflo_core::db::Webhook) -> WebhookView {
        WebhookView {
            name: w.name.clone(),
            url: w.url.clone(),
            events: w.events.iter().map(|e| e.as_str().to_string()).collect(),
            format: w.format.as_str().to_string(),
            enabled: w.enabled,
            created_at: w.created_at,
        }
    }
}

/// Every webhook.
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = Vec<WebhookView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn webhooks(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<WebhookView>>, ApiError> {
    caller.require(Role::Admin)?;
    let all = state.wflo.db().webhooks().list().await?;
    Ok(Json(all.iter().map(WebhookView::of).collect()))
}

/// A webhook to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWebhookRequest {
    /// A unique name: letters, digits, `-`, `_` or `.`.
    name: String,
    /// Where to POST: an http or https url.
    url: String,
    /// What to send: `approval.requested`, `approval.decided`, `execution.finished` (a run
    /// completed, failed or was cancelled) and `cost.budget_alert` (a budget threshold).
    events: Vec<String>,
    /// `json` (default) or `slack` (`{"text": "..."}`, for a Slack incoming webhook).
    format: Option<String>,
    /// The signing secret (16 to 200 printable characters); one is generated when none is
    /// given.
    #[schema(value_type = Option<String>)]
    secret: Option<String>,
    /// Whether to send events to it (default true).
    enabled: Option<bool>,
}

/// A new webhook with its signing secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NewWebhookResponse {
    #[serde(flatten)]
    webhook: WebhookView,
    /// Bodies are signed with it: the `Wflo-Signature` header is `t=<unix time>,v1=<hex
    /// HMAC-SHA256 of "<t>.<body>">`. It is not shown again.
    secret: String,
}

/// Creates a webhook: events of the chosen kinds written from now on are POSTed to its url,
/// signed, at least once.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", request_body = NewWebhookRequest,
    responses((status = 201, body = NewWebhookResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, description = "a webhook has that name", body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<NewWebhookRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let events = req
        .events
        .iter()
        .map(|e| e.parse::<wflo_core::db::WebhookEvent>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let format = match req.format.as_deref() {
        None => wflo_core::db::WebhookFormat::Json,
        Some(f) => f
            .parse()
            .map_err(|_| ApiError::invalid(format!("format `{f}` is not json or slack")))?,
    };
    let secret = req.secret.unwrap_or_else(crate::new_webhook_secret);
    let mut new = wflo_core::db::NewWebhook::new(req.name, req.url, events, secret).format(format);
    new.enabled = req.enabled.unwrap_or(true);
    let w = state.wflo.db().webhooks().create(new).await?;
    tracing::info!(actor = %caller.name, webhook = %w.name, "webhook created");
    let body = NewWebhookResponse {
        webhook: WebhookView::of(&w),
        secret: w.secret.clone(),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Removes a webhook with its deliveries (pending ones are not sent).
#[utoipa::path(delete, path = "/api/v1/webhooks/{name}", tag = "webhooks",
    params(("name" = String, Path)),
    responses((status = 200, body = WebhookView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn remove_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    caller.require(Role::Admin)?;
    let w = state.wflo.db().webhooks().remove(&name).await?;
    tracing::info!(actor = %caller.name, webhook = %w.name, "webhook removed");
    Ok(Json(WebhookView::of(&w)))
}

/// One event sent (or being sent) to a webhook.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeliveryView {
    id: uuid::Uuid,
    /// The event's id: the `Idempotency-Key` header of every attempt.
    event_id: uuid::Uuid,
    event_type: String,
    /// The event's position in the outbox.
    position: i64,
    /// `PENDING`, `DELIVERED` or `FAILED` (given up).
    #[schema(schema_with = delivery_status_schema)]
    status: String,
    attempts: u32,
    /// When it is next tried (pending deliveries).
    next_attempt_at: Option<DateTime<Utc>>,
    /// The receiver's HTTP status at the last attempt (none: no answer).
    last_status: Option<u16>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
}

fn delivery_status_schema() -> utoipa::openapi::schema::Object {
    vocab_schema(
        wflo_core::db::DeliveryStatus::ALL
            .iter()
            .map(|s| s.as_str()),
    )
}

/// Which deliveries to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveryQuery {
    /// Only this status (`pending`, `delivered` or `failed`).
    status: Option<String>,
    /// At most this many (1 to 1000, default 100).
    limit: Option<u64>,
}

/// A webhook's deliveries, newest event first.
#[utoipa::path(get, path = "/api/v1/webhooks/{name}/deliveries", tag = "webhooks",
    params(("name" = String, Path), DeliveryQuery),
    responses((status = 200, body = Vec<DeliveryView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn webhook_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    query: Result<Query<DeliveryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<DeliveryView>>, ApiError> {
    caller.require(Role::Admin)?;
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let status = q
        .status
        .as_deref()
        .map(str::parse::<wflo_core::db::DeliveryStatus>)
        .transpose()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let hooks = state.wflo.db().webhooks();
    let w = hooks.get(&name).await?;
    let rows = hooks.deliveries(w.id, status, limit).await?;
    Ok(Json(
        rows.iter()
            .map(|d| DeliveryView {
                id: d.id,
                event_id: d.event_id,
                event_type: d.event_type.as_str().to_string(),
                position: d.outbox_id,
                status: d.status.as_str().to_string(),
                attempts: d.attempts,
                next_attempt_at: (d.status == wflo_core::db::DeliveryStatus::Pending)
                    .then_some(d.next_attempt_at),
                last_status: d.last_status,
                last_error: d.last_error.clone(),
                created_at: d.created_at,
                delivered_at: d.delivered_at,
            })
            .collect(),
    ))
}
