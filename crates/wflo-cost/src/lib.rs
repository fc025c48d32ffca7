//! # wflo-cost — prices, token counts, exact cost math and budgets that cannot be overshot
//!
//! *Inner crate of Wflo: its API may change in any release. Use it through `wflo-core`, the one
//! public, semver'd facade.*
//!
//! * **Prices** ([`PriceCatalog`]): an embedded, dated catalogue (`data/prices.toml`, snapshot
//!   of **2025-11-20**, taken from the OpenAI (<https://openai.com/api/pricing/>) and Anthropic
//!   (<https://docs.anthropic.com/en/docs/about-claude/pricing>) pricing pages and
//!   cross-checked with LiteLLM's `model_prices_and_context_window.json`). Input, output, cache
//!   read, cache write and reasoning prices in `Decimal` dollars per 1M tokens. Provider
//!   prefixes (`openai/`, `anthropic/`) and dated suffixes resolve; an unknown model is
//!   [`Error::UnknownModel`] listing the closest names. Override or add prices with
//!   [`PriceCatalog::builder`] (a prices file's text, or single entries).
//! * **Tokens** ([`Tokenizer`]): tiktoken `o200k_base` / `cl100k_base` (compiled in), chat
//!   framing per message, and a flagged estimate for Claude. Pricing and counting do no IO.
//! * **Cost math** ([`TokenUsage`] → [`CostBreakdown`]): exact `Decimal`, never a float.
//! * **Ledger and budgets** ([`CostTracker`], persisted through wflo-db on PostgreSQL or
//!   SQLite): `track` records a call and accumulates it on the execution and step atomically;
//!   `reserve` holds a call's worst-case cost in every budget that applies (execution,
//!   workflow, tenant or agent, total or per day/month) all or nothing, idempotent per request
//!   id and expiring; `settle` charges the actual cost once; crossing 50/75/90/100 % writes
//!   one `cost.budget_alert` event per threshold to the outbox.
//! * **Group commit**: reserves, settles and releases go through the tracker's writer, which
//!   commits the operations waiting at that moment in one transaction (wflo-db's
//!   `Budgets::apply`: a fixed number of statements per batch, every budget locked once, each
//!   operation decided in order on the locked rows). A call resolves only after the commit that
//!   holds it; the outcome is that of running the calls one after another. A hot budget shared
//!   by many concurrent calls then costs one lock hand-off and one commit per batch, not per
//!   call.
//!
//! ```
//! use wflo_cost::{PriceCatalog, TokenUsage};
//! use rust_decimal::Decimal;
//! let cost = PriceCatalog::embedded().cost(&TokenUsage::new("gpt-4", 100, 50))?;
//! assert_eq!(cost.total_usd, Decimal::new(6, 3)); // $0.006
//! # Ok::<(), wflo_cost::Error>(())
//! ```

mod budget;
mod config;
mod error;
mod prices;
mod report;
mod tokens;
mod tracker;
mod usage;

pub use budget::{
    BudgetPolicy, BudgetReservation, BudgetState, Period, ReserveRequest, Scope, Settled,
    ThresholdAlert, Tracked,
};
pub use config::{CostConfig, CostConfigBuilder};
pub use error::{Error, Result};
pub use prices::{EMBEDDED_PRICES, ModelPrice, PriceCatalog, PriceCatalogBuilder, PricedModel};
pub use report::{CostQuery, CostSummary};
pub use tokens::{
    CLAUDE_ESTIMATE_PERCENT, ChatMessage, REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE,
    TOKENS_PER_NAME, TokenCount, Tokenizer,
};
pub use tracker::{BUDGET_ALERT_EVENT, COSTS_TOPIC, CostTracker, EVENT_SOURCE};
pub use usage::{CostBreakdown, CostEstimate, TokenUsage};
