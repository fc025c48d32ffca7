//! Chat requests: messages, sampling parameters, tools, response format.

use crate::error::{Error, Result};
use crate::response::ToolCall;
use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The user's turn.
    User,
    /// The model's earlier turn (text and/or tool calls).
    Assistant,
    /// The result of a tool call the assistant asked for.
    Tool,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Author of the message.
    pub role: Role,
    /// Text content (may be empty for an assistant turn that only calls tools).
    pub content: String,
    /// Tool calls made in an assistant turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a [`Role::Tool`] message: the id of the call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    /// An assistant message with text only.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
    /// An assistant message that called tools (as returned in [`crate::ChatResponse::tool_calls`]).
    pub fn assistant_tool_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Self {
            tool_calls: calls,
            ..Self::new(Role::Assistant, content)
        }
    }
    /// The result of the tool call `call_id`.
    pub fn tool(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(call_id.into()),
            ..Self::new(Role::Tool, content)
        }
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Function name.
    pub name: String,
    /// What it does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments (an object schema).
    pub parameters: serde_json::Value,
}

impl Tool {
    /// A function tool.
    pub fn function(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: serde_json::Value,
    ) -> Self {
        Self {
            name: name.into(),
            description: Some(description.into()),
            parameters,
        }
    }
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call.
    Required,
    /// This tool, by name.
    Tool(String),
}

/// The shape of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// Schema name.
        name: String,
        /// The JSON Schema.
        schema: serde_json::Value,
        /// Ask the provider to enforce the schema strictly.
        strict: bool,
    },
}

/// A validated chat request. Build it with [`ChatRequest::builder`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatRequest {
    pub(crate) model: String,
    pub(crate) messages: Vec<Message>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) stop: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) seed: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) tools: Vec<Tool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_choice: Option<ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) response_format: Option<ResponseFormat>,
}

impl ChatRequest {
    /// Starts a request for `model`.
    pub fn builder(model: impl Into<String>) -> ChatRequestBuilder {
        ChatRequestBuilder {
            req: ChatRequest {
                model: model.into(),
                messages: Vec::new(),
                temperature: None,
                top_p: None,
                max_tokens: None,
                stop: Vec::new(),
                seed: None,
                tools: Vec::new(),
                tool_choice: None,
                response_format: None,
            },
        }
    }
    /// The model name as the provider knows it.
    pub fn model(&self) -> &str {
        &self.model
    }
    /// The conversation.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }
    /// Sampling temperature.
    pub fn temperature(&self) -> Option<f64> {
        self.temperature
    }
    /// Nucleus sampling.
    pub fn top_p(&self) -> Option<f64> {
        self.top_p
    }
    /// Maximum output tokens.
    pub fn max_tokens(&self) -> Option<u32> {
        self.max_tokens
    }
    /// Stop sequences.
    pub fn stop(&self) -> &[String] {
        &self.stop
    }
    /// Sampling seed.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }
    /// Tools the model may call.
    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }
    /// Tool choice.
    pub fn tool_choice(&self) -> Option<&ToolChoice> {
        self.tool_choice.as_ref()
    }
    /// Response format.
    pub fn response_format(&self) -> Option<&ResponseFormat> {
        self.response_format.as_ref()
    }

    /// Checks the request; providers call it again before sending anything.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidRequest(m));
        if self.model.trim().is_empty() {
            return bad("model is empty; name the model to call".into());
        }
        if self.messages.is_empty() {
            return bad("messages are empty; add at least one message".into());
        }
        if self.max_tokens == Some(0) {
            return bad("max_tokens is 0; set it to at least 1 or leave it unset".into());
        }
        if let Some(t) = self.temperature
            && !(t.is_finite() && (0.0..=2.0).contains(&t))
        {
            return bad(format!("temperature {t} is out of range; use 0.0 to 2.0"));
        }
        if let Some(p) = self.top_p
            && !(p.is_finite() && p > 0.0 && p <= 1.0)
        {
            return bad(format!("top_p {p} is out of range; use a value in (0, 1]"));
        }
        for (i, m) in self.messages.iter().enumerate() {
            if m.role == Role::Tool && m.tool_call_id.as_deref().is_none_or(str::is_empty) {
                return bad(format!(
                    "message {i} has role tool but no tool_call_id; build it with Message::tool(call_id, content)"
                ));
            }
            if m.role != Role::Assistant && !m.tool_calls.is_empty() {
                return bad(format!(
                    "message {i} carries tool calls but is not an assistant message"
                ));
            }
        }
        if self.stop.iter().any(String::is_empty) {
            return bad("a stop sequence is empty; remove it".into());
        }
        for t in &self.tools {
            if t.name.trim().is_empty() {
                return bad("a tool has an empty name; name every tool".into());
            }
            if !t.parameters.is_object() {
                return bad(format!(
                    "tool {} has parameters that are not a JSON object schema",
                    t.name
                ));
            }
        }
        match &self.tool_choice {
            Some(ToolChoice::Tool(name)) if !self.tools.iter().any(|t| &t.name == name) => {
                return bad(format!(
                    "tool_choice names tool {name:?} which is not among the request's tools"
                ));
            }
            Some(ToolChoice::Required) if self.tools.is_empty() => {
                return bad("tool_choice is required but the request has no tools".into());
            }
            _ => {}
        }
        Ok(())
    }
}

