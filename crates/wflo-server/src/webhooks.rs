//! Webhooks: the dispatcher that turns outbox events into signed HTTP POSTs, the signature,
//! and the bodies (JSON, or a Slack-compatible message).
//!
//! The dispatcher runs in every server instance. Each tick it
//! 1. fans new outbox events out into deliveries for the enabled webhooks that subscribe to
//!    them (idempotent: one delivery per webhook and event, whoever fans out), moving a cursor
//!    stored in the database; positions skipped by transactions still in flight are waited for
//!    (see [`GAP_PATIENCE`]);
//! 2. leases the deliveries that are due (a conditional update: never two instances on one
//!    delivery at once) and POSTs them: 2xx is delivered; any other answer, a timeout or a
//!    connection error is tried again after a delay that doubles from the first one up to a
//!    cap, until the last attempt fails and the delivery is marked failed with its last error.
//!
//! Delivery is at least once: a dispatcher that dies after a receiver accepted a delivery, but
//! before recording it, leaves it to be sent again when its lease ends. Receivers dedupe on the
//! `Idempotency-Key` header (the event's id, the same on every attempt).

use crate::ServerConfig;
use crate::follow::Follower;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::{Rng, RngCore};
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;
use wflo_core::Wflo;
use wflo_core::db::{
    Approval, ClaimedDelivery, Db, DeliveryOutcome, Executor, WebhookEvent, WebhookFormat,
};
use wflo_core::types::{EventEnvelope, EventPayload};

/// The header carrying a body's signature: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "Wflo-Signature";
/// The header carrying the event's id: the same on every attempt, so receivers can dedupe.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// The header naming the kind of event (`approval.requested`, ...).
pub const EVENT_HEADER: &str = "Wflo-Event";
/// The prefix of generated webhook secrets.
pub const WEBHOOK_SECRET_PREFIX: &str = "whsec_";

/// How long a gap in the outbox's positions is waited for before the cursor moves past it: a
/// transaction that took a position may commit after a later one (PostgreSQL), or roll back
/// and leave the gap forever.
pub(crate) const GAP_PATIENCE: Duration = Duration::from_secs(60);
/// Deliveries leased per round.
const BATCH: u64 = 32;
/// Deliveries attempted at once.
const PARALLEL: usize = 8;
/// Outbox events read per tick at most (the rest wait for the next tick).
const MAX_EVENTS_PER_TICK: usize = 5_000;
/// How much of a refusing receiver's answer is kept as the delivery's error.
const ERROR_BODY_CHARS: usize = 300;

/// A new webhook secret: `whsec_` and 64 hex digits (256 random bits). It is stored as it is
/// (signing needs it) and shown once, when the webhook is created.
pub fn new_webhook_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{WEBHOOK_SECRET_PREFIX}{}", hex::encode(bytes))
}

fn mac_hex(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// The [`SIGNATURE_HEADER`] value of `body` sent at `timestamp` (unix seconds): `t=<timestamp>,
/// v1=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed with the secret>`.
pub fn sign_webhook(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", mac_hex(secret, timestamp, body))
}

/// Whether `header` (a [`SIGNATURE_HEADER`] value) signs `body` with `secret`, at a time no
/// further than `tolerance` from `now` (unix seconds) — older ones may be replays. Any of
/// several `v1=` values may match (a receiver rotating secrets checks each of its secrets).
pub fn verify_webhook_signature(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> bool {
    use subtle::ConstantTimeEq;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", s)) => signatures.push(s.to_string()),
            _ => {}
        }
    }
    let Some(t) = timestamp else {
        return false;
    };
    if now.abs_diff(t) > tolerance.as_secs() {
        return false;
    }
    let want = mac_hex(secret, t, body);
    signatures
        .iter()
        .any(|s| bool::from(want.as_bytes().ct_eq(s.as_bytes())))
}

/// The delay before attempt `failed + 1`, after `failed` failed attempts: `first`, doubling
/// with each failure, never more than `cap`.
pub(crate) fn backoff(failed: u32, first: Duration, cap: Duration) -> Duration {
    let doublings = failed.saturating_sub(1).min(32);
    first
        .checked_mul(1u32 << doublings.min(31))
        .unwrap_or(cap)
        .min(cap)
}

