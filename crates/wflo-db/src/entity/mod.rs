//! sea-orm entities: private to this crate; the public API speaks in the domain types of
//! [`crate::repo`].
#![allow(unreachable_pub, missing_debug_implementations)]

pub(crate) mod api_token;
pub(crate) mod approval;
pub(crate) mod consumer_offset;
pub(crate) mod definition;
pub(crate) mod execution;
pub(crate) mod outbox;
pub(crate) mod rollback;
pub(crate) mod snapshot;
pub(crate) mod step;
pub(crate) mod webhook;
pub(crate) mod webhook_delivery;
