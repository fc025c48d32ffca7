//! The provider trait.

use crate::error::Result;
use crate::request::ChatRequest;
use crate::response::ChatResponse;
use crate::stream::ChatStream;
use std::fmt;

/// A chat model behind an API. Implementations validate the request before sending anything.
#[async_trait::async_trait]
pub trait LlmProvider: Send + Sync + fmt::Debug {
    /// The provider's registry name ("openai", "anthropic", "replay").
    fn name(&self) -> &str;

    /// One complete answer.
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse>;

    /// A streamed answer; its last event carries the assembled response with usage.
    async fn stream(&self, req: &ChatRequest) -> Result<ChatStream>;
}
