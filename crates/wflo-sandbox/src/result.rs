use crate::Language;
use chrono::{DateTime, Utc};
use std::time::Duration;
use uuid::Uuid;

/// How an execution ended, in one word (the `status` of a `sandbox.execution` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExecStatus {
    /// Exit code 0.
    Succeeded,
    /// A non-zero exit that was neither a timeout nor an OOM kill.
    Failed,
    /// The wall-clock timeout was hit; the container was killed.
    TimedOut,
    /// The kernel's OOM killer ended the program (memory limit).
    OomKilled,
}

impl ExecStatus {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecStatus::Succeeded => "succeeded",
            ExecStatus::Failed => "failed",
            ExecStatus::TimedOut => "timed_out",
            ExecStatus::OomKilled => "oom_killed",
        }
    }
}

/// What one execution produced. Serializes to the payload of a `sandbox.execution` event
/// (`duration_ms` in milliseconds).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct ExecutionResult {
    /// The sandbox's id (the container's `wflo.sandbox-id` label).
    pub sandbox_id: Uuid,
    /// The language that ran.
    pub language: Language,
    /// How it ended.
    pub status: ExecStatus,
    /// The exit code (137 after a SIGKILL: timeout or OOM).
    pub exit_code: i64,
    /// Standard output (lossy UTF-8), at most the output limit.
    pub stdout: String,
    /// Standard error (lossy UTF-8), at most the output limit; never mixed with stdout.
    pub stderr: String,
    /// Stdout went over the output limit; the rest was dropped.
    pub stdout_truncated: bool,
    /// Stderr went over the output limit; the rest was dropped.
    pub stderr_truncated: bool,
    /// The wall-clock timeout was hit and the container killed.
    pub timed_out: bool,
    /// The container's state says the OOM killer struck.
    pub oom_killed: bool,
    /// Wall time from handing the program over to seeing it exit.
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
    /// When the program was handed over.
    pub started_at: DateTime<Utc>,
    /// When its exit was seen.
    pub finished_at: DateTime<Utc>,
    /// Served by a warm pooled container (false: a cold start).
    pub warm: bool,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl ExecutionResult {
    /// Exit code 0, no timeout, no OOM kill.
    pub fn success(&self) -> bool {
        self.status == ExecStatus::Succeeded
    }
}

pub(crate) fn status_of(exit_code: i64, timed_out: bool, oom_killed: bool) -> ExecStatus {
    if timed_out {
        ExecStatus::TimedOut
    } else if oom_killed {
        ExecStatus::OomKilled
    } else if exit_code == 0 {
        ExecStatus::Succeeded
    } else {
        ExecStatus::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_precedence() {
        assert_eq!(status_of(0, false, false), ExecStatus::Succeeded);
        assert_eq!(status_of(1, false, false), ExecStatus::Failed);
        assert_eq!(status_of(137, false, true), ExecStatus::OomKilled);
        assert_eq!(status_of(137, true, true), ExecStatus::TimedOut);
    }

    #[test]
    fn serializes_as_event_payload() {
        let r = ExecutionResult {
            sandbox_id: Uuid::nil(),
            language: Language::Python,
            status: ExecStatus::OomKilled,
            exit_code: 137,
            stdout: String::new(),
            stderr: "Killed".into(),
            stdout_truncated: false,
            stderr_truncated: false,
            timed_out: false,
            oom_killed: true,
            duration: Duration::from_millis(1500),
            started_at: DateTime::<Utc>::UNIX_EPOCH,
            finished_at: DateTime::<Utc>::UNIX_EPOCH,
            warm: true,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["language"], "python");
        assert_eq!(v["status"], "oom_killed");
        assert_eq!(v["exit_code"], 137);
        assert_eq!(v["duration_ms"], 1500);
        assert_eq!(v["timed_out"], false);
        assert_eq!(v["oom_killed"], true);
    }
}
