//! Live events: one poller per server reads the outbox (where every state change's event is
//! committed with it) and fans each event out to the Server-Sent-Event subscribers. A
//! subscriber that names the last event it saw (`Last-Event-ID`) first gets what it missed,
//! read from the outbox, then the live stream — nothing lost, nothing twice.

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::follow::Follower;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use wflo_core::db::{Db, Executor, OutboxEvent};
use wflo_core::types::{ExecutionId, Role};

/// How long a gap in the outbox's positions is waited for: a transaction that took a
/// position may commit after a later one (PostgreSQL), or roll back and leave the gap forever.
const GAP_PATIENCE: Duration = Duration::from_secs(10);

/// The fan-out of the outbox to subscribers.
#[derive(Debug, Clone)]
pub(crate) struct Hub {
    tx: broadcast::Sender<Arc<OutboxEvent>>,
}

impl Hub {
    /// Starts the poller on `db`, reading every `every`.
    pub(crate) fn start(db: Db, every: Duration) -> Hub {
        let (tx, _) = broadcast::channel(16_384);
        let hub = Hub { tx: tx.clone() };
        tokio::spawn(async move {
            let head = match db.outbox().head().await {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the outbox head; streaming from its start");
                    0
                }
            };
            let mut follower = Follower::from(head, GAP_PATIENCE);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if tx.receiver_count() == 0 {
                    // Nobody listens: keep the cursor current without reading payloads.
                    if let Ok(h) = db.outbox().head().await {
                        follower.skip_to(h);
                    }
                    continue;
                }
                match follower.next(&db, 1000, usize::MAX).await {
                    Ok(events) => {
                        for ev in events {
                            let _ = tx.send(Arc::new(ev));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reading the outbox failed"),
                }
            }
        });
        hub
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Only the events of this execution.
    #[param(value_type = Option<String>, format = Uuid)]
    execution: Option<ExecutionId>,
    /// Resume after this event position (the `id:` of the last event received; the
    /// `Last-Event-ID` header does the same and wins). `0` replays the whole outbox.
    after: Option<i64>,
}

fn to_sse(ev: &OutboxEvent) -> Event {
    let kind = ev
        .headers
        .get(wflo_core::types::HEADER_EVENT_TYPE)
        .cloned()
        .unwrap_or_else(|| "event".into());
    Event::default()
        .id(ev.id.to_string())
        .event(kind)
        .data(ev.payload.to_string())
}

/// Every event as it is committed, or one execution's.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    params(EventsQuery, ("Last-Event-ID" = Option<i64>, Header, description = "resume after this event position")),
    responses(
        (status = 200, description = "a `text/event-stream`: each event's `id` is its outbox position, `event` its type, `data` its envelope (JSON)", content_type = "text/event-stream", body = String),
        (status = 401, description = "no valid token", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []), ("session" = []))
)]
pub(crate) async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(Role::Viewer)?;
    let last = match headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    {
        Some(v) => Some(v.parse::<i64>().map_err(|_| {
            ApiError::invalid("Last-Event-ID must be an event position (an integer)")
        })?),
        None => q.after,
    };
    let key = q.execution.map(|e| e.to_string());
    // Subscribe before reading the backlog, so nothing committed in between is missed.
    let rx = state.hub.tx.subscribe();
    let db = state.wflo.db().clone();
    let head = db.outbox().head().await?;
    Ok(Sse::new(subscriber(db, rx, last, head, key))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Positions this far below the head at subscription are not waited for (a gap older than
/// that was a rollback, not a late commit).
const DEDUPE_WINDOW: i64 = 10_000;

/// The stream of one subscriber: with `last`, the outbox's events after it up to `head` (the
/// head when it subscribed), then live events, each once.
fn subscriber(
    db: Db,
    rx: broadcast::Receiver<Arc<OutboxEvent>>,
    last: Option<i64>,
    head: i64,
    key: Option<String>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct St {
        db: Db,
        rx: broadcast::Receiver<Arc<OutboxEvent>>,
        key: Option<String>,
        backlog: std::collections::VecDeque<OutboxEvent>,
        /// Where the backlog has been read to (none: no backlog to read).
        read_to: Option<i64>,
        head: i64,
        /// Positions near the head already sent from the backlog (the live stream skips them).
        sent: HashSet<i64>,
    }
    let st = St {
        db,
        rx,
        key,
        backlog: Default::default(),
        read_to: last.filter(|l| *l < head),
        head,
        sent: HashSet::new(),
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.backlog.pop_front() {
                if ev.id > st.head - DEDUPE_WINDOW {
                    st.sent.insert(ev.id);
                }
                return Some((Ok(to_sse(&ev)), st));
            }
            if let Some(from) = st.read_to {
                match st.db.outbox().after(from, st.key.as_deref(), 500).await {
                    Ok(batch) => {
                        let batch: Vec<_> = batch.into_iter().filter(|e| e.id <= st.head).collect();
                        match batch.last() {
                            Some(l) => st.read_to = Some(l.id),
                            None => st.read_to = None,
                        }
                        if st.read_to.is_some_and(|r| r >= st.head) {
                            st.read_to = None;
                        }
                        st.backlog.extend(batch);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the outbox for a subscriber failed");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
            match st.rx.recv().await {
                Ok(ev) => {
                    if st.key.is_some() && ev.key != st.key {
                        continue;
                    }
                    if ev.id <= st.head
                        && (st.sent.remove(&ev.id) || ev.id <= st.head - DEDUPE_WINDOW)
                    {
                        continue;
                    }
                    return Some((Ok(to_sse(&ev)), st));
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    // Too slow for the live stream: the skipped events are in the outbox, but
                    // where they start is not known here; say so and let the client resume.
                    tracing::warn!(
                        skipped = n,
                        "a subscriber lagged behind the live stream; closing it so it resumes with Last-Event-ID"
                    );
                    return None;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
