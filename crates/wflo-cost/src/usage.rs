//! Exact cost math: token usage to a cost breakdown in `Decimal` dollars, and the pre-flight
//! estimate a budget reservation holds.

use crate::prices::{ModelPrice, PriceCatalog};
use crate::tokens::{ChatMessage, TokenCount, Tokenizer};
use crate::{Error, Result};
use rust_decimal::Decimal;

/// Tokens one LLM call used, as the provider reported them (the shared vocabulary's type).
pub use wflo_types::TokenUsage;

/// Refuses usage whose counts contradict each other.
fn validate(usage: &TokenUsage) -> Result<()> {
    match usage.inconsistency() {
        None => Ok(()),
        Some(detail) => Err(Error::InvalidUsage {
            model: usage.model.clone(),
            detail,
        }),
    }
}

/// What a call cost, part by part, exact (no rounding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostBreakdown {
    /// The catalogue id the model resolved to.
    pub model: String,
    /// Uncached input tokens.
    pub input_usd: Decimal,
    /// Input tokens read from the cache.
    pub cached_input_usd: Decimal,
    /// Input tokens written to the cache.
    pub cache_write_usd: Decimal,
    /// Output tokens other than reasoning.
    pub output_usd: Decimal,
    /// Reasoning tokens.
    pub reasoning_usd: Decimal,
    /// The sum.
    pub total_usd: Decimal,
}

/// The pre-flight estimate of a call: what a budget reservation holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostEstimate {
    /// The catalogue id.
    pub model: String,
    /// Counted prompt tokens.
    pub prompt_tokens: TokenCount,
    /// The output tokens allowed (`max_tokens`).
    pub max_output_tokens: u64,
    /// `prompt × input price + max output × output price`.
    pub cost_usd: Decimal,
}

impl PriceCatalog {
    /// The exact cost of a call. Unknown models are [`Error::UnknownModel`].
    pub fn cost(&self, usage: &TokenUsage) -> Result<CostBreakdown> {
        validate(usage)?;
        let m = self.resolve(&usage.model)?;
        let p = &m.price;
        let c = ModelPrice::cost_of;
        let uncached = usage.prompt - usage.cached_prompt - usage.cache_write;
        let input_usd = c(p.input, uncached);
        let cached_input_usd = c(p.cached_input.unwrap_or(p.input), usage.cached_prompt);
        let cache_write_usd = c(p.cache_write.unwrap_or(p.input), usage.cache_write);
        let output_usd = c(p.output, usage.completion - usage.reasoning);
        let reasoning_usd = c(p.reasoning.unwrap_or(p.output), usage.reasoning);
        Ok(CostBreakdown {
            model: m.id.clone(),
            total_usd: (input_usd
                + cached_input_usd
                + cache_write_usd
                + output_usd
                + reasoning_usd)
                .normalize(),
            input_usd: input_usd.normalize(),
            cached_input_usd: cached_input_usd.normalize(),
            cache_write_usd: cache_write_usd.normalize(),
            output_usd: output_usd.normalize(),
            reasoning_usd: reasoning_usd.normalize(),
        })
    }

    /// How a model's tokens are counted: the catalogue entry's tokenizer, else its family's.
    pub fn tokenizer(&self, model: &str) -> Result<Tokenizer> {
        let m = self.resolve(model)?;
        m.price
            .tokenizer
            .or_else(|| Tokenizer::for_model(&m.id))
            .or_else(|| Tokenizer::for_model(model))
            .ok_or_else(|| Error::InvalidConfig {
                what: "tokenizer",
                detail: format!(
                    "no tokenizer is known for `{model}`; give it `tokenizer = \"cl100k_base\"` \
                     (or o200k_base) in the prices file"
                ),
            })
    }

    /// The worst-case cost of a call with `prompt_tokens` in and up to `max_output_tokens` out.
    pub fn estimate_tokens(
        &self,
        model: &str,
        prompt_tokens: u64,
        max_output_tokens: u64,
    ) -> Result<Decimal> {
        let p = self.price(model)?;
        Ok((ModelPrice::cost_of(p.input, prompt_tokens)
            + ModelPrice::cost_of(p.output, max_output_tokens))
        .normalize())
    }

    /// The worst-case cost of a chat call: its prompt counted with the model's tokenizer (and
    /// message framing) at the input price, plus `max_output_tokens` at the output price.
    pub fn estimate(
        &self,
        model: &str,
        messages: &[ChatMessage],
        max_output_tokens: u64,
    ) -> Result<CostEstimate> {
        let id = self.resolve(model)?.id.clone();
        let count = self.tokenizer(model)?.count_messages(messages);
        Ok(CostEstimate {
            cost_usd: self.estimate_tokens(model, count.tokens, max_output_tokens)?,
            model: id,
            prompt_tokens: count,
            max_output_tokens,
        })
    }

