//! The one error type of wflo-cost.

use rust_decimal::Decimal;

/// Errors of pricing, counting and budgets. Messages are lower-case and say what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model is not in the price catalogue.
    #[error(
        "unknown model `{model}`: no price is known for it{}; add its price with \
         `PriceCatalog::builder().price(..)` or a prices file",
        if suggestions.is_empty() { String::new() } else { format!(" (closest known: {})", suggestions.join(", ")) }
    )]
    UnknownModel {
        /// The name asked for.
        model: String,
        /// The closest known names, best first.
        suggestions: Vec<String>,
    },
    /// A prices file or price entry cannot be used.
    #[error("invalid price catalogue: {0}; fix the prices file or entry")]
    InvalidCatalogue(String),
    /// Token counts that cannot be right (for example more cached than prompt tokens).
    #[error("invalid token usage for `{model}`: {detail}")]
    InvalidUsage {
        /// The model.
        model: String,
        /// What is wrong.
        detail: String,
    },
    /// A configuration value is refused.
    #[error("invalid {what}: {detail}")]
    InvalidConfig {
        /// Which setting.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A budget limit of zero or less.
    #[error("the budget limit for `{scope}` must be greater than zero, got {limit} USD")]
    InvalidLimit {
        /// The scope.
        scope: String,
        /// The refused limit.
        limit: Decimal,
    },
    /// A reservation was refused: a budget has no room for the requested amount.
    #[error(
        "budget `{scope}` exceeded: limit {limit} USD, spent {spent} USD, reserved {reserved} USD, \
         requested {requested} USD; raise the limit or lower max output tokens"
    )]
    BudgetExceeded {
        /// The scope that refused (with its period, e.g. `tenant:acme@2026-11`).
        scope: String,
        /// Its limit.
        limit: Decimal,
        /// Spent when the reservation was refused.
        spent: Decimal,
        /// Reserved by others when the reservation was refused.
        reserved: Decimal,
        /// The amount asked for.
        requested: Decimal,
    },
    /// The reservation does not exist.
    #[error("budget reservation {0} not found; reserve before settling")]
    UnknownReservation(String),
    /// The reservation was settled or released already: nothing was charged again.
    #[error(
        "budget reservation {id} is already {status}; it cannot be settled or released again \
         (nothing was charged twice)"
    )]
    ReservationClosed {
        /// The reservation.
        id: String,
        /// Its status.
        status: String,
    },
    /// The ledger (database) failed.
    #[error("cost ledger: {0}")]
    Db(#[from] wflo_db::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
