//! Token counting with tiktoken (the BPE tables are compiled in; the encoders are process-wide
//! singletons, loaded on first use). Pure: no IO.
//!
//! * `o200k_base`: gpt-4o, gpt-4.1, gpt-4.5, gpt-5 and the o-series.
//! * `cl100k_base`: gpt-4, gpt-4-turbo, gpt-3.5.
//! * Claude: Anthropic publishes no offline tokenizer for Claude 3 and later. Wflo counts with
//!   `cl100k_base` and adds [`CLAUDE_ESTIMATE_PERCENT`] percent, rounded up, so the estimate
//!   errs high (a budget reservation must not be under-estimated). Such counts are flagged
//!   [`TokenCount::estimate`]; the provider's reported usage settles the real cost.
//!
//! Chat messages add the framing OpenAI documents (its cookbook's `num_tokens_from_messages`):
//! 3 tokens per message, 1 more when the message has a `name`, and 3 that prime the reply.

use crate::{Error, Result};
use std::str::FromStr;

/// Percent added to a `cl100k_base` count to estimate a Claude count.
pub const CLAUDE_ESTIMATE_PERCENT: u64 = 20;
/// Framing tokens per chat message.
pub const TOKENS_PER_MESSAGE: u64 = 3;
/// Extra tokens for a message `name`.
pub const TOKENS_PER_NAME: u64 = 1;
/// Tokens that prime the assistant's reply.
pub const REPLY_PRIMING_TOKENS: u64 = 3;

/// How a model's tokens are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Tokenizer {
    /// OpenAI `o200k_base` (exact).
    O200kBase,
    /// OpenAI `cl100k_base` (exact).
    Cl100kBase,
    /// Claude: `cl100k_base` plus [`CLAUDE_ESTIMATE_PERCENT`] (an estimate).
    ClaudeEstimate,
}

impl FromStr for Tokenizer {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "o200k_base" => Ok(Tokenizer::O200kBase),
            "cl100k_base" => Ok(Tokenizer::Cl100kBase),
            "claude_estimate" => Ok(Tokenizer::ClaudeEstimate),
            other => Err(Error::InvalidConfig {
                what: "tokenizer",
                detail: format!("`{other}` is not one of o200k_base, cl100k_base, claude_estimate"),
            }),
        }
    }
}

/// A token count, and whether it is an estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCount {
    /// Tokens.
    pub tokens: u64,
    /// `true` when approximated (Claude), `false` when exact.
    pub estimate: bool,
    /// How it was counted.
    pub tokenizer: Tokenizer,
}

/// A chat message to count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`.
    pub role: String,
    /// Text content.
    pub content: String,
    /// Optional participant name.
    pub name: Option<String>,
}

impl ChatMessage {
    /// A message.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            name: None,
        }
    }
}

fn strip_prefix(model: &str) -> String {
    let m = model.trim().to_ascii_lowercase();
    match m.rsplit_once('/') {
        Some((_, bare)) => bare.to_string(),
        None => m,
    }
}

impl Tokenizer {
    /// The tokenizer of a model family, from its name (provider prefix allowed); `None` when
    /// the family is not known (give the model a `tokenizer` in the price catalogue).
    pub fn for_model(model: &str) -> Option<Tokenizer> {
        let m = strip_prefix(model);
        let starts = |p: &[&str]| p.iter().any(|p| m.starts_with(p));
        if starts(&[
            "gpt-4o",
            "chatgpt-4o",
            "gpt-4.1",
            "gpt-4.5",
            "gpt-5",
            "o1",
            "o3",
            "o4",
            "gpt-oss",
        ]) {
            Some(Tokenizer::O200kBase)
        } else if starts(&[
            "gpt-4",
            "gpt-3.5",
            "gpt-35",
            "text-embedding-3",
            "text-embedding-ada",
        ]) {
            Some(Tokenizer::Cl100kBase)
        } else if m.starts_with("claude") {
            Some(Tokenizer::ClaudeEstimate)
        } else {
            None
        }
    }