/// What the dispatcher needs from the server's configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) poll: Duration,
    pub(crate) timeout: Duration,
    pub(crate) first_retry: Duration,
    pub(crate) max_retry: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) public_url: Option<String>,
}

impl Settings {
    pub(crate) fn of(c: &ServerConfig) -> Option<Settings> {
        Some(Settings {
            poll: c.webhook_poll?,
            timeout: c.webhook_timeout,
            first_retry: c.webhook_first_retry,
            max_retry: c.webhook_max_retry,
            max_attempts: c.webhook_max_attempts,
            public_url: c.public_url.clone(),
        })
    }

    /// How long a delivery is leased: its attempt's timeout and then some.
    fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(30)
    }
}

// ---- bodies --------------------------------------------------------------------------------

/// A one-line account of an event, and where to see it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Summary {
    pub(crate) text: String,
    pub(crate) link: Option<String>,
}

fn lower(s: &str) -> String {
    s.to_lowercase()
}

/// The summary of `env` (of kind `kind`), with its approval request when it is about one, and
/// links under `base` (the server's public URL) when there is one.
pub(crate) fn summary(
    kind: WebhookEvent,
    env: &EventEnvelope,
    approval: Option<&Approval>,
    base: Option<&str>,
) -> Summary {
    let workflow = env.workflow_id.as_deref().unwrap_or("a workflow");
    let link = |path: String| base.map(|b| format!("{}{path}", b.trim_end_matches('/')));
    let run_link = || match env.execution_id {
        Some(id) => link(format!("/ui/runs/{id}")),
        None => link("/ui/runs".into()),
    };
    let payload = env.typed().ok();
    match (kind, payload) {
        (WebhookEvent::ApprovalRequested, p) => {
            let p = match p {
                Some(EventPayload::ApprovalRequested(p)) => p,
                _ => Default::default(),
            };
            let risk = p
                .risk_level
                .or_else(|| approval.map(|a| a.risk_level.to_string()))
                .unwrap_or_else(|| "unknown".into());
            let what = match (approval, &p.step_id) {
                (Some(a), _) => a.message.clone(),
                (None, Some(step)) => format!("step {step} waits for a decision"),
                (None, None) => "a step waits for a decision".into(),
            };
            Summary {
                text: format!("approval requested for {workflow}: {what} (risk {risk})"),
                link: link("/ui/approvals".into()),
            }
        }
        (WebhookEvent::ApprovalDecided, p) => {
            let p = match p {
                Some(EventPayload::ApprovalDecided(p)) => p,
                _ => Default::default(),
            };
            let decision = p.decision.as_deref().map_or("decided".into(), lower);
            let by = p.approver.map(|a| format!(" by {a}")).unwrap_or_default();
            let what = approval
                .map(|a| format!(": {}", a.message))
                .unwrap_or_default();
            let why = p
                .reason
                .filter(|r| !r.trim().is_empty())
                .map(|r| format!(" (reason: {r})"))
                .unwrap_or_default();
            Summary {
                text: format!("approval for {workflow} {decision}{by}{what}{why}"),
                link: run_link(),
            }
        }
        (WebhookEvent::ExecutionFinished, p) => {
            let p = match p {
                Some(EventPayload::WorkflowStatus(p)) => p,
                _ => Default::default(),
            };
            let status = lower(&p.status);
            let cost = p
                .total_cost_usd
                .map(|c| format!(" (cost ${c})"))
                .unwrap_or_default();
            let error = p
                .error
                .filter(|e| !e.trim().is_empty())
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            Summary {
                text: format!("run of {workflow} {status}{cost}{error}"),
                link: run_link(),
            }
        }
        (WebhookEvent::BudgetAlert, p) => {
            let p = match p {
                Some(EventPayload::BudgetAlert(p)) => p,
                _ => Default::default(),
            };
            let scope = p.scope.unwrap_or_else(|| "a budget".into());
            let pct = p
                .percentage
                .map(|x| format!(" at {}%", x.round_dp(1).normalize()))
                .unwrap_or_default();
            let of = p
                .budget_limit_usd
                .map(|l| format!(" of ${l}"))
                .unwrap_or_default();
            Summary {
                text: format!(
                    "budget alert: {scope}{pct} (${} spent{of})",
                    p.total_cost_usd
                ),
                link: link("/ui/budgets".into()),
            }
        }
        (_, _) => Summary {
            text: format!("{} in {workflow}", env.event_type),
            link: run_link(),
        },
    }
}

