use super::{db_err, repository};
use crate::entity::{consumer_offset as co, outbox as ob};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde_json::Value;
use std::collections::BTreeMap;
use uuid::Uuid;

/// An event waiting in (or published from) the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Position: the relay publishes in this order.
    pub id: i64,
    /// The event's own id (consumers dedupe on it).
    pub event_id: Uuid,
    /// Destination topic.
    pub topic: String,
    /// Partitioning key (the execution id keeps one execution's events in order).
    pub key: Option<String>,
    /// The serialized event.
    pub payload: Value,
    /// Message headers.
    pub headers: BTreeMap<String, String>,
    /// Failed publish attempts.
    pub attempts: i32,
    /// The last publish error.
    pub last_error: Option<String>,
    /// Written.
    pub created_at: DateTime<Utc>,
    /// Acknowledged by the broker.
    pub published_at: Option<DateTime<Utc>>,
}

impl From<ob::Model> for OutboxEvent {
    fn from(m: ob::Model) -> Self {
        OutboxEvent {
            id: m.id,
            event_id: m.event_id,
            topic: m.topic,
            key: m.message_key,
            payload: m.payload,
            headers: serde_json::from_value(m.headers).unwrap_or_default(),
            attempts: m.attempts,
            last_error: m.last_error,
            created_at: m.created_at,
            published_at: m.published_at,
        }
    }
}

/// An event to write to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutboxEvent {
    /// The event's id.
    pub event_id: Uuid,
    /// Destination topic.
    pub topic: String,
    /// Partitioning key.
    pub key: Option<String>,
    /// The serialized event.
    pub payload: Value,
    /// Message headers.
    pub headers: BTreeMap<String, String>,
}

impl NewOutboxEvent {
    /// The outbox row of a typed event: its topic by type, keyed by its execution, with the
    /// event id and type headers every Wflo message carries.
    pub fn from_envelope(env: &wflo_types::EventEnvelope) -> NewOutboxEvent {
        let headers = BTreeMap::from([
            (
                wflo_types::HEADER_EVENT_ID.to_string(),
                env.event_id.to_string(),
            ),
            (
                wflo_types::HEADER_EVENT_TYPE.to_string(),
                env.event_type.as_str().to_string(),
            ),
        ]);
        NewOutboxEvent {
            event_id: env.event_id,
            topic: env.default_topic().to_string(),
            key: env.key(),
            // The envelope is plain data (strings, numbers, JSON values): encoding cannot fail.
            payload: env.to_value().unwrap_or(Value::Null),
            headers,
        }
    }

    /// With another partitioning key (an event about no execution, keyed by its scope).
    pub fn keyed(mut self, key: impl Into<String>) -> NewOutboxEvent {
        self.key = Some(key.into());
        self
    }
}

repository!(
    /// The transactional outbox: write events through the same [`crate::Tx`] as the state
    /// change they describe.
    Outbox
);

const ENTITY: &str = "outbox event";

fn validate(new: &NewOutboxEvent) -> Result<()> {
    if new.topic.is_empty() {
        return Err(Error::Invalid {
            entity: ENTITY,
            detail: "the topic must not be empty".into(),
        });
    }
    Ok(())
}

fn headers_value(headers: BTreeMap<String, String>) -> Value {
    serde_json::to_value(headers).unwrap_or(Value::Null)
}

fn active_model(new: NewOutboxEvent, now: DateTime<Utc>) -> ob::ActiveModel {
    ob::ActiveModel {
        event_id: Set(new.event_id),
        topic: Set(new.topic),
        message_key: Set(new.key),
        payload: Set(new.payload),
        headers: Set(headers_value(new.headers)),
        attempts: Set(0),
        last_error: Set(None),
        created_at: Set(now),
        published_at: Set(None),
        ..Default::default()
    }
}

/// Writes `events` in one multi-row INSERT on `conn`, in the given order; nothing when empty.
pub(crate) async fn insert_events<C: sea_orm::ConnectionTrait>(
    conn: &C,
    events: Vec<NewOutboxEvent>,
) -> Result<u64> {
    if events.is_empty() {
        return Ok(0);
    }
    events.iter().try_for_each(validate)?;
    let now = Utc::now();
    let n = events.len() as u64;
    ob::Entity::insert_many(events.into_iter().map(|e| active_model(e, now)))
        .exec_without_returning(conn)
        .await
        .map_err(db_err(ENTITY, "writing to the outbox"))?;
    Ok(n)
}

