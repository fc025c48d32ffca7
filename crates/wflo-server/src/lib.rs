//! Wflo's HTTP surface, served by `wflo serve`: a versioned REST API (`/api/v1`, documented by
//! an OpenAPI 3.1 document generated from its types), live events as Server-Sent Events, a
//! web page (runs, one run, the approvals inbox, costs, budgets), and access control by API
//! tokens with roles.
//!
//! *Inner crate of Wflo: its API may change in any release. Use it through `wflo-core`, the one
//! public, semver'd facade.* Run it with `wflo serve`, or embed it through [`Server`].
//!
//! Invariants:
//! * Only this crate knows axum; handlers are thin wrappers over `wflo-core`.
//! * Stateless over the database: several instances behind a load balancer serve the same
//!   data. A run started here executes on this instance's in-process engine (under the
//!   execution's lease) or on Temporal; an instance that takes over from a dead one resumes
//!   the runs whose lease expired while held by a `serve@` driver.
//! * Every endpoint but `/healthz` needs a token whose role allows it; tokens are stored only
//!   as hashes; every decision and operation records the token's name as its actor.
//!
//! # Webhooks
//!
//! Admins configure webhooks (`POST /api/v1/webhooks` or `wflo webhooks add`) for the events
//! someone should hear about: `approval.requested` (a run waits for a decision),
//! `approval.decided`, `execution.finished` (a run completed, failed or was cancelled) and
//! `cost.budget_alert` (a budget crossed a threshold). Every server instance runs a dispatcher
//! that reads the outbox, so every such event committed with its state change is sent, at
//! least once, with retries (1 s doubling up to an hour between attempts, 15 attempts, all
//! configurable in [`ServerConfig`]) until the receiver answers 2xx; several instances share the
//! work without sending one delivery twice at once. `GET /api/v1/webhooks/{name}/deliveries`
//! shows each delivery's status, attempts and the receiver's last answer.
//!
//! Each POST carries:
//! * `Idempotency-Key`: the event's id, the same on every attempt — dedupe on it;
//! * `Wflo-Event`: the kind of event; `Wflo-Delivery`: the delivery's id;
//! * `Wflo-Signature: t=<unix seconds>,v1=<hex>`: the HMAC-SHA256 of `<t>.<body>` keyed with
//!   the webhook's secret. Receivers recompute it over the raw body, compare in constant time,
//!   and refuse a `t` more than a few minutes from their clock (a replay).
//!
//! The body is JSON: `type`, `event_id`, `occurred_at`, `workflow`, `execution_id`, a one-line
//! `summary`, a `link` to the page (with [`ServerConfigBuilder::public_url`]), the `approval`
//! it is about (message, risk, context) and the `event` envelope itself. With the `slack`
//! format it is a Slack-compatible message instead: `{"text": "approval requested for release:
//! Ship to production? (risk HIGH) <https://wflo.example.com/ui/approvals>"}`.
//!
//! The secret is stored in the database as it is (signing needs it; only a hash would not do),
//! so the database is as sensitive as the secrets. A receiver written in Rust can check a body
//! with [`verify_webhook_signature`]:
//!
//! ```
//! use std::time::Duration;
//! use wflo_server::{sign_webhook, verify_webhook_signature};
//!
//! let secret = "whsec_the_webhooks_secret";
//! let body = br#"{"type":"approval.requested"}"#;
//! let now = 1_800_000_000;
//! let header = sign_webhook(secret, now, body); // what the server sends
//! let tolerance = Duration::from_secs(300);
//! assert!(verify_webhook_signature(secret, &header, body, now + 5, tolerance));
//! assert!(!verify_webhook_signature(secret, &header, b"{}", now + 5, tolerance));
//! assert!(!verify_webhook_signature(secret, &header, body, now + 600, tolerance));
//! ```

mod api;
mod auth;
mod client;
mod error;
mod events;
mod follow;
mod openapi;
mod web;
mod webhooks;

pub use api::{
    ApprovalView, BudgetView, CostReport, CostRow, CostView, DecisionRequest, DriverView,
    ExecutionDetail, ExecutionPage, ExecutionView, GroupBy, Links, NewTokenRequest,
    NewTokenResponse, ReasonRequest, RollbackDone, RollbackRequest, RollbackView, SnapshotView,
    StartRequest, StartResponse, StepView, TokenView, TokensView, Verdict,
};
pub use auth::{TOKEN_PREFIX, hash_token, new_token};
pub use client::{Client, ListExecutions};
pub use error::{Error, Result};
pub use webhooks::{
    EVENT_HEADER, IDEMPOTENCY_HEADER, SIGNATURE_HEADER, WEBHOOK_SECRET_PREFIX, new_webhook_secret,
    sign_webhook, verify_webhook_signature,
};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, header};
use axum::routing::{delete, get, post};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::CorsLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use wflo_core::Wflo;