/// Slack's control characters in a message's text.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Slack-compatible message: `{"text": "<summary> <link>"}`.
pub(crate) fn slack_body(s: &Summary) -> Value {
    let mut text = slack_escape(&s.text);
    if let Some(link) = &s.link {
        text.push_str(&format!(" <{link}>"));
    }
    json!({ "text": text })
}

/// The JSON body: the kind, a summary and link, the approval when the event is about one, and
/// the event itself.
pub(crate) fn json_body(
    kind: WebhookEvent,
    env: &EventEnvelope,
    approval: Option<&Approval>,
    s: &Summary,
) -> Value {
    let mut body = json!({
        "type": kind.as_str(),
        "event_id": env.event_id,
        "occurred_at": env.occurred_at,
        "workflow": env.workflow_id,
        "execution_id": env.execution_id,
        "summary": s.text,
        "link": s.link,
        "event": env,
    });
    if let Some(a) = approval {
        body["approval"] = json!({
            "id": a.id,
            "step": a.step_key,
            "message": a.message,
            "risk": a.risk_level.as_str(),
            "context": a.context,
        });
    }
    body
}

// ---- the dispatcher ------------------------------------------------------------------------

/// Starts the dispatcher of `wflo`'s webhooks, when the configuration asks for one.
pub(crate) fn start(wflo: &Wflo, config: &ServerConfig) -> Option<tokio::task::JoinHandle<()>> {
    let settings = Settings::of(config)?;
    let http = match reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("wflo-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot make the webhooks' HTTP client; webhooks are not sent");
            return None;
        }
    };
    let d = Dispatcher {
        db: wflo.db().clone(),
        http,
        settings,
        follower: Follower::from(0, GAP_PATIENCE),
        saved: 0,
    };
    Some(tokio::spawn(d.run()))
}

struct Dispatcher {
    db: Db,
    http: reqwest::Client,
    settings: Settings,
    /// Where the outbox has been read to.
    follower: Follower,
    /// The cursor as last stored.
    saved: i64,
}

impl Dispatcher {
    async fn run(mut self) {
        loop {
            match self.db.webhooks().cursor().await {
                Ok(c) => {
                    self.follower = Follower::from(c, GAP_PATIENCE);
                    self.saved = c;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the webhook cursor; trying again");
                    tokio::time::sleep(self.settings.poll.max(Duration::from_secs(1))).await;
                }
            }
        }
        let mut tick = tokio::time::interval(self.settings.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.fan_out().await {
                tracing::warn!(error = %e, "fanning out events to webhooks failed; trying again");
            }
            if let Err(e) = self.deliver_due().await {
                tracing::warn!(error = %e, "sending webhooks failed; trying again");
            }
        }
    }

    /// Fans the events written since the last tick (and those of gaps that filled) out into
    /// deliveries, then stores how far that is done.
    async fn fan_out(&mut self) -> Result<(), wflo_core::db::Error> {
        // On an error the follower stays where it was: the same events are read next tick.
        let mut follower = self.follower.clone();
        let found = follower.next(&self.db, 500, MAX_EVENTS_PER_TICK).await?;
        if !found.is_empty() {
            // The webhooks are read after the events: one created before an event was written
            // is in this list.
            let hooks = self.db.webhooks().enabled().await?;
            let added = self.db.webhooks().fan_out(&found, &hooks).await?;
            if added > 0 {
                tracing::debug!(deliveries = added, "events fanned out to webhooks");
            }
        }
        self.follower = follower;
        let done = self.follower.settled().max(self.saved);
        if done > self.saved {
            self.db.webhooks().advance_cursor(done).await?;
            self.saved = done;
        }
        Ok(())
    }

    /// Leases the due deliveries and attempts them, a round at a time, until fewer than a full
    /// round are due.
    async fn deliver_due(&self) -> Result<(), wflo_core::db::Error> {
        use futures::StreamExt;
        loop {
            let claims = self
                .db
                .webhooks()
                .claim_due(BATCH, self.settings.lease())
                .await?;
            let n = claims.len() as u64;
            futures::stream::iter(claims)
                .for_each_concurrent(PARALLEL, |c| self.attempt(c))
                .await;
            if n < BATCH {
                return Ok(());
            }
        }
    }