    /// [`PriceCatalog::estimate`] for a single user prompt.
    pub fn estimate_prompt(
        &self,
        model: &str,
        prompt: &str,
        max_output_tokens: u64,
    ) -> Result<CostEstimate> {
        self.estimate(
            model,
            &[ChatMessage::new("user", prompt)],
            max_output_tokens,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn cat() -> &'static PriceCatalog {
        PriceCatalog::embedded()
    }

    #[test]
    fn gpt4_reference_values() {
        let a = cat().cost(&TokenUsage::new("gpt-4", 100, 50)).unwrap();
        assert_eq!(a.total_usd, dec!(0.006));
        let b = cat().cost(&TokenUsage::new("gpt-4", 200, 100)).unwrap();
        assert_eq!(a.total_usd + b.total_usd, dec!(0.018));
    }

    #[test]
    fn claude_and_gpt35_reference_values() {
        let c = cat()
            .cost(&TokenUsage::new("claude-3-5-sonnet-20241022", 1000, 500))
            .unwrap();
        assert_eq!(c.total_usd, dec!(0.0105));
        assert_eq!(c.model, "claude-3-5-sonnet-20241022");
        let g = cat()
            .cost(&TokenUsage::new("gpt-3.5-turbo-0613", 1000, 500))
            .unwrap();
        assert_eq!(g.total_usd, dec!(0.0025));
        let plain = cat()
            .cost(&TokenUsage::new("gpt-3.5-turbo", 1000, 500))
            .unwrap();
        assert_eq!(plain.total_usd, dec!(0.00125));
    }

    #[test]
    fn cached_cache_write_and_reasoning_parts() {
        // gpt-4o: 1M prompt of which 400k cached: 600k × 2.50 + 400k × 1.25 = 1.5 + 0.5.
        let c = cat()
            .cost(&TokenUsage::new("gpt-4o", 1_000_000, 0).cached_prompt(400_000))
            .unwrap();
        assert_eq!(c.input_usd, dec!(1.5));
        assert_eq!(c.cached_input_usd, dec!(0.5));
        assert_eq!(c.total_usd, dec!(2));
        // Claude sonnet 4: cache write 3.75, cache read 0.30 per 1M.
        let c = cat()
            .cost(
                &TokenUsage::new("claude-sonnet-4", 3_000_000, 1_000_000)
                    .cache_write(1_000_000)
                    .cached_prompt(1_000_000),
            )
            .unwrap();
        assert_eq!(
            (
                c.input_usd,
                c.cache_write_usd,
                c.cached_input_usd,
                c.output_usd
            ),
            (dec!(3), dec!(3.75), dec!(0.3), dec!(15))
        );
        assert_eq!(c.total_usd, dec!(22.05));
        // o3: reasoning billed as output.
        let c = cat()
            .cost(&TokenUsage::new("o3", 0, 1000).reasoning(600))
            .unwrap();
        assert_eq!(c.output_usd, dec!(0.0032));
        assert_eq!(c.reasoning_usd, dec!(0.0048));
        assert_eq!(c.total_usd, dec!(0.008));
    }

    #[test]
    fn sub_cent_costs_are_exact() {
        let c = cat().cost(&TokenUsage::new("gpt-4o-mini", 1, 1)).unwrap();
        assert_eq!(c.total_usd, dec!(0.00000075));
        let sum: Decimal = (0..1000)
            .map(|_| {
                cat()
                    .cost(&TokenUsage::new("gpt-4o-mini", 1, 1))
                    .unwrap()
                    .total_usd
            })
            .sum();
        assert_eq!(sum, dec!(0.00075));
    }

    #[test]
    fn inconsistent_usage_is_refused() {
        assert!(matches!(
            cat().cost(&TokenUsage::new("gpt-4o", 10, 0).cached_prompt(11)),
            Err(Error::InvalidUsage { .. })
        ));
        assert!(matches!(
            cat().cost(&TokenUsage::new("o3", 0, 10).reasoning(11)),
            Err(Error::InvalidUsage { .. })
        ));
        assert!(matches!(
            cat().cost(&TokenUsage::new("gpt-9", 1, 1)),
            Err(Error::UnknownModel { .. })
        ));
    }

    #[test]
    fn estimate_is_counted_prompt_plus_max_output() {
        let prompt = "Summarise the quarterly report in three bullet points.";
        let e = cat().estimate_prompt("gpt-4", prompt, 500).unwrap();
        let counted = Tokenizer::Cl100kBase.count(prompt).tokens + 3 + 1 + 3;
        assert_eq!(e.prompt_tokens.tokens, counted);
        assert_eq!(
            e.cost_usd,
            (Decimal::from(counted) * dec!(30) / dec!(1000000)
                + dec!(500) * dec!(60) / dec!(1000000))
            .normalize()
        );
        assert!(!e.prompt_tokens.estimate);
        assert!(
            cat()
                .estimate_prompt("claude-3-haiku", prompt, 10)
                .unwrap()
                .prompt_tokens
                .estimate
        );
    }

    #[test]
    fn estimate_order_across_models() {
        let prompt = "Write a haiku about budgets that cannot be overshot.";
        let e = |m| cat().estimate_prompt(m, prompt, 256).unwrap().cost_usd;
        assert!(e("gpt-4") > e("gpt-4-turbo"));
        assert!(e("gpt-4-turbo") > e("gpt-4o"));
        assert!(e("gpt-4o") > e("gpt-4o-mini"));
        assert!(e("gpt-4") > e("gpt-3.5-turbo"));
        assert!(e("claude-opus-4") > e("claude-sonnet-4"));
        assert!(e("claude-sonnet-4") > e("claude-3-haiku"));
    }
}