/// The prefix of the lease holder names of `wflo serve` instances: an instance takes over the
/// runs that another one, now dead, was driving.
pub const DRIVER_PREFIX: &str = "serve@";

/// A lease holder name for this server process: `serve@host:pid:random`.
pub fn driver_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!(
        "{DRIVER_PREFIX}{host}:{}:{}",
        std::process::id(),
        &new_token()[TOKEN_PREFIX.len()..TOKEN_PREFIX.len() + 8]
    )
}

/// How the server listens and behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    bind: SocketAddr,
    body_limit: usize,
    cors_origins: Vec<String>,
    secure_cookies: bool,
    session_ttl: Duration,
    event_poll: Duration,
    adopt_every: Option<Duration>,
    public_url: Option<String>,
    webhook_poll: Option<Duration>,
    webhook_timeout: Duration,
    webhook_first_retry: Duration,
    webhook_max_retry: Duration,
    webhook_max_attempts: u32,
}

impl ServerConfig {
    /// A server on `bind`, with: bodies up to 1 MiB, no CORS, sessions of 12 hours, cookies
    /// without `Secure` (set it behind TLS), events polled every 100 ms, abandoned runs looked
    /// for every 10 s, no public URL (messages carry no links), and webhooks looked for every
    /// second, each POST given 10 s, retried after 1 s, 2 s, 4 s, ... up to an hour between
    /// attempts, and given up after 15 attempts (about three hours).
    pub fn builder(bind: SocketAddr) -> ServerConfigBuilder {
        ServerConfigBuilder(ServerConfig {
            bind,
            body_limit: 1 << 20,
            cors_origins: Vec::new(),
            secure_cookies: false,
            session_ttl: Duration::from_secs(12 * 3600),
            event_poll: Duration::from_millis(100),
            adopt_every: Some(Duration::from_secs(10)),
            public_url: None,
            webhook_poll: Some(Duration::from_secs(1)),
            webhook_timeout: Duration::from_secs(10),
            webhook_first_retry: Duration::from_secs(1),
            webhook_max_retry: Duration::from_secs(3600),
            webhook_max_attempts: 15,
        })
    }

    /// Where it listens.
    pub fn bind(&self) -> SocketAddr {
        self.bind
    }
}

/// Builder of [`ServerConfig`].
#[derive(Debug, Clone)]
pub struct ServerConfigBuilder(ServerConfig);

