//! `wflo webhooks add|list|remove|deliveries`: where `wflo serve` POSTs events (approval
//! requests and decisions, finished runs, budget alerts), signed with each webhook's secret.
//! The secret is stored (signing needs it) and shown once, when the webhook is added.

use crate::exit::{self, coded};
use crate::format::Table;
use wflo_core::db::{DeliveryStatus, Executor as _, NewWebhook, WebhookEvent, WebhookFormat};

pub(crate) async fn add(
    name: String,
    url: String,
    events: Vec<WebhookEvent>,
    format: WebhookFormat,
    secret: Option<String>,
) -> anyhow::Result<u8> {
    let wflo = super::connect(super::config()?).await?;
    let generated = secret.is_none();
    let secret = secret.unwrap_or_else(wflo_server::new_webhook_secret);
    let w = wflo
        .db()
        .webhooks()
        .create(NewWebhook::new(name, url, events, secret).format(format))
        .await
        .map_err(|e| match e {
            // A bad name, url or secret is a usage error.
            wflo_core::db::Error::Invalid { .. } => coded(exit::USAGE, e.to_string()),
            other => other.into(),
        })?;
    eprintln!(
        "added webhook `{}`: {} events go to {} as {}, signed (header Wflo-Signature: \
         t=<unix time>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">); `wflo serve` sends them",
        w.name,
        kinds(&w.events),
        w.url,
        w.format.as_str().to_lowercase()
    );
    if generated {
        eprintln!("its signing secret is shown this once, store it with the receiver now:");
        println!("{}", w.secret);
    }
    Ok(0)
}

fn kinds(events: &[WebhookEvent]) -> String {
    events
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) async fn list() -> anyhow::Result<u8> {
    let wflo = super::connect(super::config()?).await?;
    let hooks = wflo.db().webhooks().list().await?;
    if hooks.is_empty() {
        println!(
            "no webhooks; add one with `wflo webhooks add --name NAME --url URL --event approval.requested`"
        );
        return Ok(0);
    }
    let mut t = Table::new(&["name", "url", "events", "format", "state", "created"]);
    for w in &hooks {
        t.row(vec![
            w.name.clone(),
            w.url.clone(),
            kinds(&w.events),
            w.format.as_str().to_lowercase(),
            if w.enabled { "enabled" } else { "disabled" }.into(),
            w.created_at.format("%Y-%m-%d %H:%M").to_string(),
        ]);
    }
    print!("{}", t.render());
    Ok(0)
}

pub(crate) async fn remove(name: String) -> anyhow::Result<u8> {
    let wflo = super::connect(super::config()?).await?;
    let w = wflo.db().webhooks().remove(&name).await?;
    println!(
        "removed webhook `{}` ({}) with its deliveries; nothing more is sent to it",
        w.name, w.url
    );
    Ok(0)
}

pub(crate) async fn deliveries(
    name: String,
    status: Option<DeliveryStatus>,
    limit: u64,
) -> anyhow::Result<u8> {
    let wflo = super::connect(super::config()?).await?;
    let hooks = wflo.db().webhooks();
    let w = hooks.get(&name).await?;
    let rows = hooks.deliveries(w.id, status, limit).await?;
    if rows.is_empty() {
        println!("no deliveries to `{}` yet", w.name);
        return Ok(0);
    }
    let mut t = Table::new(&["event", "kind", "status", "attempts", "last answer", "when"]);
    for d in &rows {
        let answer = match (&d.last_status, &d.last_error) {
            (_, Some(e)) => e.clone(),
            (Some(s), None) => format!("HTTP {s}"),
            (None, None) => String::new(),
        };
        let when = match d.status {
            DeliveryStatus::Delivered => d
                .delivered_at
                .map(|t| format!("delivered {}", t.format("%Y-%m-%d %H:%M:%S"))),
            DeliveryStatus::Pending => Some(format!(
                "next {}",
                d.next_attempt_at.format("%Y-%m-%d %H:%M:%S")
            )),
            _ => None,
        };
        t.row(vec![
            d.event_id.to_string(),
            d.event_type.as_str().into(),
            d.status.as_str().into(),
            d.attempts.to_string(),
            answer,
            when.unwrap_or_default(),
        ]);
    }
    print!("{}", t.render());
    Ok(0)
}

/// Parses an event a webhook can subscribe to.
pub(crate) fn parse_event(s: &str) -> Result<WebhookEvent, String> {
    s.parse::<WebhookEvent>().map_err(|_| {
        format!(
            "`{s}` is not an event a webhook can subscribe to; use {}",
            kinds(WebhookEvent::ALL)
        )
    })
}

/// Parses a body format (json, slack).
pub(crate) fn parse_format(s: &str) -> Result<WebhookFormat, String> {
    s.parse::<WebhookFormat>()
        .map_err(|_| format!("`{s}` is not a format; use json or slack"))
}

/// Parses a delivery status (pending, delivered, failed).
pub(crate) fn parse_status(s: &str) -> Result<DeliveryStatus, String> {
    s.parse::<DeliveryStatus>()
        .map_err(|_| format!("`{s}` is not a delivery status; use pending, delivered or failed"))
}
