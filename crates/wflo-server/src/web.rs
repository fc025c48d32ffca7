//! The web page: server-rendered HTML (maud) with a few lines of plain JavaScript that listen
//! to the event stream and refresh the live part of the page. Runs, one run, the approvals
//! inbox, costs and budgets; login with an API token (kept in an HttpOnly, SameSite=Strict
//! session cookie); every form carries the session's CSRF token.

use crate::AppState;
use crate::api::{self, BudgetView, GroupBy, Verdict};
use crate::auth::{self, Caller, SESSION_COOKIE};
use crate::error::ApiError;
use axum::Form;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Deserialize;
use wflo_core::db::{ExecutionFilter, Executor};
use wflo_core::types::{ApprovalId, ExecutionId, Role};

const STYLE: &str = r#"
:root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#f8f9fb;--ok:#1a7f37;--bad:#c0362c;--warn:#b54708;--accent:#3451b2}
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;flex-wrap:wrap;gap:.25rem 1rem;align-items:center;padding:.6rem 1rem;background:#fff;border-bottom:1px solid var(--line)}
header b{margin-right:.5rem}header a{color:var(--fg);text-decoration:none;padding:.2rem .4rem;border-radius:4px}header a.on{background:var(--line)}
header .who{margin-left:auto;color:var(--muted);font-size:.9em}
main{max-width:1100px;margin:0 auto;padding:1rem}
h1{font-size:1.3rem;margin:.2rem 0 1rem}h2{font-size:1.05rem;margin:1.5rem 0 .5rem}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:.8rem 1rem;margin-bottom:.8rem}
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid var(--line);vertical-align:top;white-space:nowrap}
td.wrap{white-space:normal}th{font-weight:600;color:var(--muted);font-size:.85em}
.st{font-size:.78em;font-weight:600;padding:.1rem .45rem;border-radius:99px;background:var(--line)}
.st.COMPLETED,.st.APPROVED{background:#dcfae6;color:var(--ok)}.st.FAILED,.st.REJECTED,.st.CANCELLED,.st.EXPIRED{background:#fee4e2;color:var(--bad)}
.st.RUNNING{background:#e0eaff;color:var(--accent)}.st.WAITING_APPROVAL,.st.PENDING{background:#fef0c7;color:var(--warn)}
.bar{position:relative;width:140px;height:10px;background:var(--line);border-radius:5px;overflow:hidden;display:inline-block;vertical-align:middle}
.bar i{position:absolute;left:0;top:0;bottom:0;background:var(--accent)}.bar.hot i{background:var(--bad)}
.muted{color:var(--muted)}pre{white-space:pre-wrap;word-break:break-word;background:#f2f4f7;padding:.5rem;border-radius:6px;margin:.3rem 0;max-height:320px;overflow:auto}
form.inline{display:flex;flex-wrap:wrap;gap:.4rem;align-items:center}input,select,button{font:inherit;padding:.35rem .55rem;border:1px solid var(--line);border-radius:6px}
input[type=text],input[type=password]{min-width:12rem;flex:1}button{cursor:pointer;background:#fff}button.ok{background:var(--ok);color:#fff;border-color:var(--ok)}button.bad{background:var(--bad);color:#fff;border-color:var(--bad)}
.timeline{border-left:3px solid var(--line);margin-left:.4rem;padding-left:1rem}.timeline .card{position:relative}
.flash{padding:.5rem .8rem;border-radius:6px;background:#fef0c7;margin-bottom:.8rem}
svg text{font:12px system-ui,sans-serif;fill:var(--fg)}
@media (max-width:640px){th,td{padding:.35rem .4rem}.hide-sm{display:none}main{padding:.6rem}}
"#;

/// Refreshes `#live` from `url` whenever the event stream says something changed (the
/// browser's EventSource resumes with Last-Event-ID by itself after a disconnect). A refresh
/// waits while someone is typing a reason in the live part, so no text is lost.
fn live_script(events: &str, fragment: &str) -> Markup {
    let kinds = serde_json::to_string(
        &wflo_core::types::EventType::KNOWN
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>(),
    )
    .unwrap_or_else(|_| "[]".into());
    let js = format!(
        r#"(function(){{var busy=false,again=false,live=document.getElementById('live');function typing(){{var a=document.activeElement;return a&&live.contains(a)&&(a.tagName==='INPUT'||a.tagName==='TEXTAREA')&&a.value!==''}}live.addEventListener('focusout',function(){{setTimeout(function(){{if(again&&!typing()){{again=false;refresh()}}}},0)}});function refresh(){{if(busy||typing()){{again=true;return}}busy=true;fetch({fragment:?},{{credentials:'same-origin'}}).then(function(r){{return r.ok?r.text():null}}).then(function(t){{if(t!==null){{document.getElementById('live').innerHTML=t}}}}).finally(function(){{busy=false;if(again){{again=false;refresh()}}}})}}
var es=new EventSource({events:?});es.onmessage=refresh;{kinds}.forEach(function(t){{es.addEventListener(t,refresh)}});es.addEventListener('error',function(){{}});}})();"#
    );
    html! { script { (PreEscaped(js)) } }
}

fn page(title: &str, caller: &Caller, nav: &str, body: Markup) -> Markup {
    let link = |href: &str, label: &str, key: &str| {
        html! { a href=(href) class=@if nav == key { "on" } { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Wflo" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    b { "Wflo" }
                    (link("/ui/runs", "Runs", "runs"))
                    (link("/ui/approvals", "Approvals", "approvals"))
                    (link("/ui/costs", "Costs", "costs"))
                    (link("/ui/budgets", "Budgets", "budgets"))
                    span class="who" {
                        (caller.name) " · " (caller.role.label()) " "
                        form.inline method="post" action="/logout" style="display:inline" {
                            input type="hidden" name="csrf" value=(caller.csrf());
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn usd(d: Decimal) -> String {
    format!("${}", d.round_dp(4).normalize())
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "—".into())
}

fn duration(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> String {
    match start {
        None => "—".into(),
        Some(s) => {
            let d = end.unwrap_or_else(Utc::now) - s;
            let secs = d.num_milliseconds() as f64 / 1000.0;
            if secs < 60.0 {
                format!("{secs:.1} s")
            } else {
                format!("{}m {:02}s", d.num_minutes(), d.num_seconds() % 60)
            }
        }
    }
}

fn bar(used: Decimal, limit: Option<Decimal>) -> Markup {
    match limit {
        Some(l) if l > Decimal::ZERO => {
            let f = (used / l).to_f64().unwrap_or(0.0).clamp(0.0, 1.0);
            html! {
                span class={"bar" @if f > 0.9 { " hot" }} title={(usd(used)) " of " (usd(l))} {
                    i style={"width:" (format!("{:.1}", f * 100.0)) "%"} {}
                }
                " " span.muted { (usd(used)) " / " (usd(l)) }
            }
        }
        _ => html! { (usd(used)) },
    }
}

fn status(s: &str) -> Markup {
    html! { span class={"st " (s)} { (s) } }
}

/// A caller for a page: without a valid session, the browser goes to the login form.
pub(crate) struct PageCaller(pub(crate) Caller);

impl FromRequestParts<AppState> for PageCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match Caller::from_request_parts(parts, state).await {
            Ok(c) => Ok(PageCaller(c)),
            Err(e) if e.status == StatusCode::UNAUTHORIZED => {
                Err(Redirect::to("/login").into_response())
            }
            Err(e) => Err(e.into_response()),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct Fragment {
    fragment: Option<u8>,
    msg: Option<String>,
}

fn flash(msg: &Option<String>) -> Markup {
    html! { @if let Some(m) = msg { div.flash role="status" { (m) } } }
}

// ---- login ---------------------------------------------------------------------------------

pub(crate) async fn login_form(Query(q): Query<Fragment>) -> Html<String> {
    Html(html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Log in · Wflo" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                main style="max-width:460px" {
                    h1 { "Wflo" }
                    (flash(&q.msg))
                    div.card {
                        form method="post" action="/login" {
                            p { label for="token" { "API token" } }
                            p { input #token type="password" name="token" autocomplete="off" required placeholder="wflo_…" style="width:100%"; }
                            p { button.ok type="submit" { "Log in" } }
                        }
                        p.muted { "Ask an admin for a token: " code { "wflo tokens create --name you --role approver" } }
                    }
                }
            }
        }
    }.into_string())
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    token: String,
}

pub(crate) async fn login(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(addr): axum::extract::ConnectInfo<std::net::SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Result<Response, ApiError> {
    let ip = addr.ip();
    state.throttle.check(ip)?;
    let Some(caller) = auth::authenticate(&state, form.token.trim()).await? else {
        state.throttle.failed(ip);
        return Ok((
            StatusCode::UNAUTHORIZED,
            login_form(Query(Fragment {
                fragment: None,
                msg: Some("That token is not valid or was revoked.".into()),
            }))
            .await,
        )
            .into_response());
    };
    state.throttle.succeeded(ip);
    let expires = Utc::now().timestamp() + state.config.session_ttl.as_secs() as i64;
    let value = auth::session_value(form.token.trim(), expires);
    let secure = if state.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        state.config.session_ttl.as_secs()
    );
    tracing::info!(actor = %caller.name, "logged in");
    let mut resp = Redirect::to("/ui/runs").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|_| ApiError::internal())?,
    );
    Ok(resp)
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    csrf: Option<String>,
}

pub(crate) async fn logout(
    PageCaller(caller): PageCaller,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ApiError> {
    caller.check_csrf(form.csrf.as_deref())?;
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("wflo_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(resp)
}

pub(crate) async fn root() -> Redirect {
    Redirect::to("/ui/runs")
}

// ---- runs ----------------------------------------------------------------------------------

pub(crate) async fn runs(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Query(q): Query<Fragment>,
) -> Result<Response, ApiError> {
    let rows = state
        .wflo
        .db()
        .executions()
        .page(&ExecutionFilter::all(100))
        .await?;
    let live = html! {
        div.scroll {
            table {
                thead { tr { th { "Status" } th { "Workflow" } th { "Cost / budget" } th.hide-sm { "Started" } th { "Duration" } th.hide-sm { "Execution" } } }
                tbody {
                    @for e in &rows {
                        tr {
                            td { (status(e.status.as_str())) }
                            td { a href={"/ui/runs/" (e.id)} { (e.workflow_name) } }
                            td { (bar(e.cost_usd, e.budget_usd)) }
                            td.hide-sm { (when(e.started_at.or(Some(e.created_at)))) }
                            td { (duration(e.started_at, e.completed_at)) }
                            td.hide-sm.muted { a href={"/ui/runs/" (e.id)} { code { (e.id.to_string()[..8]) } } }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="6" .muted { "No runs yet." } } }
                }
            }
        }
    };
    if q.fragment.is_some() {
        return Ok(Html(live.into_string()).into_response());
    }
    let body = html! {
        h1 { "Runs" }
        (flash(&q.msg))
        div #live { (live) }
        (live_script("/api/v1/events", "/ui/runs?fragment=1"))
    };
    Ok(Html(page("Runs", &caller, "runs", body).into_string()).into_response())
}

fn step_output(kind: &str, output: &serde_json::Value) -> Markup {
    let text = |k: &str| {
        output
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    match kind {
        "llm" => html! {
            pre { (text("text")) }
        },
        "code" => html! {
            @let out = text("stdout");
            @let err = text("stderr");
            div.muted { "exit " (output.get("exit_code").map(|v| v.to_string()).unwrap_or_default()) }
            @if !out.is_empty() { div.muted { "stdout" } pre { (out) } }
            @if !err.is_empty() { div.muted { "stderr" } pre { (err) } }
        },
        _ => html! { pre { (serde_json::to_string_pretty(output).unwrap_or_default()) } },
    }
}

fn approval_form(a: &wflo_core::db::Approval, caller: &Caller, back: &str) -> Markup {
    html! {
        @if caller.role.allows(Role::Approver) {
            form.inline method="post" action={"/ui/approvals/" (a.id)} data-approval=(a.id) {
                input type="hidden" name="csrf" value=(caller.csrf());
                input type="hidden" name="back" value=(back);
                input type="text" name="reason" placeholder="Reason" aria-label="Reason";
                button.ok type="submit" name="decision" value="approve" { "Approve" }
                button.bad type="submit" name="decision" value="reject" { "Reject" }
            }
        } @else {
            p.muted { "Your role (" (caller.role.label()) ") cannot decide approvals." }
        }
    }
}

pub(crate) async fn run(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(id): Path<String>,
    Query(q): Query<Fragment>,
) -> Result<Response, ApiError> {
    let id: ExecutionId = id
        .parse()
        .map_err(|_| ApiError::not_found("no execution has this id"))?;
    let s = state.wflo.execution_summary(id).await?;
    let e = &s.execution;
    let back = format!("/ui/runs/{id}");
    let live = html! {
        div.card {
            p { (status(e.status.as_str())) " " b { (e.workflow_name) } " v" (s.workflow_version) }
            p { "Cost " (bar(e.cost_usd, e.budget_usd)) " · " (e.tokens.total()) " tokens · started " (when(e.started_at)) " · " (duration(e.started_at, e.completed_at)) }
            @if let Some(err) = &e.error { p { "Error: " code { (err) } } }
            @if caller.role.allows(Role::Operator) && !e.status.is_final() {
                form.inline method="post" action={"/ui/runs/" (id) "/cancel"} {
                    input type="hidden" name="csrf" value=(caller.csrf());
                    button.bad type="submit" { "Cancel run" }
                }
            }
        }
        h2 { "Steps" }
        div.timeline {
            @for st in &s.steps {
                div.card {
                    p { (status(st.step.status.as_str())) " " b { (st.step.step_key) } " " span.muted { (st.step.step_type) " · attempt " (st.step.attempt) " · " (st.step.tokens.total()) " tokens · " (usd(st.step.cost_usd)) " · " (duration(st.step.started_at, st.step.completed_at)) } }
                    @if let Some(o) = &st.step.outputs { (step_output(&st.step.step_type, o)) }
                    @if let Some(err) = &st.step.error { pre { (err) } }
                }
            }
            @if s.steps.is_empty() { p.muted { "No step has run yet." } }
        }
        h2 { "Approvals" }
        @for a in &s.approvals {
            div.card {
                p { (status(a.status.as_str())) " " (a.message) " " span.muted { "risk " (a.risk_level.as_str()) } }
                @if let Some(by) = &a.decided_by { p.muted { "by " (by) @if let Some(r) = &a.decision_reason { ": " (r) } } }
                @if a.status == wflo_core::types::ApprovalStatus::Pending { (approval_form(a, &caller, &back)) }
            }
        }
        @if s.approvals.is_empty() { p.muted { "None." } }
        h2 { "Snapshots" }
        div.scroll { table {
            thead { tr { th { "Version" } th { "After step" } th { "Taken" } th { "" } } }
            tbody { @for p in &s.snapshots { tr {
                td { (p.version) } td { (p.step_key.clone().unwrap_or_default()) } td { (when(Some(p.created_at))) }
                td { @if p.superseded_at.is_some() { span.muted { "superseded" } }
                     @else if caller.role.allows(Role::Operator) && e.status.is_terminal() {
                        form.inline method="post" action={"/ui/runs/" (id) "/rollback"} {
                            input type="hidden" name="csrf" value=(caller.csrf());
                            input type="hidden" name="snapshot_version" value=(p.version);
                            input type="text" name="reason" placeholder="Why roll back" required;
                            button type="submit" { "Roll back here" }
                        }
                     } }
            } } }
        } }
        @if !s.rollbacks.is_empty() {
            h2 { "Rollbacks" }
            @for r in &s.rollbacks { div.card { (status(r.status.as_str())) " to v" (s.snapshot_version(r.snapshot_id).unwrap_or(0)) " by " (r.initiated_by) ": " (r.reason) } }
        }
        h2 { "Costs by model" }
        div.scroll { table {
            thead { tr { th { "Model" } th { "Calls" } th { "Tokens in / out" } th { "Cost" } } }
            tbody { @for (m, c) in &s.costs_by_model { tr { td { (m) } td { (c.calls) } td { (c.prompt_tokens) " / " (c.completion_tokens) } td { (usd(c.cost_usd)) } } } }
        } }
    };
    if q.fragment.is_some() {
        return Ok(Html(live.into_string()).into_response());
    }
    let body = html! {
        h1 { "Run " code { (id.to_string()[..8]) } }
        (flash(&q.msg))
        div #live { (live) }
        (live_script(&format!("/api/v1/events?execution={id}"), &format!("/ui/runs/{id}?fragment=1")))
    };
    Ok(Html(page("Run", &caller, "runs", body).into_string()).into_response())
}

/// An operator's form on a run: its CSRF token checked, the role checked, the id read.
fn operation(caller: &Caller, csrf: Option<&str>, id: &str) -> Result<ExecutionId, ApiError> {
    caller.check_csrf(csrf)?;
    caller.require(Role::Operator)?;
    id.parse()
        .map_err(|_| ApiError::not_found("no execution has this id"))
}

/// Back to the run's page, saying what happened.
fn back_to_run(id: ExecutionId, msg: &str) -> Response {
    Redirect::to(&format!("/ui/runs/{id}?msg={}", urlencode(msg))).into_response()
}

#[derive(Deserialize)]
pub(crate) struct RollbackForm {
    csrf: Option<String>,
    snapshot_version: i32,
    reason: String,
}

pub(crate) async fn rollback(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(id): Path<String>,
    Form(form): Form<RollbackForm>,
) -> Result<Response, ApiError> {
    let id = operation(&caller, form.csrf.as_deref(), &id)?;
    let msg = match state
        .wflo
        .engine()
        .rollback(id, form.snapshot_version, &form.reason, &caller.name)
        .await
    {
        Ok(o) => format!(
            "Rolled back to snapshot v{}; resume the run to continue.",
            o.snapshot_version
        ),
        Err(e) => ApiError::from(e).message,
    };
    Ok(back_to_run(id, &msg))
}

pub(crate) async fn cancel(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ApiError> {
    let id = operation(&caller, form.csrf.as_deref(), &id)?;
    let reason = format!("cancelled by {} from the web page", caller.name);
    let msg = match state.wflo.cancel(id, &caller.name, &reason).await {
        Ok(_) => "Cancelled.".to_string(),
        Err(e) => ApiError::from(e).message,
    };
    Ok(back_to_run(id, &msg))
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

// ---- approvals -----------------------------------------------------------------------------

pub(crate) async fn approvals(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Query(q): Query<Fragment>,
) -> Result<Response, ApiError> {
    let db = state.wflo.db();
    let pending = db.approvals().pending().await?;
    let mut items = Vec::new();
    for a in &pending {
        let exec = db.executions().get(a.execution_id).await.ok();
        items.push((a, exec));
    }
    let live = html! {
        @for (a, exec) in &items {
            div.card data-approval=(a.id) {
                p { b { (a.message) } " " span class={"st " (a.risk_level.as_str())} { "risk " (a.risk_level.as_str()) } }
                p.muted {
                    "Requested by "
                    @if let Some(e) = exec { a href={"/ui/runs/" (e.id)} { (e.workflow_name) } " (" code { (e.id.to_string()[..8]) } ")" } @else { "an execution" }
                    @if let Some(step) = &a.step_key { ", step " b { (step) } }
                    " · " (when(Some(a.created_at)))
                    " · deadline " (when(a.timeout_at)) " then " (a.timeout_policy.as_str())
                }
                @if !a.context.is_null() && a.context != serde_json::json!({}) { pre { (serde_json::to_string_pretty(&a.context).unwrap_or_default()) } }
                (approval_form(a, &caller, "/ui/approvals"))
            }
        }
        @if items.is_empty() { p.muted #no-approvals { "Nothing waits for a decision." } }
    };
    if q.fragment.is_some() {
        return Ok(Html(live.into_string()).into_response());
    }
    let body = html! {
        h1 { "Approvals" }
        (flash(&q.msg))
        div #live { (live) }
        (live_script("/api/v1/events", "/ui/approvals?fragment=1"))
    };
    Ok(Html(page("Approvals", &caller, "approvals", body).into_string()).into_response())
}

#[derive(Deserialize)]
pub(crate) struct DecideForm {
    csrf: Option<String>,
    decision: String,
    reason: Option<String>,
    back: Option<String>,
}

pub(crate) async fn decide(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(id): Path<String>,
    Form(form): Form<DecideForm>,
) -> Result<Response, ApiError> {
    caller.check_csrf(form.csrf.as_deref())?;
    caller.require(Role::Approver)?;
    let id: ApprovalId = id
        .parse()
        .map_err(|_| ApiError::not_found("no approval request has this id"))?;
    let verdict = match form.decision.as_str() {
        "approve" => Verdict::Approve,
        "reject" => Verdict::Reject,
        _ => return Err(ApiError::invalid("decision must be approve or reject")),
    };
    let msg = match api::decide_as(&state, &caller, id, verdict, form.reason).await {
        Ok(a) => format!("{} by {}.", a.status.as_str().to_lowercase(), caller.name),
        Err(e) => e.message,
    };
    let back = form
        .back
        .filter(|b| b.starts_with("/ui/") && !b.contains("//"))
        .unwrap_or_else(|| "/ui/approvals".into());
    Ok(Redirect::to(&format!("{back}?msg={}", urlencode(&msg))).into_response())
}

// ---- costs and budgets ---------------------------------------------------------------------

fn chart(rows: &[(String, Decimal)]) -> Markup {
    let max = rows.iter().map(|(_, v)| *v).max().unwrap_or(Decimal::ZERO);
    let h = 22 * rows.len().max(1) + 4;
    html! {
        svg viewBox={"0 0 640 " (h)} width="100%" role="img" preserveAspectRatio="xMinYMin meet" {
            @for (i, (k, v)) in rows.iter().enumerate() {
                @let w = if max > Decimal::ZERO { (v / max).to_f64().unwrap_or(0.0) * 380.0 } else { 0.0 };
                @let y = 22 * i + 2;
                text x="0" y=(y + 14) { (k.chars().take(28).collect::<String>()) }
                rect x="200" y=(y + 3) width=(format!("{w:.1}")) height="14" rx="3" fill="#3451b2" {}
                text x=(format!("{:.1}", 206.0 + w)) y=(y + 14) { (usd(*v)) }
            }
        }
    }
}

pub(crate) async fn costs(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
) -> Result<Response, ApiError> {
    let mut sections = Vec::new();
    for (by, title) in [
        (GroupBy::Model, "By model"),
        (GroupBy::Workflow, "By workflow"),
        (GroupBy::Day, "By day (last 30 days, UTC)"),
    ] {
        let report = api::cost_report(&state, by, None).await?;
        let v = serde_json::to_value(&report).map_err(|_| ApiError::internal())?;
        let rows: Vec<(String, Decimal)> = v["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["key"].as_str().unwrap_or("").to_string(),
                    r["cost_usd"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_default(),
                )
            })
            .collect();
        let total: Decimal = v["total"]["cost_usd"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_default();
        sections.push((title, rows, total));
    }
    let body = html! {
        h1 { "Costs" }
        @for (title, rows, total) in &sections {
            h2 { (title) " " span.muted { "total " (usd(*total)) } }
            div.card { @if rows.is_empty() { p.muted { "No LLM calls recorded." } } @else { (chart(rows)) } }
        }
    };
    Ok(Html(page("Costs", &caller, "costs", body).into_string()).into_response())
}

pub(crate) async fn budgets(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
) -> Result<Response, ApiError> {
    let rows = state.wflo.db().budgets().list(None, 200).await?;
    let body = html! {
        h1 { "Budgets" }
        div.scroll { table {
            thead { tr { th { "Scope" } th { "Period" } th { "Used / limit" } th { "Reserved" } th.hide-sm { "Updated" } } }
            tbody {
                @for b in &rows {
                    @let v = BudgetView::of(b);
                    tr {
                        td { (b.key.scope) } td { (if b.key.period.is_empty() { "total" } else { b.key.period.as_str() }) }
                        td { (bar(b.spent_usd + b.reserved_usd, Some(b.limit_usd))) " " span.muted { (format!("{:.0}%", serde_json::to_value(&v).ok().and_then(|j| j["utilisation"].as_f64()).unwrap_or(0.0) * 100.0)) } }
                        td { (usd(b.reserved_usd)) }
                        td.hide-sm { (when(Some(b.updated_at))) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="5" .muted { "No budgets yet." } } }
            }
        } }
    };
    Ok(Html(page("Budgets", &caller, "budgets", body).into_string()).into_response())
}
