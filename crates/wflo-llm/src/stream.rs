//! Streaming responses: deltas as they arrive, then the assembled response with usage.

use crate::breaker::{Outcome, Permit};
use crate::error::{Error, Result};
use crate::response::{ChatResponse, FinishReason, ToolCall, Usage};
use eventsource_stream::Eventsource;
use futures::stream::{BoxStream, Stream, StreamExt};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// One event of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// More answer text.
    TextDelta(String),
    /// A piece of a tool call; `id` and `name` come with its first piece.
    ToolCallDelta {
        /// Position of the call in the answer.
        index: usize,
        /// Call id (first piece only).
        id: Option<String>,
        /// Function name (first piece only).
        name: Option<String>,
        /// More of the arguments' JSON text.
        arguments: String,
    },
    /// The end: the whole response, usage included. Always the last event.
    Done(ChatResponse),
}

/// A stream of [`StreamEvent`]s ending with [`StreamEvent::Done`].
pub struct ChatStream {
    inner: BoxStream<'static, Result<StreamEvent>>,
}

impl fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatStream").finish_non_exhaustive()
    }
}

impl ChatStream {
    /// Wraps a stream of events.
    pub fn new(inner: impl Stream<Item = Result<StreamEvent>> + Send + 'static) -> Self {
        Self {
            inner: inner.boxed(),
        }
    }

    /// Drains the stream and returns the assembled response.
    pub async fn into_response(mut self) -> Result<ChatResponse> {
        while let Some(ev) = self.next().await {
            if let StreamEvent::Done(resp) = ev? {
                return Ok(resp);
            }
        }
        Err(Error::Stream {
            provider: "unknown".into(),
            message: "stream ended without a final response".into(),
        })
    }
}

impl Stream for ChatStream {
    type Item = Result<StreamEvent>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Collects deltas into the final response.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    pub(crate) text: String,
    pub(crate) tool_calls: BTreeMap<usize, ToolCall>,
    pub(crate) finish_reason: Option<FinishReason>,
    pub(crate) model: String,
    pub(crate) usage: Option<Usage>,
    pub(crate) request_id: Option<String>,
    /// Anthropic: content block index -> tool call index.
    pub(crate) block_to_tool: BTreeMap<usize, usize>,
}

impl Assembler {
    pub(crate) fn tool_delta(
        &mut self,
        index: usize,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
        out: &mut VecDeque<StreamEvent>,
    ) {
        let call = self.tool_calls.entry(index).or_insert_with(|| ToolCall {
            id: String::new(),
            name: String::new(),
            arguments: String::new(),
        });
        if let Some(id) = &id {
            call.id.clone_from(id);
        }
        if let Some(name) = &name {
            call.name.clone_from(name);
        }
        call.arguments.push_str(&arguments);
        out.push_back(StreamEvent::ToolCallDelta {
            index,
            id,
            name,
            arguments,
        });
    }

    pub(crate) fn text_delta(&mut self, t: String, out: &mut VecDeque<StreamEvent>) {
        if !t.is_empty() {
            self.text.push_str(&t);
            out.push_back(StreamEvent::TextDelta(t));
        }
    }

    fn finish(self, provider: &str, latency: Duration) -> Result<ChatResponse> {
        let Some(usage) = self.usage else {
            return Err(Error::Stream {
                provider: provider.into(),
                message:
                    "stream ended without usage; the server must report token usage in streams"
                        .into(),
            });
        };
        Ok(ChatResponse {
            text: self.text,
            tool_calls: self.tool_calls.into_values().collect(),
            finish_reason: self
                .finish_reason
                .unwrap_or_else(|| FinishReason::Other("unknown".into())),
            model: self.model,
            usage,
            request_id: self.request_id,
            latency,
        })
    }
}

/// What a provider does with one SSE event.
pub(crate) enum Step {
    /// Keep reading.
    Continue,
    /// The stream is complete.
    End,
}

/// A provider's SSE event handler: (event name, data, assembler, events out) -> step.
pub(crate) type Handler =
    fn(&str, &str, &mut Assembler, &mut VecDeque<StreamEvent>) -> Result<Step, String>;

struct State {
    provider: &'static str,
    events: BoxStream<'static, Result<eventsource_stream::Event, String>>,
    asm: Option<Assembler>,
    pending: VecDeque<StreamEvent>,
    permit: Option<Permit>,
    handler: Handler,
    idle_timeout: Duration,
    start: Instant,
}

/// Turns an SSE HTTP response into a [`ChatStream`]. The breaker permit is settled when the
/// stream ends (success), fails (failure) or is dropped early (neutral).
pub(crate) fn sse(
    provider: &'static str,
    resp: reqwest::Response,
    permit: Permit,
    asm: Assembler,
    handler: Handler,
    idle_timeout: Duration,
    start: Instant,
) -> ChatStream {
    let events = resp
        .bytes_stream()
        .eventsource()
        .map(|r| r.map_err(|e| e.to_string()))
        .boxed();
    let state = State {
        provider,
        events,
        asm: Some(asm),
        pending: VecDeque::new(),
        permit: Some(permit),
        handler,
        idle_timeout,
        start,
    };
    ChatStream::new(futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            let asm = st.asm.as_mut()?;
            let fail = |st: &mut State, message: String| {
                st.asm = None;
                if let Some(p) = st.permit.take() {
                    p.record(Outcome::Failure);
                }
                Error::Stream {
                    provider: st.provider.into(),
                    message,
                }
            };
            let next = match tokio::time::timeout(st.idle_timeout, st.events.next()).await {
                Err(_) => {
                    let msg = format!("no data for {:?}; the server stalled", st.idle_timeout);
                    let e = fail(&mut st, msg);
                    return Some((Err(e), st));
                }
                Ok(n) => n,
            };
            let step = match next {
                None => Ok(Step::End),
                Some(Err(e)) => Err(format!("reading the event stream: {e}")),
                Some(Ok(ev)) => (st.handler)(&ev.event, &ev.data, asm, &mut st.pending),
            };
            match step {
                Ok(Step::Continue) => {}
                Ok(Step::End) => {
                    let asm = st.asm.take().unwrap_or_default();
                    let r = asm.finish(st.provider, st.start.elapsed());
                    if let Some(p) = st.permit.take() {
                        p.record(if r.is_ok() {
                            Outcome::Success
                        } else {
                            Outcome::Failure
                        });
                    }
                    // Deltas produced by the last event go out before Done.
                    match r {
                        Ok(resp) => st.pending.push_back(StreamEvent::Done(resp)),
                        Err(e) => return Some((Err(e), st)),
                    }
                }
                Err(msg) => {
                    let e = fail(&mut st, msg);
                    return Some((Err(e), st));
                }
            }
        }
    }))
}