/// `INSERT INTO outbox_events (...) SELECT <event 1> FROM source UNION ALL SELECT <event 2>
/// FROM source ...`: writes each event once per row of `source` (a common table expression of
/// the same statement). Used on PostgreSQL to write a state change's events in the statement
/// that changes it, and only when it does (`source` returns the changed row, or no row). `None`
/// when there are no events.
pub(crate) fn insert_events_per_row_of(
    events: Vec<NewOutboxEvent>,
    source: &str,
) -> Result<Option<sea_orm::sea_query::InsertStatement>> {
    use sea_orm::sea_query::{Alias, Query, SelectStatement, UnionType};
    if events.is_empty() {
        return Ok(None);
    }
    events.iter().try_for_each(validate)?;
    let now = Utc::now();
    let selects: Vec<SelectStatement> = events
        .into_iter()
        .map(|e| {
            Query::select()
                .exprs([
                    Expr::value(e.event_id),
                    Expr::value(e.topic),
                    Expr::value(e.key),
                    Expr::value(e.payload),
                    Expr::value(headers_value(e.headers)),
                    Expr::value(0i32),
                    Expr::value(now),
                ])
                .from(Alias::new(source))
                .to_owned()
        })
        .collect();
    let mut iter = selects.into_iter();
    let mut select = iter.next().expect("not empty");
    for other in iter {
        select.union(UnionType::All, other);
    }
    let mut insert = Query::insert();
    insert
        .into_table(ob::Entity)
        .columns([
            ob::Column::EventId,
            ob::Column::Topic,
            ob::Column::MessageKey,
            ob::Column::Payload,
            ob::Column::Headers,
            ob::Column::Attempts,
            ob::Column::CreatedAt,
        ])
        .select_from(select)
        .map_err(|e| Error::Invalid {
            entity: ENTITY,
            detail: e.to_string(),
        })?;
    Ok(Some(insert))
}