    /// The name used in price files.
    pub fn as_str(self) -> &'static str {
        match self {
            Tokenizer::O200kBase => "o200k_base",
            Tokenizer::Cl100kBase => "cl100k_base",
            Tokenizer::ClaudeEstimate => "claude_estimate",
        }
    }

    /// Whether counts are estimates.
    pub fn is_estimate(self) -> bool {
        self == Tokenizer::ClaudeEstimate
    }

    fn bpe(self) -> &'static tiktoken_rs::CoreBPE {
        match self {
            Tokenizer::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Tokenizer::Cl100kBase | Tokenizer::ClaudeEstimate => {
                tiktoken_rs::cl100k_base_singleton()
            }
        }
    }

    /// The raw BPE count (special-token text is counted as ordinary text).
    fn raw(self, text: &str) -> u64 {
        if text.is_empty() {
            return 0;
        }
        self.bpe().count_ordinary(text) as u64
    }

    fn finish(self, raw: u64) -> TokenCount {
        let tokens = if self.is_estimate() {
            (raw * (100 + CLAUDE_ESTIMATE_PERCENT)).div_ceil(100)
        } else {
            raw
        };
        TokenCount {
            tokens,
            estimate: self.is_estimate(),
            tokenizer: self,
        }
    }

    /// Counts the tokens of a text.
    pub fn count(self, text: &str) -> TokenCount {
        self.finish(self.raw(text))
    }

    /// Counts a chat prompt with its per-message framing and the reply priming.
    pub fn count_messages(self, messages: &[ChatMessage]) -> TokenCount {
        let mut raw = REPLY_PRIMING_TOKENS;
        for m in messages {
            raw += TOKENS_PER_MESSAGE + self.raw(&m.role) + self.raw(&m.content);
            if let Some(name) = &m.name {
                raw += TOKENS_PER_NAME + self.raw(name);
            }
        }
        self.finish(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        use Tokenizer::*;
        for (m, t) in [
            ("gpt-4o", O200kBase),
            ("openai/gpt-4o-mini", O200kBase),
            ("gpt-4.1-nano", O200kBase),
            ("gpt-5", O200kBase),
            ("o1", O200kBase),
            ("o3-mini", O200kBase),
            ("o4-mini", O200kBase),
            ("gpt-4", Cl100kBase),
            ("gpt-4-turbo", Cl100kBase),
            ("gpt-3.5-turbo-0613", Cl100kBase),
            ("claude-3-5-sonnet-20241022", ClaudeEstimate),
            ("anthropic/claude-sonnet-4-5", ClaudeEstimate),
        ] {
            assert_eq!(Tokenizer::for_model(m), Some(t), "{m}");
        }
        assert_eq!(Tokenizer::for_model("llama-3"), None);
    }

    #[test]
    fn known_counts() {
        // Reference counts from OpenAI's tiktoken.
        assert_eq!(Tokenizer::Cl100kBase.count("hello world").tokens, 2);
        assert_eq!(Tokenizer::O200kBase.count("hello world").tokens, 2);
        assert_eq!(Tokenizer::Cl100kBase.count("tiktoken is great!").tokens, 6);
        assert_eq!(Tokenizer::Cl100kBase.count("").tokens, 0);
        // Special-token text is ordinary text, never a control token.
        assert!(Tokenizer::Cl100kBase.count("<|endoftext|>").tokens > 1);
        assert!(!Tokenizer::O200kBase.count("x").estimate);
    }

    #[test]
    fn claude_is_an_estimate_that_errs_high() {
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
        let exact = Tokenizer::Cl100kBase.count(&text).tokens;
        let c = Tokenizer::ClaudeEstimate.count(&text);
        assert!(c.estimate);
        assert_eq!(c.tokens, (exact * 120).div_ceil(100));
        assert!(c.tokens > exact);
    }

    #[test]
    fn chat_overhead_matches_the_cookbook() {
        // OpenAI cookbook example: these messages are 129 prompt tokens for gpt-4 / gpt-3.5
        // (cl100k_base) as reported by the API.
        let msgs = vec![
            ChatMessage::new("system", "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."),
            ChatMessage { role: "system".into(), content: "New synergies will help drive top-line growth.".into(), name: Some("example_user".into()) },
            ChatMessage { role: "system".into(), content: "Things working well together will increase revenue.".into(), name: Some("example_assistant".into()) },
            ChatMessage { role: "system".into(), content: "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage.".into(), name: Some("example_user".into()) },
            ChatMessage { role: "system".into(), content: "Let's talk later when we're less busy about how to do better.".into(), name: Some("example_assistant".into()) },
            ChatMessage::new("user", "This late pivot means we don't have time to boil the ocean for the client deliverable."),
        ];
        assert_eq!(Tokenizer::Cl100kBase.count_messages(&msgs).tokens, 129);
        // Empty conversation: only the reply priming.
        assert_eq!(Tokenizer::O200kBase.count_messages(&[]).tokens, 3);
    }

    #[test]
    fn tokenizer_names_round_trip() {
        for t in [
            Tokenizer::O200kBase,
            Tokenizer::Cl100kBase,
            Tokenizer::ClaudeEstimate,
        ] {
            assert_eq!(t.as_str().parse::<Tokenizer>().unwrap(), t);
        }
        assert!("gpt2".parse::<Tokenizer>().is_err());
    }
}
