//! Token usage of one LLM call.

use serde::{Deserialize, Serialize};

/// What one LLM call used, normalised across providers: `prompt` counts every input token
/// (for OpenAI `prompt_tokens`; for Anthropic `input_tokens + cache_read_input_tokens +
/// cache_creation_input_tokens`), `completion` every output token, reasoning included.
/// `cached_prompt`, `cache_write` and `reasoning` say how many of those were billed at their
/// own price.
///
/// Its JSON is the shape stored in step outputs since the first release
/// (`prompt_tokens`, `completion_tokens`, `cached_prompt_tokens`, `cache_write_tokens`,
/// `reasoning_tokens`, and `model` when known), so rows written before this type read back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenUsage {
    /// The model, as the provider named it (empty when not known).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub model: String,
    /// All input tokens.
    #[serde(rename = "prompt_tokens")]
    pub prompt: u64,
    /// All output tokens.
    #[serde(rename = "completion_tokens")]
    pub completion: u64,
    /// Input tokens read from the provider's prompt cache.
    #[serde(rename = "cached_prompt_tokens")]
    pub cached_prompt: u64,
    /// Input tokens written to the provider's prompt cache.
    #[serde(rename = "cache_write_tokens")]
    pub cache_write: u64,
    /// Output tokens spent on reasoning.
    #[serde(rename = "reasoning_tokens")]
    pub reasoning: u64,
}

impl TokenUsage {
    /// Prompt and completion tokens of `model`.
    pub fn new(model: impl Into<String>, prompt: u64, completion: u64) -> Self {
        TokenUsage {
            model: model.into(),
            prompt,
            completion,
            ..Default::default()
        }
    }

    /// With cached (read) prompt tokens.
    pub fn cached_prompt(mut self, n: u64) -> Self {
        self.cached_prompt = n;
        self
    }

    /// With cache-write prompt tokens.
    pub fn cache_write(mut self, n: u64) -> Self {
        self.cache_write = n;
        self
    }

    /// With reasoning tokens.
    pub fn reasoning(mut self, n: u64) -> Self {
        self.reasoning = n;
        self
    }

    /// With the model named.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// Prompt plus completion.
    pub fn total_tokens(&self) -> u64 {
        self.prompt + self.completion
    }

    /// What is inconsistent, if anything: cached and cache-write tokens are part of the prompt,
    /// reasoning tokens part of the completion.
    pub fn inconsistency(&self) -> Option<String> {
        if self
            .cached_prompt
            .checked_add(self.cache_write)
            .is_none_or(|n| n > self.prompt)
        {
            return Some(format!(
                "cached ({}) plus cache-write ({}) tokens exceed the prompt tokens ({}); \
                 prompt must include them",
                self.cached_prompt, self.cache_write, self.prompt
            ));
        }
        if self.reasoning > self.completion {
            return Some(format!(
                "reasoning tokens ({}) exceed the completion tokens ({}); completion must include them",
                self.reasoning, self.completion
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_usage_stored_before_this_type_existed() {
        // A step output's `usage` as the runtime wrote it (no model).
        let old = serde_json::json!({
            "prompt_tokens": 12, "completion_tokens": 7, "cached_prompt_tokens": 4,
            "cache_write_tokens": 0, "reasoning_tokens": 2
        });
        let u: TokenUsage = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(u, TokenUsage::new("", 12, 7).cached_prompt(4).reasoning(2));
        assert_eq!(serde_json::to_value(&u).unwrap(), old);
        let named = u.model("gpt-4o");
        assert_eq!(serde_json::to_value(&named).unwrap()["model"], "gpt-4o");
    }

    #[test]
    fn inconsistent_counts_are_named() {
        assert!(TokenUsage::new("m", 10, 5).inconsistency().is_none());
        assert!(
            TokenUsage::new("m", 10, 5)
                .cached_prompt(8)
                .cache_write(3)
                .inconsistency()
                .unwrap()
                .contains("exceed the prompt")
        );
        assert!(
            TokenUsage::new("m", 10, 5)
                .reasoning(6)
                .inconsistency()
                .unwrap()
                .contains("reasoning")
        );
    }
}
