//! This crate's error type.

/// Everything that can go wrong talking to Temporal or running a worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server did not answer at the configured address.
    #[error(
        "cannot reach the temporal server at {address}: {reason}; start a dev server with \
         `cargo xtask services up temporal` (or `temporal server start-dev`), or point \
         TemporalConfig::builder().address(..) at a running server"
    )]
    Unreachable {
        /// The address that was tried.
        address: String,
        /// What the connection attempt reported.
        reason: String,
    },

    /// The configuration is invalid.
    #[error("invalid temporal configuration: {0}")]
    InvalidConfig(String),

    /// A request was refused before anything was sent (bad input).
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// A workflow with this id is already running.
    #[error("workflow `{workflow_id}` is already running; pick another workflow id or wait for it")]
    AlreadyStarted {
        /// The workflow id.
        workflow_id: String,
    },

    /// No workflow with this id exists in the namespace.
    #[error(
        "workflow `{workflow_id}` was not found in namespace `{namespace}`; check the id and the namespace"
    )]
    NotFound {
        /// The workflow id.
        workflow_id: String,
        /// The namespace searched.
        namespace: String,
    },

    /// The workflow ended in failure.
    #[error("workflow `{workflow_id}` failed: {message}")]
    WorkflowFailed {
        /// The workflow id.
        workflow_id: String,
        /// The failure and its causes, outermost first.
        message: String,
    },

    /// The workflow was cancelled.
    #[error("workflow `{workflow_id}` was cancelled")]
    Cancelled {
        /// The workflow id.
        workflow_id: String,
    },

    /// The workflow was terminated (not cancelled: nothing in it ran to clean up).
    #[error("workflow `{workflow_id}` was terminated")]
    Terminated {
        /// The workflow id.
        workflow_id: String,
    },

    /// The workflow ran past its execution timeout.
    #[error("workflow `{workflow_id}` timed out")]
    TimedOut {
        /// The workflow id.
        workflow_id: String,
    },

    /// A query was refused, e.g. because the workflow is closed.
    #[error("query `{query}` of workflow `{workflow_id}` failed: {message}")]
    Query {
        /// The workflow id.
        workflow_id: String,
        /// The query name.
        query: &'static str,
        /// The server's answer.
        message: String,
    },

    /// A call to the server failed.
    #[error(
        "temporal {operation} failed: {message}; check the server with `temporal operator cluster health`"
    )]
    Rpc {
        /// What was being done, e.g. `start workflow`.
        operation: &'static str,
        /// The server's (or client's) message.
        message: String,
    },

    /// A value could not be encoded or decoded.
    #[error("cannot convert {what}: {message}")]
    Payload {
        /// What was converted.
        what: &'static str,
        /// Why it failed.
        message: String,
    },

    /// The worker could not be created or stopped with an error.
    #[error("temporal worker on task queue `{task_queue}` failed: {message}")]
    Worker {
        /// The task queue.
        task_queue: String,
        /// What failed.
        message: String,
    },

    /// The sandbox (for code activities) is misconfigured.
    #[error(transparent)]
    Sandbox(#[from] wflo_sandbox::Error),
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The message of an error and of each of its sources, joined by `: `.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_names_the_address_and_how_to_start_a_server() {
        let e = Error::Unreachable {
            address: "http://127.0.0.1:1".into(),
            reason: "connection refused".into(),
        };
        let t = e.to_string();
        assert!(t.contains("http://127.0.0.1:1"));
        assert!(t.contains("cargo xtask services up temporal"));
        assert!(t.starts_with(char::is_lowercase));
        assert!(!t.ends_with('.'));
    }
}