    /// The body of a claimed delivery, or why it cannot be made.
    async fn body(&self, c: &ClaimedDelivery) -> Result<Vec<u8>, String> {
        let Some(event) = &c.event else {
            return Err("the event is no longer in the outbox".into());
        };
        let env: EventEnvelope = serde_json::from_value(event.payload.clone())
            .map_err(|e| format!("the event in the outbox is not an event envelope: {e}"))?;
        let kind = c.delivery.event_type;
        let approval = match env.typed() {
            Ok(EventPayload::ApprovalRequested(p) | EventPayload::ApprovalDecided(p)) => {
                match p.approval_id {
                    Some(id) => self.db.approvals().get(id).await.ok(),
                    None => None,
                }
            }
            _ => None,
        };
        let s = summary(
            kind,
            &env,
            approval.as_ref(),
            self.settings.public_url.as_deref(),
        );
        let body = match c.webhook.format {
            WebhookFormat::Slack => slack_body(&s),
            _ => json_body(kind, &env, approval.as_ref(), &s),
        };
        serde_json::to_vec(&body).map_err(|e| format!("cannot encode the body: {e}"))
    }

    /// One attempt of one delivery, recorded.
    async fn attempt(&self, c: ClaimedDelivery) {
        let outcome = match self.body(&c).await {
            Err(why) => DeliveryOutcome::GiveUp {
                http_status: None,
                error: why,
            },
            Ok(body) => match self.post(&c, body).await {
                Ok(status) => DeliveryOutcome::Delivered {
                    http_status: status,
                },
                Err((status, error)) => self.after_failure(&c, status, error),
            },
        };
        match &outcome {
            DeliveryOutcome::Delivered { .. } => tracing::debug!(
                webhook = %c.webhook.name, event = %c.delivery.event_id, "webhook delivered"
            ),
            DeliveryOutcome::GiveUp { error, .. } => tracing::warn!(
                webhook = %c.webhook.name, event = %c.delivery.event_id, %error,
                "webhook delivery failed for good"
            ),
            _ => tracing::debug!(
                webhook = %c.webhook.name, event = %c.delivery.event_id, "webhook delivery failed; will retry"
            ),
        }
        match self.db.webhooks().finish(&c, outcome).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                webhook = %c.webhook.name,
                "a webhook delivery outlived its lease; another instance may send it again"
            ),
            Err(e) => tracing::warn!(
                error = %e, webhook = %c.webhook.name,
                "cannot record a webhook delivery attempt; it is sent again when its lease ends"
            ),
        }
    }

    fn after_failure(
        &self,
        c: &ClaimedDelivery,
        http_status: Option<u16>,
        error: String,
    ) -> DeliveryOutcome {
        let failed = c.delivery.attempts + 1;
        if failed >= self.settings.max_attempts {
            return DeliveryOutcome::GiveUp {
                http_status,
                error: format!("{error} (attempt {failed} of {failed}; given up)"),
            };
        }
        let delay = backoff(failed, self.settings.first_retry, self.settings.max_retry);
        // Up to a quarter more, so many deliveries failing at once do not return at once.
        let spread = delay.as_millis() as u64 / 4;
        let jitter = Duration::from_millis(rand::rng().random_range(0..=spread));
        let at: DateTime<Utc> =
            Utc::now() + chrono::Duration::from_std(delay + jitter).unwrap_or_default();
        DeliveryOutcome::Retry {
            http_status,
            error,
            at,
        }
    }

    /// POSTs a body; the receiver's 2xx status, or its status (none: no answer) and why it
    /// failed.
    async fn post(&self, c: &ClaimedDelivery, body: Vec<u8>) -> Result<u16, (Option<u16>, String)> {
        let signature = sign_webhook(&c.webhook.secret, Utc::now().timestamp(), &body);
        let sent = self
            .http
            .post(&c.webhook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_HEADER, c.delivery.event_id.to_string())
            .header(EVENT_HEADER, c.delivery.event_type.as_str())
            .header("Wflo-Delivery", c.delivery.id.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return Err((None, self.describe(&e))),
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(status.as_u16());
        }
        let text = snippet(resp).await;
        Err((
            Some(status.as_u16()),
            if text.is_empty() {
                format!("the receiver answered {status}")
            } else {
                format!("the receiver answered {status}: {text}")
            },
        ))
    }

    fn describe(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            return format!(
                "no answer within {} ms; check that the receiver is up and answers quickly",
                self.settings.timeout.as_millis()
            );
        }
        let mut text = if e.is_connect() {
            "cannot connect to the receiver".to_string()
        } else {
            "the request failed".to_string()
        };
        let mut source = std::error::Error::source(e);
        let mut last = String::new();
        while let Some(s) = source {
            let m = s.to_string();
            if m != last {
                text.push_str(": ");
                text.push_str(&m);
                last = m;
            }
            source = s.source();
        }
        text.to_lowercase()
    }
}

