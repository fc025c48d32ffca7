use super::{db_err, parse_stored, repository, text_enum};
use crate::entity::{consumer_offset as co, outbox as ob, webhook as wh, webhook_delivery as dl};
use crate::repo::OutboxEvent;
use crate::{Error, Result};
use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use uuid::Uuid;
use wflo_types::{EventEnvelope, EventPayload, ExecutionStatus};

/// The kinds of events a webhook can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum WebhookEvent {
    /// `approval.requested`: a run waits for a human decision.
    ApprovalRequested,
    /// `approval.decided`: someone approved or rejected it.
    ApprovalDecided,
    /// `execution.finished`: a run completed, failed or was cancelled (a `workflow.status`
    /// event with one of those statuses).
    ExecutionFinished,
    /// `cost.budget_alert`: a budget crossed one of its thresholds.
    BudgetAlert,
}

impl WebhookEvent {
    /// Every kind, in declaration order.
    pub const ALL: &'static [WebhookEvent] = &[
        WebhookEvent::ApprovalRequested,
        WebhookEvent::ApprovalDecided,
        WebhookEvent::ExecutionFinished,
        WebhookEvent::BudgetAlert,
    ];

    /// The dotted name (what a subscription and the `Wflo-Event` header say).
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::ApprovalRequested => "approval.requested",
            WebhookEvent::ApprovalDecided => "approval.decided",
            WebhookEvent::ExecutionFinished => "execution.finished",
            WebhookEvent::BudgetAlert => "cost.budget_alert",
        }
    }

    /// The kind an event falls under, if a webhook can subscribe to it.
    pub fn of(event: &EventEnvelope) -> Option<WebhookEvent> {
        match event.typed().ok()? {
            EventPayload::ApprovalRequested(_) => Some(WebhookEvent::ApprovalRequested),
            EventPayload::ApprovalDecided(_) => Some(WebhookEvent::ApprovalDecided),
            EventPayload::BudgetAlert(_) => Some(WebhookEvent::BudgetAlert),
            EventPayload::WorkflowStatus(p)
                if p.status
                    .parse::<ExecutionStatus>()
                    .is_ok_and(ExecutionStatus::is_terminal) =>
            {
                Some(WebhookEvent::ExecutionFinished)
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for WebhookEvent {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        WebhookEvent::ALL
            .iter()
            .copied()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::Invalid {
                entity: "webhook event type",
                detail: format!(
                    "`{s}` is not an event a webhook can subscribe to; use {}",
                    WebhookEvent::ALL
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }
}

text_enum!(
    /// What a webhook's bodies look like.
    WebhookFormat {
        /// The event as JSON: its type, a one-line summary, a link, and the event itself.
        Json = "JSON",
        /// A Slack-compatible message: `{"text": "..."}`.
        Slack = "SLACK",
    }
);

text_enum!(
    /// Where a delivery is.
    DeliveryStatus {
        /// Not delivered yet: due at its next attempt.
        Pending = "PENDING",
        /// The receiver answered 2xx.
        Delivered = "DELIVERED",
        /// Given up after the last attempt failed.
        Failed = "FAILED",
    }
);

/// A webhook: where to send which events, in what format, signed with which secret.
#[derive(Clone, PartialEq)]
pub struct Webhook {
    /// Row id.
    pub id: Uuid,
    /// Its unique name.
    pub name: String,
    /// Where bodies are POSTed (http or https).
    pub url: String,
    /// The events it subscribes to.
    pub events: Vec<WebhookEvent>,
    /// The body format.
    pub format: WebhookFormat,
    /// The HMAC-SHA256 key bodies are signed with. Stored as written: signing needs it.
    pub secret: String,
    /// Whether events are sent to it.
    pub enabled: bool,
    /// Created; it receives the events written from then on.
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("url", &crate::redact(&self.url))
            .field("events", &self.events)
            .field("format", &self.format)
            .field("secret", &"<redacted>")
            .field("enabled", &self.enabled)
            .field("created_at", &self.created_at)
            .finish()
    }
}

impl Webhook {
    /// Whether it wants events of this kind.
    pub fn wants(&self, kind: WebhookEvent) -> bool {
        self.enabled && self.events.contains(&kind)
    }
}

impl TryFrom<wh::Model> for Webhook {
    type Error = Error;
    fn try_from(m: wh::Model) -> Result<Self> {
        let names: Vec<String> =
            serde_json::from_value(m.event_types).map_err(|e| Error::Invalid {
                entity: ENTITY,
                detail: format!("stored event types of `{}`: {e}", m.name),
            })?;
        Ok(Webhook {
            id: m.id,
            events: names
                .iter()
                .map(|n| n.parse())
                .collect::<Result<Vec<_>>>()?,
            name: m.name,
            url: m.url,
            format: parse_stored(&m.format)?,
            secret: m.secret,
            enabled: m.enabled,
            created_at: m.created_at,
        })
    }
}

/// A webhook to create.
#[derive(Clone, PartialEq)]
pub struct NewWebhook {
    /// Its unique name: 1 to 100 letters, digits, `-`, `_` or `.`.
    pub name: String,
    /// Where to POST (http or https).
    pub url: String,
    /// The events it subscribes to (at least one).
    pub events: Vec<WebhookEvent>,
    /// The body format.
    pub format: WebhookFormat,
    /// The signing key: 16 to 200 printable ASCII characters, no spaces.
    pub secret: String,
    /// Whether events are sent to it.
    pub enabled: bool,
}

impl std::fmt::Debug for NewWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewWebhook")
            .field("name", &self.name)
            .field("url", &crate::redact(&self.url))
            .field("events", &self.events)
            .field("format", &self.format)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl NewWebhook {
    /// An enabled webhook sending JSON.
    pub fn new(
        name: impl Into<String>,
        url: impl Into<String>,
        events: Vec<WebhookEvent>,
        secret: impl Into<String>,
    ) -> NewWebhook {
        NewWebhook {
            name: name.into(),
            url: url.into(),
            events,
            format: WebhookFormat::Json,
            secret: secret.into(),
            enabled: true,
        }
    }

    /// With this body format.
    pub fn format(mut self, format: WebhookFormat) -> NewWebhook {
        self.format = format;
        self
    }
}

/// One event to send to one webhook, and how its sending went.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookDelivery {
    /// Row id (the `Wflo-Delivery` header).
    pub id: Uuid,
    /// The webhook.
    pub webhook_id: Uuid,
    /// The event's outbox position.
    pub outbox_id: i64,
    /// The event's id (the `Idempotency-Key` header: the same on every attempt).
    pub event_id: Uuid,
    /// The kind of event.
    pub event_type: WebhookEvent,
    /// Where it is.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// When it is next due (while pending).
    pub next_attempt_at: DateTime<Utc>,
    /// The HTTP status of the last attempt (none: no answer).
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Fanned out.
    pub created_at: DateTime<Utc>,
    /// Delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

impl TryFrom<dl::Model> for WebhookDelivery {
    type Error = Error;
    fn try_from(m: dl::Model) -> Result<Self> {
        Ok(WebhookDelivery {
            id: m.id,
            webhook_id: m.webhook_id,
            outbox_id: m.outbox_id,
            event_id: m.event_id,
            event_type: m.event_type.parse()?,
            status: parse_stored(&m.status)?,
            attempts: u32::try_from(m.attempts).unwrap_or(0),
            next_attempt_at: m.next_attempt_at,
            last_status: m.last_status.and_then(|s| u16::try_from(s).ok()),
            last_error: m.last_error,
            created_at: m.created_at,
            delivered_at: m.delivered_at,
        })
    }
}

/// A delivery leased to one dispatcher: nobody else attempts it until the lease ends or
/// [`Webhooks::finish`] records the attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedDelivery {
    /// The delivery, as claimed.
    pub delivery: WebhookDelivery,
    /// Its webhook.
    pub webhook: Webhook,
    /// The event (none when it is no longer in the outbox).
    pub event: Option<OutboxEvent>,
    /// The lease's token: only its holder records the attempt.
    pub lease: Uuid,
    /// When the lease ends (then another dispatcher may attempt it).
    pub lease_until: DateTime<Utc>,
}

/// How an attempt went.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered {
        /// Its status.
        http_status: u16,
    },
    /// It failed; try again at `at`.
    Retry {
        /// The receiver's status, when it answered.
        http_status: Option<u16>,
        /// What went wrong.
        error: String,
        /// When to try again.
        at: DateTime<Utc>,
    },
    /// It failed and is not tried again.
    GiveUp {
        /// The receiver's status, when it answered.
        http_status: Option<u16>,
        /// What went wrong.
        error: String,
    },
}