impl<E: crate::Executor> Outbox<'_, E> {
    /// Writes an event; a second write of the same `event_id` is [`Error::AlreadyExists`].
    pub async fn enqueue(&self, new: NewOutboxEvent) -> Result<OutboxEvent> {
        validate(&new)?;
        active_model(new, Utc::now())
            .insert(self.conn())
            .await
            .map(OutboxEvent::from)
            .map_err(db_err(ENTITY, "writing to the outbox"))
    }

    /// Writes several events in one statement, in the given order; returns how many were
    /// written. Nothing is written when any `event_id` is taken
    /// ([`Error::AlreadyExists`]).
    pub async fn enqueue_many(&self, events: Vec<NewOutboxEvent>) -> Result<u64> {
        insert_events(self.conn(), events).await
    }

    /// Up to `limit` events written after position `after`, in position order, published or
    /// not: every event, or only those keyed by `key` (an execution's id). A reader that
    /// remembers the last position it saw resumes from there.
    pub async fn after(
        &self,
        after: i64,
        key: Option<&str>,
        limit: u64,
    ) -> Result<Vec<OutboxEvent>> {
        let mut q = ob::Entity::find().filter(ob::Column::Id.gt(after));
        if let Some(key) = key {
            q = q.filter(ob::Column::MessageKey.eq(key));
        }
        q.order_by_asc(ob::Column::Id)
            .limit(limit)
            .all(self.conn())
            .await
            .map(|v| v.into_iter().map(OutboxEvent::from).collect())
            .map_err(db_err(ENTITY, "reading the outbox"))
    }

    /// The events at these positions (those that exist), in position order.
    pub async fn by_ids(&self, ids: &[i64]) -> Result<Vec<OutboxEvent>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        ob::Entity::find()
            .filter(ob::Column::Id.is_in(ids.iter().copied()))
            .order_by_asc(ob::Column::Id)
            .all(self.conn())
            .await
            .map(|v| v.into_iter().map(OutboxEvent::from).collect())
            .map_err(db_err(ENTITY, "reading the outbox"))
    }

    /// The position of the newest event (0 when there is none).
    pub async fn head(&self) -> Result<i64> {
        Ok(ob::Entity::find()
            .order_by_desc(ob::Column::Id)
            .one(self.conn())
            .await
            .map_err(db_err(ENTITY, "reading the outbox"))?
            .map_or(0, |m| m.id))
    }

    /// Up to `limit` unpublished events, in id order.
    pub async fn unpublished(&self, limit: u64) -> Result<Vec<OutboxEvent>> {
        ob::Entity::find()
            .filter(ob::Column::PublishedAt.is_null())
            .order_by_asc(ob::Column::Id)
            .limit(limit)
            .all(self.conn())
            .await
            .map(|v| v.into_iter().map(OutboxEvent::from).collect())
            .map_err(db_err(ENTITY, "reading the outbox"))
    }

    /// Up to `limit` unpublished events in id order, locked for the caller's transaction.
    ///
    /// On PostgreSQL this is `SELECT ... FOR UPDATE SKIP LOCKED`: run it through a [`crate::Tx`]
    /// and several relays share the outbox without publishing a row twice or out of order per
    /// key (rows another relay holds are skipped until it commits). On SQLite, whose writers
    /// are serialized anyway, it is the same as [`Outbox::unpublished`].
    pub async fn claim_unpublished(&self, limit: u64) -> Result<Vec<OutboxEvent>> {
        use sea_orm::sea_query::{LockBehavior, LockType};
        let mut q = ob::Entity::find()
            .filter(ob::Column::PublishedAt.is_null())
            .order_by_asc(ob::Column::Id)
            .limit(limit);
        let postgres = self.ex.kind() == crate::Backend::Postgres;
        if postgres {
            q = q.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let claimed: Vec<OutboxEvent> = q
            .all(self.conn())
            .await
            .map(|v| v.into_iter().map(OutboxEvent::from).collect())
            .map_err(db_err(ENTITY, "claiming outbox events"))?;
        if !postgres || claimed.is_empty() {
            return Ok(claimed);
        }
        // Another relay may hold an earlier row of the same key: publishing ours first would
        // reorder that key. Keep a keyed row only when every earlier unpublished row of its
        // (topic, key) is claimed here too.
        let max_id = claimed.iter().map(|e| e.id).max().unwrap_or_default();
        let keys: Vec<String> = claimed
            .iter()
            .filter_map(|e| e.key.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if keys.is_empty() {
            return Ok(claimed);
        }
        let earlier: Vec<(i64, String, Option<String>)> = ob::Entity::find()
            .select_only()
            .column(ob::Column::Id)
            .column(ob::Column::Topic)
            .column(ob::Column::MessageKey)
            .filter(ob::Column::PublishedAt.is_null())
            .filter(ob::Column::Id.lte(max_id))
            .filter(ob::Column::MessageKey.is_in(keys))
            .order_by_asc(ob::Column::Id)
            .into_tuple()
            .all(self.conn())
            .await
            .map_err(db_err(ENTITY, "claiming outbox events"))?;
        let mine: std::collections::BTreeSet<i64> = claimed.iter().map(|e| e.id).collect();
        let mut blocked: std::collections::BTreeSet<(String, String)> = Default::default();
        let mut keep: std::collections::BTreeSet<i64> = Default::default();
        for (id, topic, key) in earlier {
            let Some(key) = key else { continue };
            let k = (topic, key);
            if blocked.contains(&k) {
                continue;
            }
            if mine.contains(&id) {
                keep.insert(id);
            } else {
                blocked.insert(k);
            }
        }
        Ok(claimed
            .into_iter()
            .filter(|e| e.key.is_none() || keep.contains(&e.id))
            .collect())
    }

    /// Marks events published; returns how many were still unpublished.
    pub async fn mark_published(&self, ids: &[i64]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        ob::Entity::update_many()
            .col_expr(ob::Column::PublishedAt, Expr::value(Utc::now()))
            .filter(ob::Column::Id.is_in(ids.iter().copied()))
            .filter(ob::Column::PublishedAt.is_null())
            .exec(self.conn())
            .await
            .map(|r| r.rows_affected)
            .map_err(db_err(ENTITY, "marking outbox events published"))
    }

    /// Counts a failed publish attempt on each event.
    pub async fn record_failure(&self, ids: &[i64], error: &str) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        ob::Entity::update_many()
            .col_expr(ob::Column::Attempts, Expr::col(ob::Column::Attempts).add(1))
            .col_expr(ob::Column::LastError, Expr::value(error))
            .filter(ob::Column::Id.is_in(ids.iter().copied()))
            .exec(self.conn())
            .await
            .map(|_| ())
            .map_err(db_err(ENTITY, "recording a publish failure"))
    }

    /// How many events wait to be published (the relay's lag).
    pub async fn count_unpublished(&self) -> Result<u64> {
        ob::Entity::find()
            .filter(ob::Column::PublishedAt.is_null())
            .count(self.conn())
            .await
            .map_err(db_err(ENTITY, "counting the outbox"))
    }
}

