//! Typed repositories. Each is obtained from an [`crate::Executor`] (the pool or a
//! transaction) and speaks only in the domain types defined here.

mod api_tokens;
mod approvals;
mod budgets;
mod bus;
mod costs;
mod definitions;
mod executions;
mod rollbacks;
mod snapshots;
mod steps;
mod webhooks;

pub use api_tokens::{ApiToken, ApiTokens};
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
    Driver, Execution, ExecutionEngine, ExecutionFilter, ExecutionStatus, Executions, Lease,
    NewExecution, Outcome, Tokens,
};
pub use rollbacks::{NewRollback, Rollback, RollbackStatus, Rollbacks};
pub use snapshots::{Snapshot, Snapshots};
pub use steps::{NewStep, Step, StepStatus, Steps};
pub use webhooks::{
    ClaimedDelivery, DeliveryOutcome, DeliveryStatus, NewWebhook, Webhook, WebhookDelivery,
    WebhookEvent, WebhookFormat, Webhooks,
};

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

/// Declares an enum stored as upper-case text (the shared vocabulary's macro: `FromStr` fails
/// with `wflo_types::Error`, which converts into [`Error::Invalid`]).
macro_rules! text_enum {
    ($($t:tt)*) => { wflo_types::vocab_enum!($($t)*); };
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

/// The UUID of an id given as anything that converts to it (a typed id or a bare [`Uuid`]):
/// the repositories take typed ids and keep their entities on `Uuid`.
pub(crate) fn raw<T: Into<uuid::Uuid>>(id: impl Into<T>) -> uuid::Uuid {
    id.into().into()
}