/// The start of a response's body, as text on one line.
async fn snippet(mut resp: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ERROR_BODY_CHARS * 4 {
        match resp.chunk().await {
            Ok(Some(c)) => bytes.extend_from_slice(&c),
            _ => break,
        }
    }
    String::from_utf8_lossy(&bytes)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(ERROR_BODY_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use wflo_core::db::{RiskLevel, TimeoutPolicy};
    use wflo_core::types::{
        ApprovalId, ApprovalPayload, ApprovalStatus, CostPayload, ExecutionId, RunLabels,
        WorkflowStatusPayload,
    };

    #[test]
    fn signatures_are_hmac_sha256_of_the_timestamp_and_body() {
        // Computed independently: printf '1700000000.{"a":1}' |
        //   openssl dgst -sha256 -hmac whsec_test_secret_0123456789
        let header = sign_webhook("whsec_test_secret_0123456789", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            header,
            "t=1700000000,v1=10fb0e5eb2c2204d471e7d252958fb5af663638b8d24fc8dc03090a74bcc366c"
        );
    }

    #[test]
    fn a_signature_checks_out_only_with_its_secret_body_and_a_recent_time() {
        let secret = new_webhook_secret();
        assert!(secret.starts_with(WEBHOOK_SECRET_PREFIX) && secret.len() == 6 + 64);
        assert_ne!(secret, new_webhook_secret());
        let body = br#"{"type":"approval.requested"}"#;
        let t = 1_800_000_000;
        let header = sign_webhook(&secret, t, body);
        let five_minutes = Duration::from_secs(300);
        assert!(verify_webhook_signature(
            &secret,
            &header,
            body,
            t + 10,
            five_minutes
        ));
        assert!(
            !verify_webhook_signature(
                &secret,
                &header,
                br#"{"type":"approval.decided"}"#,
                t,
                five_minutes
            ),
            "a changed body"
        );
        assert!(
            !verify_webhook_signature(&new_webhook_secret(), &header, body, t, five_minutes),
            "another secret"
        );
        assert!(
            !verify_webhook_signature(&secret, &header, body, t + 301, five_minutes),
            "too old: a replay"
        );
        let moved = header.replace(&format!("t={t}"), &format!("t={}", t + 100));
        assert!(
            !verify_webhook_signature(&secret, &moved, body, t + 100, five_minutes),
            "the timestamp is signed too"
        );
        let rotated = format!("{header},v1=00ff");
        assert!(verify_webhook_signature(
            &secret,
            &rotated,
            body,
            t,
            five_minutes
        ));
        assert!(!verify_webhook_signature(
            &secret,
            "garbage",
            body,
            t,
            five_minutes
        ));
    }

    #[test]
    fn the_backoff_doubles_from_the_first_delay_up_to_the_cap() {
        let s = Duration::from_secs;
        let schedule: Vec<Duration> = (1..=9).map(|n| backoff(n, s(1), s(60))).collect();
        assert_eq!(
            schedule,
            [s(1), s(2), s(4), s(8), s(16), s(32), s(60), s(60), s(60)]
        );
        assert_eq!(backoff(0, s(1), s(60)), s(1));
        assert_eq!(backoff(u32::MAX, s(1), s(3600)), s(3600), "no overflow");
    }

    fn approval(message: &str) -> Approval {
        Approval {
            id: ApprovalId::new(),
            execution_id: ExecutionId::new(),
            step_key: Some("gate".into()),
            status: ApprovalStatus::Pending,
            message: message.into(),
            context: json!({}),
            risk_level: RiskLevel::High,
            action_fingerprint: "sha256:x".into(),
            approver_group: None,
            timeout_at: None,
            timeout_policy: TimeoutPolicy::Reject,
            escalate_to: None,
            decided_by: None,
            decision_reason: None,
            decided_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn envelope(p: EventPayload, exec: ExecutionId) -> EventEnvelope {
        EventEnvelope::new("test", p)
            .with_execution(exec)
            .with_labels(&RunLabels::workflow("release"))
    }

    #[test]
    fn slack_messages_read_as_a_sentence_with_a_link() {
        let a = approval("Ship to production?");
        let env = envelope(
            EventPayload::ApprovalRequested(ApprovalPayload {
                approval_id: Some(a.id),
                step_id: Some("gate".into()),
                risk_level: Some("HIGH".into()),
                ..Default::default()
            }),
            a.execution_id,
        );
        let s = summary(
            WebhookEvent::ApprovalRequested,
            &env,
            Some(&a),
            Some("https://wflo.example/"),
        );
        assert_eq!(
            slack_body(&s),
            json!({"text": "approval requested for release: Ship to production? (risk HIGH) <https://wflo.example/ui/approvals>"})
        );
        let no_link = summary(WebhookEvent::ApprovalRequested, &env, Some(&a), None);
        assert_eq!(
            slack_body(&no_link)["text"],
            json!("approval requested for release: Ship to production? (risk HIGH)")
        );

        let decided = envelope(
            EventPayload::ApprovalDecided(ApprovalPayload {
                approval_id: Some(a.id),
                decision: Some("REJECTED".into()),
                approver: Some("alice".into()),
                reason: Some("not on a friday".into()),
                ..Default::default()
            }),
            a.execution_id,
        );
        let s = summary(
            WebhookEvent::ApprovalDecided,
            &decided,
            Some(&a),
            Some("http://h"),
        );
        assert_eq!(
            s.text,
            "approval for release rejected by alice: Ship to production? (reason: not on a friday)"
        );
        assert_eq!(s.link, Some(format!("http://h/ui/runs/{}", a.execution_id)));

        let failed = envelope(
            EventPayload::WorkflowStatus(WorkflowStatusPayload {
                status: "FAILED".into(),
                error: Some("step deploy failed".into()),
                total_cost_usd: Some(Decimal::new(125, 3)),
                ..Default::default()
            }),
            a.execution_id,
        );
        assert_eq!(
            summary(WebhookEvent::ExecutionFinished, &failed, None, None).text,
            "run of release failed (cost $0.125): step deploy failed"
        );

        let alert = envelope(
            EventPayload::BudgetAlert(CostPayload {
                scope: Some("workflow:release".into()),
                percentage: Some(Decimal::new(750, 1)),
                total_cost_usd: Decimal::new(75, 2),
                budget_limit_usd: Some(Decimal::ONE),
                ..Default::default()
            }),
            a.execution_id,
        );
        let s = summary(WebhookEvent::BudgetAlert, &alert, None, Some("https://w"));
        assert_eq!(
            s.text,
            "budget alert: workflow:release at 75% ($0.75 spent of $1)"
        );
        assert_eq!(s.link.as_deref(), Some("https://w/ui/budgets"));
    }

    #[test]
    fn slack_control_characters_in_a_message_are_escaped() {
        let s = Summary {
            text: "approval requested for x: drop <table> & <!channel>".into(),
            link: Some("https://w/ui/approvals".into()),
        };
        assert_eq!(
            slack_body(&s)["text"],
            json!(
                "approval requested for x: drop &lt;table&gt; &amp; &lt;!channel&gt; <https://w/ui/approvals>"
            )
        );
    }

    #[test]
    fn the_json_body_carries_the_kind_the_summary_and_the_event() {
        let a = approval("Ship?");
        let env = envelope(
            EventPayload::ApprovalRequested(ApprovalPayload {
                approval_id: Some(a.id),
                ..Default::default()
            }),
            a.execution_id,
        );
        let s = summary(WebhookEvent::ApprovalRequested, &env, Some(&a), None);
        let body = json_body(WebhookEvent::ApprovalRequested, &env, Some(&a), &s);
        assert_eq!(body["type"], json!("approval.requested"));
        assert_eq!(body["event_id"], json!(env.event_id));
        assert_eq!(body["workflow"], json!("release"));
        assert_eq!(body["approval"]["message"], json!("Ship?"));
        assert_eq!(body["approval"]["risk"], json!("HIGH"));
        assert_eq!(body["event"]["event_type"], json!("approval.requested"));
        assert_eq!(body["link"], Value::Null);
    }
}
