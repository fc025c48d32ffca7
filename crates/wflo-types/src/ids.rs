//! Ids of the things that cross layers: one newtype each over a UUID, so an execution id cannot
//! be passed where a step id is expected.
//!
//! Each is stored and serialized as the bare UUID (`#[serde(transparent)]`), displays as the
//! plain UUID and parses from one; a text that is not a UUID is [`crate::Error::InvalidId`],
//! naming the kind of id.

use uuid::Uuid;

/// Declares an id newtype over [`Uuid`].
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// What the id names, in messages.
            pub const KIND: &'static str = $what;

            /// A new, time-ordered id (UUIDv7).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// The id whose UUID is `uuid`.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            /// A new id, as [`Self::new`].
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl From<&$name> for $name {
            fn from(id: &$name) -> Self {
                *id
            }
        }

        impl PartialEq<Uuid> for $name {
            fn eq(&self, other: &Uuid) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$name> for Uuid {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(&self.0, f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::Error;
            fn from_str(s: &str) -> $crate::Result<Self> {
                Uuid::parse_str(s.trim()).map(Self).map_err(|_| $crate::Error::InvalidId {
                    what: $what,
                    value: s.to_string(),
                })
            }
        }
    };
}

id_type!(
    /// An execution: one run of a workflow.
    ExecutionId,
    "execution id"
);
id_type!(
    /// A step of an execution.
    StepId,
    "step id"
);
id_type!(
    /// An approval an execution waits on.
    ApprovalId,
    "approval id"
);
id_type!(
    /// A snapshot of an execution's state, the point a rollback returns to.
    SnapshotId,
    "snapshot id"
);
id_type!(
    /// A budget reservation held while an LLM call runs.
    ReservationId,
    "reservation id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_the_bare_uuid() {
        let uuid = Uuid::now_v7();
        let id = ExecutionId::from_uuid(uuid);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{uuid}\""));
        let back: ExecutionId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
        let step: StepId = serde_json::from_value(serde_json::json!(uuid.to_string())).unwrap();
        assert_eq!(step.as_uuid(), uuid);
    }

    #[test]
    fn displays_and_parses_the_plain_uuid() {
        let id = SnapshotId::new();
        assert_eq!(id.to_string(), id.as_uuid().to_string());
        assert_eq!(id.to_string().parse::<SnapshotId>().unwrap(), id);
        assert_eq!(id.as_uuid().get_version_num(), 7);
    }

    #[test]
    fn a_parse_error_names_the_kind() {
        let err = "nope".parse::<ApprovalId>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("approval id"), "{msg}");
        assert!(msg.contains("nope"), "{msg}");
        assert!(msg.contains("uuid"), "{msg}");
        let err = "".parse::<ReservationId>().unwrap_err();
        assert!(err.to_string().contains("reservation id"), "{err}");
    }

    #[test]
    fn converts_and_compares_with_uuid() {
        let uuid = Uuid::now_v7();
        let id: StepId = uuid.into();
        assert_eq!(id, uuid);
        assert_eq!(uuid, id);
        assert_eq!(Uuid::from(id), uuid);
    }
}