/// Builder of [`ChatRequest`]; [`ChatRequestBuilder::build`] validates.
#[derive(Debug, Clone)]
pub struct ChatRequestBuilder {
    req: ChatRequest,
}

impl ChatRequestBuilder {
    /// Appends a message.
    pub fn message(mut self, m: Message) -> Self {
        self.req.messages.push(m);
        self
    }
    /// Appends messages.
    pub fn messages(mut self, ms: impl IntoIterator<Item = Message>) -> Self {
        self.req.messages.extend(ms);
        self
    }
    /// Appends a system message.
    pub fn system(self, content: impl Into<String>) -> Self {
        self.message(Message::system(content))
    }
    /// Appends a user message.
    pub fn user(self, content: impl Into<String>) -> Self {
        self.message(Message::user(content))
    }
    /// Appends an assistant message.
    pub fn assistant(self, content: impl Into<String>) -> Self {
        self.message(Message::assistant(content))
    }
    /// Sampling temperature (0.0 to 2.0).
    pub fn temperature(mut self, t: f64) -> Self {
        self.req.temperature = Some(t);
        self
    }
    /// Nucleus sampling (0, 1].
    pub fn top_p(mut self, p: f64) -> Self {
        self.req.top_p = Some(p);
        self
    }
    /// Maximum output tokens (at least 1).
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.req.max_tokens = Some(n);
        self
    }
    /// Adds a stop sequence.
    pub fn stop(mut self, s: impl Into<String>) -> Self {
        self.req.stop.push(s.into());
        self
    }
    /// Sampling seed (providers without one ignore it).
    pub fn seed(mut self, seed: u64) -> Self {
        self.req.seed = Some(seed);
        self
    }
    /// Adds a tool.
    pub fn tool(mut self, t: Tool) -> Self {
        self.req.tools.push(t);
        self
    }
    /// Tool choice.
    pub fn tool_choice(mut self, c: ToolChoice) -> Self {
        self.req.tool_choice = Some(c);
        self
    }
    /// Response format.
    pub fn response_format(mut self, f: ResponseFormat) -> Self {
        self.req.response_format = Some(f);
        self
    }
    /// Validates and returns the request.
    pub fn build(self) -> Result<ChatRequest> {
        self.req.validate()?;
        Ok(self.req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_messages_are_refused() {
        let err = ChatRequest::builder("gpt-4o").build().unwrap_err();
        assert!(matches!(err, Error::InvalidRequest(ref m) if m.contains("messages are empty")));
    }

    #[test]
    fn zero_max_tokens_is_refused() {
        let err = ChatRequest::builder("gpt-4o")
            .user("hi")
            .max_tokens(0)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidRequest(ref m) if m.contains("max_tokens is 0")));
    }

    #[test]
    fn out_of_range_sampling_and_bad_tools_are_refused() {
        let base = || ChatRequest::builder("m").user("hi");
        assert!(base().temperature(2.5).build().is_err());
        assert!(base().temperature(f64::NAN).build().is_err());
        assert!(base().top_p(0.0).build().is_err());
        assert!(
            base()
                .tool_choice(ToolChoice::Tool("x".into()))
                .build()
                .is_err()
        );
        assert!(base().tool_choice(ToolChoice::Required).build().is_err());
        assert!(
            base()
                .tool(Tool::function("f", "d", serde_json::json!("not an object")))
                .build()
                .is_err()
        );
        assert!(ChatRequest::builder(" ").user("hi").build().is_err());
        let mut tool_msg = Message::tool("id", "x");
        tool_msg.tool_call_id = None;
        assert!(base().message(tool_msg).build().is_err());
        let ok = base()
            .temperature(0.0)
            .top_p(1.0)
            .max_tokens(1)
            .tool(Tool::function(
                "f",
                "d",
                serde_json::json!({"type": "object"}),
            ))
            .tool_choice(ToolChoice::Tool("f".into()))
            .build()
            .unwrap();
        assert_eq!(ok.max_tokens(), Some(1));
    }
}