repository!(
    /// Consumer offsets: commit them through the same [`crate::Tx`] as the consumer's effects.
    ConsumerOffsets
);

impl<E: crate::Executor> ConsumerOffsets<'_, E> {
    /// Records that `group` processed `event_id`; `false` when it already had (a duplicate
    /// delivery). Run it through the [`crate::Tx`] holding the handler's effects.
    pub async fn mark_processed(&self, group: &str, event_id: Uuid) -> Result<bool> {
        use sea_orm::ConnectionTrait;
        use sea_orm::sea_query::{Alias, Query};
        let stmt = Query::insert()
            .into_table(Alias::new("processed_events"))
            .columns([
                Alias::new("consumer_group"),
                Alias::new("event_id"),
                Alias::new("processed_at"),
            ])
            .values_panic([group.into(), event_id.into(), Utc::now().into()])
            .on_conflict(
                OnConflict::columns([Alias::new("consumer_group"), Alias::new("event_id")])
                    .do_nothing()
                    .to_owned(),
            )
            .to_owned();
        self.conn()
            .execute(&stmt)
            .await
            .map(|r| r.rows_affected() == 1)
            .map_err(db_err("processed event", "recording a processed event"))
    }

    /// Forgets processed-event ids of `group` recorded before `before` (bounds the table;
    /// keep them longer than any redelivery can take). Returns how many were removed.
    pub async fn prune_processed(&self, group: &str, before: DateTime<Utc>) -> Result<u64> {
        use sea_orm::ConnectionTrait;
        use sea_orm::sea_query::{Alias, Query};
        let stmt = Query::delete()
            .from_table(Alias::new("processed_events"))
            .and_where(Expr::col(Alias::new("consumer_group")).eq(group))
            .and_where(Expr::col(Alias::new("processed_at")).lt(before))
            .to_owned();
        self.conn()
            .execute(&stmt)
            .await
            .map(|r| r.rows_affected())
            .map_err(db_err("processed event", "pruning processed events"))
    }

    /// The next offset to read, if one was committed.
    pub async fn get(&self, group: &str, topic: &str, partition: i32) -> Result<Option<i64>> {
        co::Entity::find_by_id((group.to_string(), topic.to_string(), partition))
            .one(self.conn())
            .await
            .map(|m| m.map(|m| m.next_offset))
            .map_err(db_err("consumer offset", "reading a consumer offset"))
    }

    /// Stores the next offset to read (insert or update).
    pub async fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        next_offset: i64,
    ) -> Result<()> {
        if next_offset < 0 || partition < 0 {
            return Err(Error::Invalid {
                entity: "consumer offset",
                detail: format!(
                    "partition {partition} and offset {next_offset} must not be negative"
                ),
            });
        }
        let model = co::ActiveModel {
            consumer_group: Set(group.to_string()),
            topic: Set(topic.to_string()),
            partition_id: Set(partition),
            next_offset: Set(next_offset),
            updated_at: Set(Utc::now()),
        };
        co::Entity::insert(model)
            .on_conflict(
                OnConflict::columns([
                    co::Column::ConsumerGroup,
                    co::Column::Topic,
                    co::Column::PartitionId,
                ])
                .update_columns([co::Column::NextOffset, co::Column::UpdatedAt])
                .to_owned(),
            )
            .exec(self.conn())
            .await
            .map(|_| ())
            .map_err(db_err("consumer offset", "committing a consumer offset"))
    }
}