impl ServerConfigBuilder {
    /// The largest request body accepted (larger: 413, nothing stored).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.0.body_limit = bytes;
        self
    }
    /// Origins allowed to call the API from a browser (none: no CORS headers at all).
    pub fn cors_origins(mut self, origins: Vec<String>) -> Self {
        self.0.cors_origins = origins;
        self
    }
    /// Marks the session cookie `Secure` (serve behind TLS).
    pub fn secure_cookies(mut self, yes: bool) -> Self {
        self.0.secure_cookies = yes;
        self
    }
    /// How long a browser session lasts.
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.0.session_ttl = ttl;
        self
    }
    /// How often the outbox is read for live events.
    pub fn event_poll(mut self, every: Duration) -> Self {
        self.0.event_poll = every;
        self
    }
    /// How often to look for runs a dead instance abandoned (none: never take over).
    pub fn adopt_every(mut self, every: Option<Duration>) -> Self {
        self.0.adopt_every = every;
        self
    }
    /// The address users reach this server at (`https://wflo.example.com`): webhook messages
    /// link to its pages.
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.0.public_url = Some(url.into().trim().trim_end_matches('/').to_string());
        self
    }
    /// How often the webhook dispatcher looks for new events and due deliveries (none: this
    /// instance sends no webhooks; another one may).
    pub fn webhook_poll(mut self, every: Option<Duration>) -> Self {
        self.0.webhook_poll = every;
        self
    }
    /// How long a receiver has to answer a webhook POST.
    pub fn webhook_timeout(mut self, timeout: Duration) -> Self {
        self.0.webhook_timeout = timeout;
        self
    }
    /// The delay before a failed webhook delivery's second attempt, doubling with each failure
    /// up to `max` between attempts.
    pub fn webhook_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.0.webhook_first_retry = first;
        self.0.webhook_max_retry = max;
        self
    }
    /// How many attempts a webhook delivery gets before it is marked failed.
    pub fn webhook_max_attempts(mut self, attempts: u32) -> Self {
        self.0.webhook_max_attempts = attempts;
        self
    }
    /// Validates.
    pub fn build(self) -> Result<ServerConfig> {
        let c = &self.0;
        if c.body_limit < 1024 {
            return Err(Error::Config(
                "the body limit must be at least 1024 bytes".into(),
            ));
        }
        if c.session_ttl < Duration::from_secs(60) {
            return Err(Error::Config(
                "a session must last at least a minute".into(),
            ));
        }
        if c.event_poll < Duration::from_millis(10) || c.event_poll > Duration::from_secs(10) {
            return Err(Error::Config(
                "the event poll interval must be 10 ms to 10 s".into(),
            ));
        }
        if let Some(u) = &c.public_url {
            let ok = reqwest::Url::parse(u).is_ok_and(|p| {
                matches!(p.scheme(), "http" | "https")
                    && p.host_str().is_some_and(|h| !h.is_empty())
            });
            if !ok {
                return Err(Error::Config(format!(
                    "the public url `{u}` is not an http or https url; write it as https://host[:port][/path]"
                )));
            }
        }
        if c.webhook_poll
            .is_some_and(|p| p < Duration::from_millis(10) || p > Duration::from_secs(60))
        {
            return Err(Error::Config(
                "the webhook poll interval must be 10 ms to 60 s".into(),
            ));
        }
        if c.webhook_timeout < Duration::from_millis(100)
            || c.webhook_timeout > Duration::from_secs(120)
        {
            return Err(Error::Config(
                "the webhook timeout must be 100 ms to 120 s".into(),
            ));
        }
        if c.webhook_first_retry < Duration::from_millis(10)
            || c.webhook_max_retry < c.webhook_first_retry
            || c.webhook_max_retry > Duration::from_secs(24 * 3600)
        {
            return Err(Error::Config(
                "the webhook backoff must start at 10 ms or more and its maximum be at least its start and at most a day".into(),
            ));
        }
        if !(1..=100).contains(&c.webhook_max_attempts) {
            return Err(Error::Config(
                "a webhook delivery must get 1 to 100 attempts".into(),
            ));
        }
        for o in &c.cors_origins {
            if HeaderValue::from_str(o).is_err()
                || !(o.starts_with("http://") || o.starts_with("https://"))
            {
                return Err(Error::Config(format!(
                    "`{o}` is not an origin; write it as https://host[:port]"
                )));
            }
        }
        Ok(self.0)
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) wflo: Wflo,
    pub(crate) config: ServerConfig,
    pub(crate) hub: events::Hub,
    pub(crate) throttle: auth::Throttle,
}

