//! Typed repositories. Each is obtained from an [`crate::Executor`] (the pool or a
//! transaction) and speaks only in the domain types defined here.

mod approvals;
mod budgets;
mod bus;
mod costs;
mod definitions;
mod executions;
mod rollbacks;
mod snapshots;
mod steps;

pub use approvals::{
    Approval, ApprovalDecision, ApprovalStatus, Approvals, NewApproval, RiskLevel, TimeoutPolicy,
};
pub use budgets::{
    AlertEventFn, Budget, BudgetAlert, BudgetKey, BudgetOp, BudgetOpOutcome, Budgets,
    ChargeRecorded, CostEventFn, NewBudget, NewReservation, Reservation, ReservationStatus,
    ReserveOutcome, Settle, Settlement, ThresholdCrossed,
};
pub use bus::{ConsumerOffsets, NewOutboxEvent, Outbox, OutboxEvent};
pub use costs::{CostEntry, CostFilter, CostTotals, Costs, LedgerTokens, NewCostEntry};
pub use definitions::{Definition, Definitions, NewDefinition};
pub use executions::{
    Driver, Execution, ExecutionEngine, ExecutionStatus, Executions, Lease, NewExecution, Outcome,
    Tokens,
};
pub use rollbacks::{NewRollback, Rollback, RollbackStatus, Rollbacks};
pub use snapshots::{Snapshot, Snapshots};
pub use steps::{NewStep, Step, StepStatus, Steps};

use crate::Error;

/// Declares a repository struct borrowing an executor.
macro_rules! repository {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name<'a, E> {
            ex: &'a E,
        }

        impl<'a, E: crate::Executor> $name<'a, E> {
            pub(crate) fn new(ex: &'a E) -> Self {
                Self { ex }
            }

            #[allow(dead_code)]
            fn conn(&self) -> &'a <E as crate::db::sealed::Sealed>::Conn {
                crate::db::sealed::Sealed::conn(self.ex)
            }
        }
    };
}
pub(crate) use repository;

/// Declares a status enum stored as upper-case text, with `as_str`, `Display` and `FromStr`.
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored text.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::Error;
            fn from_str(s: &str) -> crate::Result<Self> {
                match s.to_ascii_uppercase().as_str() {
                    $($text => Ok($name::$variant),)+
                    _ => Err(crate::Error::Invalid {
                        entity: stringify!($name),
                        detail: format!(
                            "`{s}` is not one of {}",
                            [$($text),+].join(", ")
                        ),
                    }),
                }
            }
        }
    };
}
pub(crate) use text_enum;

/// Parses a stored status; a value outside the CHECK list means a corrupted row.
pub(crate) fn parse_stored<T>(s: &str) -> crate::Result<T>
where
    T: std::str::FromStr,
    T::Err: Into<Error>,
{
    s.parse().map_err(Into::into)
}

/// Maps a driver error with the entity it concerns.
pub(crate) fn db_err(
    entity: &'static str,
    context: &'static str,
) -> impl Fn(sea_orm::DbErr) -> Error {
    move |e| Error::from_db(entity, context, e)
}

/// Token and cost counters must not be negative and must fit the 64-bit columns.
pub(crate) fn counter(entity: &'static str, what: &str, n: u64) -> crate::Result<i64> {
    i64::try_from(n).map_err(|_| Error::Invalid {
        entity,
        detail: format!("{what} {n} is too large"),
    })
}
