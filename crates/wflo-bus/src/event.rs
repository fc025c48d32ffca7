//! The event envelope and its typed payloads live in the shared vocabulary (`wflo-types`):
//! every crate that writes an event builds the same typed envelope. This crate re-exports them
//! and carries them to and from Kafka.

pub use wflo_types::event::*;