/// The state every handler shares.
#[derive(Debug, Clone)]
pub(crate) struct AppState(Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// A Wflo server: the API, the events, the page.
#[derive(Debug)]
pub struct Server {
    state: AppState,
}

impl Server {
    /// A server over `wflo` (start its tasks and listen with [`Server::serve`]). Must be called
    /// inside a Tokio runtime: it starts the event poller.
    pub fn new(wflo: Wflo, config: ServerConfig) -> Server {
        let hub = events::Hub::start(wflo.db().clone(), config.event_poll);
        Server {
            state: AppState(Arc::new(Inner {
                wflo,
                config,
                hub,
                throttle: auth::Throttle::default(),
            })),
        }
    }

    /// The OpenAPI 3.1 document of the API, as JSON.
    pub fn openapi_json() -> String {
        openapi::document()
            .to_pretty_json()
            .unwrap_or_else(|_| "{}".into())
    }

    fn router(&self) -> Router {
        let api = Router::new()
            .route("/executions", get(api::list).post(api::start))
            .route("/executions/{id}", get(api::get_one))
            .route("/executions/{id}/cancel", post(api::cancel))
            .route("/executions/{id}/resume", post(api::resume))
            .route("/executions/{id}/rollback", post(api::rollback))
            .route("/approvals", get(api::approvals))
            .route("/approvals/{id}/decision", post(api::decide))
            .route("/costs", get(api::costs))
            .route("/budgets", get(api::budgets))
            .route("/tokens", get(api::tokens).post(api::create_token))
            .route("/tokens/{name}", delete(api::revoke_token))
            .route("/webhooks", get(api::webhooks).post(api::create_webhook))
            .route("/webhooks/{name}", delete(api::remove_webhook))
            .route("/webhooks/{name}/deliveries", get(api::webhook_deliveries))
            .route("/events", get(events::stream))
            .route("/openapi.json", get(openapi_doc))
            .fallback(api_not_found);
        let mut app = Router::new()
            .nest("/api/v1", api)
            .route("/healthz", get(api::healthz))
            .route("/readyz", get(api::readyz))
            .route("/", get(web::root))
            .route("/login", get(web::login_form).post(web::login))
            .route("/logout", post(web::logout))
            .route("/ui/runs", get(web::runs))
            .route("/ui/runs/{id}", get(web::run))
            .route("/ui/runs/{id}/rollback", post(web::rollback))
            .route("/ui/runs/{id}/cancel", post(web::cancel))
            .route("/ui/approvals", get(web::approvals))
            .route("/ui/approvals/{id}", post(web::decide))
            .route("/ui/costs", get(web::costs))
            .route("/ui/budgets", get(web::budgets))
            .layer(DefaultBodyLimit::max(self.state.config.body_limit))
            .layer(SetResponseHeaderLayer::overriding(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::X_FRAME_OPTIONS,
                HeaderValue::from_static("DENY"),
            ))
            .layer(SetResponseHeaderLayer::if_not_present(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            ));
        if !self.state.config.cors_origins.is_empty() {
            let origins: Vec<HeaderValue> = self
                .state
                .config
                .cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect();
            app = app.layer(
                CorsLayer::new()
                    .allow_origin(origins)
                    .allow_methods([Method::GET, Method::POST, Method::DELETE])
                    .allow_headers([
                        header::AUTHORIZATION,
                        header::CONTENT_TYPE,
                        header::HeaderName::from_static("last-event-id"),
                    ]),
            );
        }
        app.with_state(self.state.clone())
    }

    /// Listens on the configured address until `shutdown` completes, then stops accepting and
    /// finishes the requests in flight. Also takes over, now and then, runs a dead instance
    /// abandoned.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let addr = self.state.config.bind;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen {
                addr: addr.to_string(),
                source,
            })?;
        self.serve_on(listener, shutdown).await
    }

    /// [`Server::serve`] on a listener already bound (port 0 in tests). Also sends webhooks
    /// (unless [`ServerConfigBuilder::webhook_poll`] is none).
    pub async fn serve_on(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let adopter = self.state.config.adopt_every.map(|every| {
            let wflo = self.state.wflo.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    match wflo.adopt_abandoned(DRIVER_PREFIX).await {
                        Ok(ids) if !ids.is_empty() => {
                            tracing::info!(
                                count = ids.len(),
                                "took over runs another instance abandoned"
                            )
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "looking for abandoned runs failed"),
                    }
                }
            })
        });
        let dispatcher = webhooks::start(&self.state.wflo, &self.state.config);
        tracing::info!(%addr, "serving");
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| Error::Listen { addr, source });
        if let Some(a) = adopter {
            a.abort();
        }
        if let Some(d) = dispatcher {
            d.abort();
        }
        result
    }
}

async fn openapi_doc(caller: auth::Caller) -> Result<axum::response::Response, error::ApiError> {
    caller.require(wflo_core::types::Role::Viewer)?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Server::openapi_json(),
    )
        .into_response())
}

use axum::response::IntoResponse;

async fn api_not_found() -> error::ApiError {
    error::ApiError::not_found("no such endpoint; see /api/v1/openapi.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> ServerConfigBuilder {
        ServerConfig::builder("127.0.0.1:0".parse().unwrap())
    }

    #[test]
    fn webhook_settings_are_validated() {
        let ms = Duration::from_millis;
        assert!(builder().build().is_ok(), "the defaults");
        let c = builder()
            .public_url("https://wflo.example.com/")
            .webhook_poll(None)
            .build()
            .unwrap();
        assert_eq!(c.public_url.as_deref(), Some("https://wflo.example.com"));
        assert!(webhooks::Settings::of(&c).is_none(), "no dispatcher");
        let refused = |b: ServerConfigBuilder| b.build().unwrap_err().to_string();
        assert!(refused(builder().public_url("wflo.example.com")).contains("public url"));
        assert!(refused(builder().public_url("ftp://wflo.example.com")).contains("public url"));
        assert!(refused(builder().webhook_poll(Some(ms(1)))).contains("poll"));
        assert!(refused(builder().webhook_timeout(ms(10))).contains("timeout"));
        assert!(refused(builder().webhook_backoff(ms(500), ms(100))).contains("backoff"));
        assert!(refused(builder().webhook_backoff(ms(1), ms(100))).contains("backoff"));
        assert!(refused(builder().webhook_max_attempts(0)).contains("attempts"));
        assert!(refused(builder().webhook_max_attempts(101)).contains("attempts"));
    }
}