repository!(
    /// Webhooks, the fan-out of outbox events into their deliveries, and the leases that let
    /// several server instances share the sending.
    Webhooks
);

const ENTITY: &str = "webhook";
const DELIVERY: &str = "webhook delivery";
/// The dispatcher's row in `consumer_offsets`.
const CURSOR_GROUP: &str = "wflo-webhooks";
const CURSOR_TOPIC: &str = "outbox_events";

fn invalid(detail: impl Into<String>) -> Error {
    Error::Invalid {
        entity: ENTITY,
        detail: detail.into(),
    }
}

fn validate(new: &NewWebhook) -> Result<()> {
    let name = new.name.trim();
    if name.is_empty()
        || name.len() > 100
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(
            "a webhook's name must be 1 to 100 letters, digits, `-`, `_` or `.`",
        ));
    }
    let url = new.url.trim();
    let parsed = url::Url::parse(url).map_err(|e| {
        invalid(format!(
            "`{}` is not a url ({e}); give http://host/path or https://host/path",
            crate::redact(url)
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none_or(str::is_empty)
        || url.len() > 2000
    {
        return Err(invalid(format!(
            "`{}` is not an http or https url with a host; give http://host/path or https://host/path",
            crate::redact(url)
        )));
    }
    if new.events.is_empty() {
        return Err(invalid(format!(
            "subscribe to at least one event: {}",
            WebhookEvent::ALL
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let secret = &new.secret;
    if secret.len() < 16 || secret.len() > 200 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "the secret must be 16 to 200 printable ASCII characters without spaces",
        ));
    }
    Ok(())
}

fn now_ms() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

fn duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(365))
}

fn not_found(name: &str) -> Error {
    Error::NotFound {
        entity: ENTITY,
        id: format!("`{name}` (see the webhooks there are with `wflo webhooks list`)"),
    }
}

/// `Ok(0)` for an insert whose every row was a conflict (`ON CONFLICT DO NOTHING`).
fn none_inserted(r: std::result::Result<u64, DbErr>) -> std::result::Result<u64, DbErr> {
    match r {
        Err(DbErr::RecordNotInserted) => Ok(0),
        other => other,
    }
}

impl<E: crate::Executor> Webhooks<'_, E> {
    /// Creates a webhook; it receives the events written from now on. A taken name is
    /// [`Error::AlreadyExists`]; a bad name, url, event list or secret is [`Error::Invalid`].
    pub async fn create(&self, new: NewWebhook) -> Result<Webhook> {
        validate(&new)?;
        let name = new.name.trim().to_string();
        let events: BTreeSet<WebhookEvent> = new.events.iter().copied().collect();
        let names: Vec<&str> = events.iter().map(|k| k.as_str()).collect();
        wh::ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set(name.clone()),
            url: Set(new.url.trim().to_string()),
            event_types: Set(serde_json::json!(names)),
            format: Set(new.format.as_str().into()),
            secret: Set(new.secret),
            enabled: Set(new.enabled),
            created_at: Set(now_ms()),
        }
        .insert(self.conn())
        .await
        .map_err(|e| match db_err(ENTITY, "creating a webhook")(e) {
            Error::AlreadyExists { entity, .. } => Error::AlreadyExists {
                entity,
                detail: format!(
                    "a webhook is named `{name}`; remove it first or choose another name"
                ),
            },
            other => other,
        })?
        .try_into()
    }

    /// Every webhook, by name.
    pub async fn list(&self) -> Result<Vec<Webhook>> {
        wh::Entity::find()
            .order_by_asc(wh::Column::Name)
            .all(self.conn())
            .await
            .map_err(db_err(ENTITY, "listing webhooks"))?
            .into_iter()
            .map(Webhook::try_from)
            .collect()
    }

    /// The enabled webhooks.
    pub async fn enabled(&self) -> Result<Vec<Webhook>> {
        wh::Entity::find()
            .filter(wh::Column::Enabled.eq(true))
            .order_by_asc(wh::Column::Name)
            .all(self.conn())
            .await
            .map_err(db_err(ENTITY, "listing webhooks"))?
            .into_iter()
            .map(Webhook::try_from)
            .collect()
    }

    /// The webhook named `name` ([`Error::NotFound`] when none is).
    pub async fn get(&self, name: &str) -> Result<Webhook> {
        wh::Entity::find()
            .filter(wh::Column::Name.eq(name.trim()))
            .one(self.conn())
            .await
            .map_err(db_err(ENTITY, "reading a webhook"))?
            .ok_or_else(|| not_found(name))?
            .try_into()
    }

    /// Sends events to the webhook named `name` again, or stops sending them (its pending
    /// deliveries wait meanwhile).
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<Webhook> {
        let res = wh::Entity::update_many()
            .col_expr(wh::Column::Enabled, Expr::value(enabled))
            .filter(wh::Column::Name.eq(name.trim()))
            .exec_with_returning(self.conn())
            .await
            .map_err(db_err(ENTITY, "enabling or disabling a webhook"))?;
        match res.into_iter().next() {
            Some(m) => m.try_into(),
            None => Err(not_found(name)),
        }
    }

    /// Removes the webhook named `name` with its deliveries, pending ones included.
    pub async fn remove(&self, name: &str) -> Result<Webhook> {
        let hook = self.get(name).await?;
        dl::Entity::delete_many()
            .filter(dl::Column::WebhookId.eq(hook.id))
            .exec(self.conn())
            .await
            .map_err(db_err(DELIVERY, "removing a webhook's deliveries"))?;
        let res = wh::Entity::delete_many()
            .filter(wh::Column::Id.eq(hook.id))
            .exec(self.conn())
            .await
            .map_err(db_err(ENTITY, "removing a webhook"))?;
        if res.rows_affected == 0 {
            return Err(not_found(name));
        }
        Ok(hook)
    }

    /// Stores a pending delivery, due now, for each of `events` and each of `hooks` that wants
    /// it and existed when the event was written. Idempotent: a (webhook, event) pair already
    /// stored is left as it is. Returns how many deliveries were new.
    pub async fn fan_out(&self, events: &[OutboxEvent], hooks: &[Webhook]) -> Result<u64> {
        if hooks.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let mut rows = Vec::new();
        for ev in events {
            let Ok(env) = serde_json::from_value::<EventEnvelope>(ev.payload.clone()) else {
                continue;
            };
            let Some(kind) = WebhookEvent::of(&env) else {
                continue;
            };
            for hook in hooks {
                if hook.wants(kind) && hook.created_at <= ev.created_at {
                    rows.push(dl::ActiveModel {
                        id: Set(Uuid::now_v7()),
                        webhook_id: Set(hook.id),
                        outbox_id: Set(ev.id),
                        event_id: Set(ev.event_id),
                        event_type: Set(kind.as_str().into()),
                        status: Set(DeliveryStatus::Pending.as_str().into()),
                        attempts: Set(0),
                        next_attempt_at: Set(now),
                        lease_token: Set(None),
                        last_status: Set(None),
                        last_error: Set(None),
                        created_at: Set(now),
                        delivered_at: Set(None),
                    });
                }
            }
        }
        let mut added = 0;
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<dl::ActiveModel> = rows.by_ref().take(500).collect();
            added += none_inserted(
                dl::Entity::insert_many(chunk)
                    .on_conflict(
                        OnConflict::columns([dl::Column::WebhookId, dl::Column::EventId])
                            .do_nothing()
                            .to_owned(),
                    )
                    .exec_without_returning(self.conn())
                    .await,
            )
            .map_err(db_err(DELIVERY, "storing webhook deliveries"))?;
        }
        Ok(added)
    }

    /// Leases up to `limit` pending deliveries that are due, of enabled webhooks, for `lease`:
    /// until it ends (or the attempt is recorded with [`Webhooks::finish`]) no other caller
    /// gets them, on this instance or another. A conditional update takes each row, so two
    /// dispatchers never hold one delivery at once; a dispatcher that dies leaves its leases to
    /// expire, and the deliveries are attempted again.
    pub async fn claim_due(&self, limit: u64, lease: Duration) -> Result<Vec<ClaimedDelivery>> {
        let now = now_ms();
        let until = now + duration(lease);
        let enabled = Query::select()
            .column(wh::Column::Id)
            .from(wh::Entity)
            .and_where(Expr::col(wh::Column::Enabled).eq(true))
            .to_owned();
        let candidates: Vec<Uuid> = dl::Entity::find()
            .select_only()
            .column(dl::Column::Id)
            .filter(dl::Column::Status.eq(DeliveryStatus::Pending.as_str()))
            .filter(dl::Column::NextAttemptAt.lte(now))
            .filter(dl::Column::WebhookId.in_subquery(enabled))
            .order_by_asc(dl::Column::NextAttemptAt)
            .order_by_asc(dl::Column::Id)
            .limit(limit)
            .into_tuple()
            .all(self.conn())
            .await
            .map_err(db_err(DELIVERY, "looking for due webhook deliveries"))?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let token = Uuid::now_v7();
        // Taken only while still pending and due: a row another dispatcher leased in between
        // has a later `next_attempt_at` (PostgreSQL re-checks the condition on the row it
        // waited for), so it is skipped here.
        let claimed = dl::Entity::update_many()
            .col_expr(dl::Column::LeaseToken, Expr::value(token))
            .col_expr(dl::Column::NextAttemptAt, Expr::value(until))
            .filter(dl::Column::Id.is_in(candidates))
            .filter(dl::Column::Status.eq(DeliveryStatus::Pending.as_str()))
            .filter(dl::Column::NextAttemptAt.lte(now))
            .exec_with_returning(self.conn())
            .await
            .map_err(db_err(DELIVERY, "leasing webhook deliveries"))?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let hook_ids: BTreeSet<Uuid> = claimed.iter().map(|m| m.webhook_id).collect();
        let hooks: BTreeMap<Uuid, Webhook> = wh::Entity::find()
            .filter(wh::Column::Id.is_in(hook_ids))
            .all(self.conn())
            .await
            .map_err(db_err(ENTITY, "reading webhooks"))?
            .into_iter()
            .map(|m| Webhook::try_from(m).map(|w| (w.id, w)))
            .collect::<Result<_>>()?;
        let positions: BTreeSet<i64> = claimed.iter().map(|m| m.outbox_id).collect();
        let events: BTreeMap<i64, OutboxEvent> = ob::Entity::find()
            .filter(ob::Column::Id.is_in(positions))
            .all(self.conn())
            .await
            .map_err(db_err("outbox event", "reading the outbox"))?
            .into_iter()
            .map(|m| (m.id, OutboxEvent::from(m)))
            .collect();
        let mut out = Vec::with_capacity(claimed.len());
        for m in claimed {
            let Some(webhook) = hooks.get(&m.webhook_id).cloned() else {
                continue; // removed meanwhile (its deliveries went with it)
            };
            let event = match events.get(&m.outbox_id) {
                Some(e) if e.event_id == m.event_id => Some(e.clone()),
                _ => None,
            };
            out.push(ClaimedDelivery {
                delivery: m.try_into()?,
                webhook,
                event,
                lease: token,
                lease_until: until,
            });
        }
        out.sort_by_key(|c| c.delivery.outbox_id);
        Ok(out)
    }

    /// Records an attempt of a claimed delivery and ends its lease. `false` when the lease
    /// was lost meanwhile (it ended and another dispatcher took the delivery): nothing is
    /// recorded.
    pub async fn finish(&self, claim: &ClaimedDelivery, outcome: DeliveryOutcome) -> Result<bool> {
        let now = now_ms();
        let status = |s: Option<u16>| Expr::value(s.map(i32::from));
        let mut update = dl::Entity::update_many()
            .col_expr(dl::Column::Attempts, Expr::col(dl::Column::Attempts).add(1))
            .col_expr(dl::Column::LeaseToken, Expr::value(Option::<Uuid>::None));
        update = match outcome {
            DeliveryOutcome::Delivered { http_status } => update
                .col_expr(
                    dl::Column::Status,
                    Expr::value(DeliveryStatus::Delivered.as_str()),
                )
                .col_expr(dl::Column::LastStatus, status(Some(http_status)))
                .col_expr(dl::Column::LastError, Expr::value(Option::<String>::None))
                .col_expr(dl::Column::DeliveredAt, Expr::value(now)),
            DeliveryOutcome::Retry {
                http_status,
                error,
                at,
            } => update
                .col_expr(dl::Column::LastStatus, status(http_status))
                .col_expr(dl::Column::LastError, Expr::value(error))
                .col_expr(
                    dl::Column::NextAttemptAt,
                    Expr::value(Ord::max(at.trunc_subsecs(3), now)),
                ),
            DeliveryOutcome::GiveUp { http_status, error } => update
                .col_expr(
                    dl::Column::Status,
                    Expr::value(DeliveryStatus::Failed.as_str()),
                )
                .col_expr(dl::Column::LastStatus, status(http_status))
                .col_expr(dl::Column::LastError, Expr::value(error)),
        };
        let res = update
            .filter(dl::Column::Id.eq(claim.delivery.id))
            .filter(dl::Column::LeaseToken.eq(claim.lease))
            .filter(dl::Column::Status.eq(DeliveryStatus::Pending.as_str()))
            .exec(self.conn())
            .await
            .map_err(db_err(DELIVERY, "recording a webhook delivery attempt"))?;
        Ok(res.rows_affected == 1)
    }

    /// The deliveries of a webhook, newest first: at most `limit`, and only of `status`
    /// when given.
    pub async fn deliveries(
        &self,
        webhook_id: Uuid,
        status: Option<DeliveryStatus>,
        limit: u64,
    ) -> Result<Vec<WebhookDelivery>> {
        let mut q = dl::Entity::find().filter(dl::Column::WebhookId.eq(webhook_id));
        if let Some(s) = status {
            q = q.filter(dl::Column::Status.eq(s.as_str()));
        }
        q.order_by_desc(dl::Column::OutboxId)
            .order_by_desc(dl::Column::Id)
            .limit(limit)
            .all(self.conn())
            .await
            .map_err(db_err(DELIVERY, "listing webhook deliveries"))?
            .into_iter()
            .map(WebhookDelivery::try_from)
            .collect()
    }

    /// The outbox position up to which every event has been fanned out (0: none yet).
    pub async fn cursor(&self) -> Result<i64> {
        Ok(
            co::Entity::find_by_id((CURSOR_GROUP.to_string(), CURSOR_TOPIC.to_string(), 0))
                .one(self.conn())
                .await
                .map_err(db_err("webhook cursor", "reading the webhook cursor"))?
                .map_or(0, |m| m.next_offset - 1),
        )
    }

    /// Moves the cursor forward to `position` (never back: a slower dispatcher's older
    /// position leaves it where it is).
    pub async fn advance_cursor(&self, position: i64) -> Result<()> {
        if position < 0 {
            return Err(Error::Invalid {
                entity: "webhook cursor",
                detail: format!("position {position} must not be negative"),
            });
        }
        let next = position + 1;
        let now = Utc::now();
        co::Entity::insert(co::ActiveModel {
            consumer_group: Set(CURSOR_GROUP.into()),
            topic: Set(CURSOR_TOPIC.into()),
            partition_id: Set(0),
            next_offset: Set(next),
            updated_at: Set(now),
        })
        .on_conflict(
            OnConflict::columns([
                co::Column::ConsumerGroup,
                co::Column::Topic,
                co::Column::PartitionId,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(self.conn())
        .await
        .map_err(db_err("webhook cursor", "moving the webhook cursor"))?;
        co::Entity::update_many()
            .col_expr(co::Column::NextOffset, Expr::value(next))
            .col_expr(co::Column::UpdatedAt, Expr::value(now))
            .filter(co::Column::ConsumerGroup.eq(CURSOR_GROUP))
            .filter(co::Column::Topic.eq(CURSOR_TOPIC))
            .filter(co::Column::PartitionId.eq(0))
            .filter(co::Column::NextOffset.lt(next))
            .exec(self.conn())
            .await
            .map_err(db_err("webhook cursor", "moving the webhook cursor"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wflo_types::{ApprovalPayload, CostPayload, WorkflowStatusPayload};

    fn kind_of(p: EventPayload) -> Option<WebhookEvent> {
        WebhookEvent::of(&EventEnvelope::new("test", p))
    }

    #[test]
    fn events_fall_under_their_subscription() {
        assert_eq!(
            kind_of(EventPayload::ApprovalRequested(ApprovalPayload::default())),
            Some(WebhookEvent::ApprovalRequested)
        );
        assert_eq!(
            kind_of(EventPayload::ApprovalDecided(ApprovalPayload::default())),
            Some(WebhookEvent::ApprovalDecided)
        );
        assert_eq!(
            kind_of(EventPayload::BudgetAlert(CostPayload::default())),
            Some(WebhookEvent::BudgetAlert)
        );
        assert_eq!(
            kind_of(EventPayload::CostRecorded(CostPayload::default())),
            None
        );
        assert_eq!(
            kind_of(EventPayload::ApprovalExpired(ApprovalPayload::default())),
            None
        );
        for (status, finished) in [
            ("COMPLETED", true),
            ("FAILED", true),
            ("CANCELLED", true),
            ("RUNNING", false),
            ("WAITING_APPROVAL", false),
            ("PENDING", false),
            ("DONE", false),
        ] {
            let p = EventPayload::WorkflowStatus(WorkflowStatusPayload {
                status: status.into(),
                ..Default::default()
            });
            assert_eq!(
                kind_of(p) == Some(WebhookEvent::ExecutionFinished),
                finished,
                "{status}"
            );
        }
    }

    #[test]
    fn event_names_parse_and_others_are_refused_with_the_list() {
        for k in WebhookEvent::ALL {
            assert_eq!(k.as_str().parse::<WebhookEvent>().unwrap(), *k);
        }
        assert_eq!(
            " Approval.Requested ".parse::<WebhookEvent>().unwrap(),
            WebhookEvent::ApprovalRequested
        );
        let e = "workflow.status".parse::<WebhookEvent>().unwrap_err();
        assert!(e.to_string().contains("execution.finished"), "{e}");
    }

    #[test]
    fn new_webhooks_are_validated() {
        let ok = NewWebhook::new(
            "ops-slack",
            "https://hooks.example.com/x",
            vec![WebhookEvent::ApprovalRequested],
            "0123456789abcdef",
        );
        assert!(validate(&ok).is_ok());
        let bad = |f: fn(&mut NewWebhook)| {
            let mut n = ok.clone();
            f(&mut n);
            validate(&n).unwrap_err().to_string()
        };
        assert!(bad(|n| n.name = "a b".into()).contains("name"));
        assert!(bad(|n| n.name = String::new()).contains("name"));
        assert!(bad(|n| n.url = "ftp://example.com".into()).contains("http"));
        assert!(bad(|n| n.url = "hooks.example.com".into()).contains("not a url"));
        assert!(bad(|n| n.url = "http://".into()).contains("url"));
        assert!(bad(|n| n.events.clear()).contains("at least one"));
        assert!(bad(|n| n.secret = "short".into()).contains("secret"));
        assert!(bad(|n| n.secret = "has a space in it ok".into()).contains("secret"));
    }

    #[test]
    fn a_webhook_debug_hides_its_secret() {
        let w = Webhook {
            id: Uuid::nil(),
            name: "n".into(),
            url: "https://example.com".into(),
            events: vec![WebhookEvent::BudgetAlert],
            format: WebhookFormat::Slack,
            secret: "whsec_topsecretvalue".into(),
            enabled: true,
            created_at: Utc::now(),
        };
        let text = format!("{w:?}");
        assert!(!text.contains("topsecret"), "{text}");
        assert!(w.wants(WebhookEvent::BudgetAlert));
        assert!(!w.wants(WebhookEvent::ApprovalRequested));
    }
}
