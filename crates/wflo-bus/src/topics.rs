//! Wflo's topics and their settings.

use crate::{Error, Result};
use std::collections::BTreeMap;
use std::time::Duration;

/// Topic names (from the shared vocabulary).
pub use wflo_types::topic as names;

/// What the broker does with old records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CleanupPolicy {
    /// Delete segments older than the retention.
    Delete,
    /// Keep the latest record per key.
    Compact,
    /// Both.
    CompactDelete,
}

impl CleanupPolicy {
    /// Kafka's `cleanup.policy` value.
    pub fn as_str(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }
}

/// A topic and the settings `ensure_topics` creates it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Name.
    pub name: String,
    /// Partitions (per-key order holds within a partition).
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i16,
    /// How long records are kept (`None`: forever).
    pub retention: Option<Duration>,
    /// Cleanup policy.
    pub cleanup: CleanupPolicy,
}

impl TopicSpec {
    /// A topic with `partitions` partitions, replication 1, 7 days' retention, delete policy.
    pub fn new(name: impl Into<String>, partitions: i32) -> TopicSpec {
        TopicSpec {
            name: name.into(),
            partitions,
            replication_factor: 1,
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            cleanup: CleanupPolicy::Delete,
        }
    }

    /// Sets the retention.
    pub fn retention(mut self, r: Option<Duration>) -> Self {
        self.retention = r;
        self
    }

    /// Sets the cleanup policy.
    pub fn cleanup(mut self, c: CleanupPolicy) -> Self {
        self.cleanup = c;
        self
    }

    /// Sets the replication factor.
    pub fn replication_factor(mut self, r: i16) -> Self {
        self.replication_factor = r;
        self
    }

    /// The dead-letter topic for this topic (`NAME.dlq`), one partition, 30 days.
    pub fn dead_letter(&self) -> TopicSpec {
        TopicSpec::new(dead_letter_name(&self.name), 1)
            .retention(Some(Duration::from_secs(30 * 24 * 3600)))
            .replication_factor(self.replication_factor)
    }

    /// The broker configs (`retention.ms`, `cleanup.policy`).
    pub fn configs(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert(
            "retention.ms".to_string(),
            self.retention
                .map(|d| d.as_millis().to_string())
                .unwrap_or_else(|| "-1".into()),
        );
        m.insert(
            "cleanup.policy".to_string(),
            self.cleanup.as_str().to_string(),
        );
        m
    }

    /// Checks the name (Kafka's rules) and the counts.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: &str| Error::TopicSetup {
            topic: self.name.clone(),
            reason: reason.to_string(),
        };
        if self.name.is_empty() || self.name.len() > 249 {
            return Err(bad("the name must have 1 to 249 characters"));
        }
        if !self
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(bad("the name may use only a-z, A-Z, 0-9, '.', '_' and '-'"));
        }
        if self.partitions < 1 || self.replication_factor < 1 {
            return Err(bad("partitions and replication factor must be at least 1"));
        }
        Ok(())
    }
}

/// The dead-letter topic of `topic`.
pub fn dead_letter_name(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Wflo's topics with their settings: high-volume streams get more partitions; the audit
/// trail is kept for a year; metrics for a day.
pub fn standard_topics() -> Vec<TopicSpec> {
    let day = Duration::from_secs(24 * 3600);
    vec![
        TopicSpec::new(names::WORKFLOWS, 6).retention(Some(day * 7)),
        TopicSpec::new(names::STEPS, 6).retention(Some(day * 7)),
        TopicSpec::new(names::COSTS, 6).retention(Some(day * 30)),
        TopicSpec::new(names::SANDBOX, 3).retention(Some(day * 7)),
        TopicSpec::new(names::APPROVALS, 3).retention(Some(day * 30)),
        TopicSpec::new(names::AUDIT, 3)
            .retention(Some(day * 365))
            .cleanup(CleanupPolicy::Delete),
        TopicSpec::new(names::METRICS, 3).retention(Some(day)),
    ]
}

/// A topic as the broker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Name.
    pub name: String,
    /// Partition ids.
    pub partitions: Vec<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_topics_are_valid_and_complete() {
        let t = standard_topics();
        assert_eq!(t.len(), 7);
        for s in &t {
            s.validate().unwrap();
            assert!(s.name.starts_with("wflo."));
        }
        let audit = t.iter().find(|s| s.name == names::AUDIT).unwrap();
        assert_eq!(audit.configs()["retention.ms"], "31536000000");
        assert_eq!(audit.configs()["cleanup.policy"], "delete");
        assert!(TopicSpec::new("bad name", 1).validate().is_err());
        assert!(TopicSpec::new("x", 0).validate().is_err());
        assert_eq!(
            TopicSpec::new("a", 1).retention(None).configs()["retention.ms"],
            "-1"
        );
        assert_eq!(TopicSpec::new("a", 3).dead_letter().name, "a.dlq");
    }
}
