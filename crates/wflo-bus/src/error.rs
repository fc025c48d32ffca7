//! The one error type of wflo-bus.

/// Errors of the event bus. Messages are lower-case and say what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value was refused by its builder.
    #[error("invalid bus configuration: {0}")]
    InvalidConfig(String),
    /// No bootstrap server answered.
    #[error(
        "cannot reach the kafka brokers at {servers}: {reason}; check that a broker runs there \
         (`cargo xtask services up kafka`) and that the bootstrap servers are right"
    )]
    Unreachable {
        /// The configured bootstrap servers, comma-separated.
        servers: String,
        /// What failed.
        reason: String,
    },
    /// The topic does not exist on the broker.
    #[error("topic `{topic}` does not exist; create it with `ensure_topics`")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// The event is larger than the configured maximum message size; nothing was sent.
    #[error(
        "message of {size} bytes for topic `{topic}` exceeds the limit of {limit} bytes; \
         shrink the event or raise `max_message_size`"
    )]
    MessageTooLarge {
        /// The topic.
        topic: String,
        /// Key, value and header bytes of the message.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Creating or checking a topic failed.
    #[error("cannot set up topic `{topic}`: {reason}; check the broker's log and permissions")]
    TopicSetup {
        /// The topic.
        topic: String,
        /// The broker's reason.
        reason: String,
    },
    /// The broker refused or failed a request.
    #[error("kafka request failed while {context}: {reason}")]
    Broker {
        /// What was being done.
        context: String,
        /// The client's or broker's reason.
        reason: String,
        /// Whether retrying later may succeed (connection loss, leader change, timeout).
        retriable: bool,
    },
    /// An event could not be encoded or decoded.
    #[error("malformed event: {0}")]
    Malformed(String),
    /// The database (outbox, consumer offsets) failed.
    #[error(transparent)]
    Db(#[from] wflo_db::Error),
    /// The operation was cancelled by its shutdown token.
    #[error("cancelled by shutdown")]
    Cancelled,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<wflo_types::Error> for Error {
    fn from(e: wflo_types::Error) -> Self {
        match e {
            wflo_types::Error::Malformed(m) => Error::Malformed(m),
            other => Error::Malformed(other.to_string()),
        }
    }
}

impl Error {
    /// Whether retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. }
                | Error::Broker {
                    retriable: true,
                    ..
                }
        )
    }

    /// Maps an rskafka client error.
    pub(crate) fn kafka(context: impl Into<String>, err: &rskafka::client::error::Error) -> Error {
        use rskafka::client::error::{Error as K, ProtocolError as P};
        let context = context.into();
        match err {
            K::ServerError {
                protocol_error: P::UnknownTopicOrPartition,
                request,
                ..
            } => Error::UnknownTopic {
                topic: match request {
                    rskafka::client::error::RequestContext::Topic(t)
                    | rskafka::client::error::RequestContext::Partition(t, _) => t.clone(),
                    rskafka::client::error::RequestContext::Fetch { topic_name, .. } => {
                        topic_name.clone()
                    }
                    _ => String::new(),
                },
            },
            K::ServerError {
                protocol_error: P::MessageTooLarge | P::RecordListTooLarge,
                ..
            } => Error::Broker {
                context,
                reason: lower(err),
                retriable: false,
            },
            K::ServerError { protocol_error, .. } => {
                let retriable = matches!(
                    protocol_error,
                    P::LeaderNotAvailable
                        | P::NotLeaderOrFollower
                        | P::RequestTimedOut
                        | P::NetworkException
                        | P::NotEnoughReplicas
                        | P::NotEnoughReplicasAfterAppend
                        | P::CoordinatorNotAvailable
                        | P::NotController
                        | P::KafkaStorageError
                        | P::OffsetNotAvailable
                );
                Error::Broker {
                    context,
                    reason: lower(err),
                    retriable,
                }
            }
            K::InvalidResponse(_) => Error::Broker {
                context,
                reason: lower(err),
                retriable: false,
            },
            _ => Error::Broker {
                context,
                reason: lower(err),
                retriable: true,
            },
        }
    }
}

fn lower(e: &dyn std::fmt::Display) -> String {
    e.to_string().to_lowercase()
}
