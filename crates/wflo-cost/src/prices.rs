//! The price catalogue: an embedded, dated data file (`data/prices.toml`) plus user overrides,
//! with provider prefixes and dated suffixes resolved. Pure: no IO (read an override file
//! yourself and pass its text to [`PriceCatalogBuilder::toml`]).

use crate::tokens::Tokenizer;
use crate::{Error, Result};
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

/// The embedded catalogue's text.
pub const EMBEDDED_PRICES: &str = include_str!("../data/prices.toml");

/// One million: prices are per 1M tokens.
const PER: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);

/// A model's prices, in US dollars per 1,000,000 tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    /// Prompt (input) tokens.
    pub input: Decimal,
    /// Completion (output) tokens.
    pub output: Decimal,
    /// Prompt tokens read from the provider's cache (`None`: billed as input).
    pub cached_input: Option<Decimal>,
    /// Prompt tokens written to the provider's cache (`None`: billed as input).
    pub cache_write: Option<Decimal>,
    /// Reasoning tokens (`None`: billed as output, as OpenAI does).
    pub reasoning: Option<Decimal>,
    /// How to count its tokens (`None`: by model family).
    pub tokenizer: Option<Tokenizer>,
}

impl ModelPrice {
    /// Input and output prices per 1M tokens; the rest billed as input/output.
    pub fn new(input: Decimal, output: Decimal) -> Self {
        ModelPrice {
            input,
            output,
            cached_input: None,
            cache_write: None,
            reasoning: None,
            tokenizer: None,
        }
    }

    /// With a cache-read price.
    pub fn cached_input(mut self, price: Decimal) -> Self {
        self.cached_input = Some(price);
        self
    }

    /// With a cache-write price.
    pub fn cache_write(mut self, price: Decimal) -> Self {
        self.cache_write = Some(price);
        self
    }

    /// With a reasoning price.
    pub fn reasoning(mut self, price: Decimal) -> Self {
        self.reasoning = Some(price);
        self
    }

    /// With a tokenizer.
    pub fn tokenizer(mut self, tokenizer: Tokenizer) -> Self {
        self.tokenizer = Some(tokenizer);
        self
    }

    /// The exact cost of `tokens` at `per_million` USD per 1M tokens.
    pub fn cost_of(per_million: Decimal, tokens: u64) -> Decimal {
        per_million * Decimal::from(tokens) / PER
    }

    fn validate(&self, id: &str) -> Result<()> {
        let all = [
            Some(self.input),
            Some(self.output),
            self.cached_input,
            self.cache_write,
            self.reasoning,
        ];
        if all.iter().flatten().any(|p| p.is_sign_negative()) {
            return Err(Error::InvalidCatalogue(format!(
                "prices of `{id}` must not be negative"
            )));
        }
        Ok(())
    }
}

/// A catalogue entry: the canonical id and its price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedModel {
    /// Canonical model id (e.g. `claude-3-5-sonnet-20241022`).
    pub id: String,
    /// Provider (`openai`, `anthropic`, or what an override says).
    pub provider: Option<String>,
    /// Prices.
    pub price: ModelPrice,
}

/// Resolves model names to prices. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PriceCatalog {
    models: Arc<HashMap<String, Arc<PricedModel>>>,
    names: Arc<HashMap<String, String>>,
    snapshot_date: Arc<str>,
    source: Arc<str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    id: String,
    provider: Option<String>,
    input: String,
    output: String,
    cached_input: Option<String>,
    cache_write: Option<String>,
    reasoning: Option<String>,
    tokenizer: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PricesFile {
    snapshot_date: Option<String>,
    source: Option<String>,
    #[serde(default)]
    model: Vec<FileModel>,
}

/// Builds a [`PriceCatalog`]: the embedded prices (unless [`PriceCatalogBuilder::without_embedded`])
/// then, in order, every prices file text and single price added; later entries win.
#[derive(Debug, Clone, Default)]
pub struct PriceCatalogBuilder {
    embedded: bool,
    files: Vec<String>,
    prices: Vec<(String, ModelPrice, Vec<String>)>,
}

impl PriceCatalogBuilder {
    /// Leave the embedded catalogue out (only your own prices).
    pub fn without_embedded(mut self) -> Self {
        self.embedded = false;
        self
    }

    /// Adds the entries of a prices file's text (the `data/prices.toml` format).
    pub fn toml(mut self, text: impl Into<String>) -> Self {
        self.files.push(text.into());
        self
    }

    /// Adds or overrides one model's price (self-hosted models, negotiated rates).
    pub fn price(mut self, id: impl Into<String>, price: ModelPrice) -> Self {
        self.prices.push((id.into(), price, Vec::new()));
        self
    }

    /// Adds or overrides one model's price, with aliases.
    pub fn price_with_aliases<I, S>(
        mut self,
        id: impl Into<String>,
        price: ModelPrice,
        aliases: I,
    ) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.prices.push((
            id.into(),
            price,
            aliases.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<PriceCatalog> {
        let mut acc = Acc::default();
        if self.embedded {
            acc.load(EMBEDDED_PRICES)?;
        }
        for text in &self.files {
            acc.load(text)?;
        }
        for (id, price, aliases) in self.prices {
            acc.insert(id, None, price, aliases)?;
        }
        if acc.models.is_empty() {
            return Err(Error::InvalidCatalogue(
                "the catalogue has no prices; add some or keep the embedded ones".into(),
            ));
        }
        Ok(PriceCatalog {
            models: Arc::new(acc.models),
            names: Arc::new(acc.names),
            snapshot_date: acc.snapshot_date.unwrap_or_default().into(),
            source: acc.source.unwrap_or_default().into(),
        })
    }
}

#[derive(Default)]
struct Acc {
    models: HashMap<String, Arc<PricedModel>>,
    names: HashMap<String, String>,
    snapshot_date: Option<String>,
    source: Option<String>,
}

fn dec(id: &str, what: &str, s: &str) -> Result<Decimal> {
    Decimal::from_str(s.trim()).map_err(|e| {
        Error::InvalidCatalogue(format!("`{id}` {what} price `{s}` is not a decimal: {e}"))
    })
}

impl Acc {
    fn load(&mut self, text: &str) -> Result<()> {
        let file: PricesFile = toml::from_str(text)
            .map_err(|e| Error::InvalidCatalogue(e.to_string().trim().to_lowercase()))?;
        if file.snapshot_date.is_some() {
            self.snapshot_date = file.snapshot_date;
        }
        if file.source.is_some() {
            self.source = file.source;
        }
        for m in file.model {
            let id = m.id.clone();
            let opt = |what: &str, v: &Option<String>| -> Result<Option<Decimal>> {
                v.as_deref().map(|s| dec(&id, what, s)).transpose()
            };
            let price = ModelPrice {
                input: dec(&id, "input", &m.input)?,
                output: dec(&id, "output", &m.output)?,
                cached_input: opt("cached_input", &m.cached_input)?,
                cache_write: opt("cache_write", &m.cache_write)?,
                reasoning: opt("reasoning", &m.reasoning)?,
                tokenizer: m
                    .tokenizer
                    .as_deref()
                    .map(|t| {
                        Tokenizer::from_str(t).map_err(|_| {
                            Error::InvalidCatalogue(format!(
                                "`{id}` tokenizer `{t}` is not one of o200k_base, cl100k_base, claude_estimate"
                            ))
                        })
                    })
                    .transpose()?,
            };
            self.insert(m.id, m.provider, price, m.aliases)?;
        }
        Ok(())
    }

    fn insert(
        &mut self,
        id: String,
        provider: Option<String>,
        price: ModelPrice,
        aliases: Vec<String>,
    ) -> Result<()> {
        let key = id.trim().to_lowercase();
        if key.is_empty() {
            return Err(Error::InvalidCatalogue("a model id is empty".into()));
        }
        price.validate(&key)?;
        self.models.insert(
            key.clone(),
            Arc::new(PricedModel {
                id: key.clone(),
                provider,
                price,
            }),
        );
        self.names.insert(key.clone(), key.clone());
        for alias in aliases {
            self.names.insert(alias.trim().to_lowercase(), key.clone());
        }
        Ok(())
    }
}

/// Strips a trailing date or `-latest` from a model id: `-2024-08-06`, `-20241022`, `-0613`,
/// `@20241022`, `-latest`. `None` when there is none.
fn strip_date(name: &str) -> Option<&str> {
    let is_digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = name.strip_suffix("-latest") {
        return Some(rest);
    }
    if let Some((head, tail)) = name.rsplit_once('@')
        && is_digits(tail, 8)
    {
        return Some(head);
    }
    if name.len() > 11 {
        let (head, tail) = name.split_at(name.len() - 11);
        let t = tail.as_bytes();
        if t[0] == b'-'
            && is_digits(&tail[1..5], 4)
            && t[5] == b'-'
            && is_digits(&tail[6..8], 2)
            && t[8] == b'-'
            && is_digits(&tail[9..11], 2)
        {
            return Some(head);
        }
    }
    let (head, tail) = name.rsplit_once('-')?;
    if is_digits(tail, 8) || is_digits(tail, 4) {
        return Some(head);
    }
    None
}

impl PriceCatalog {
    /// Starts from the embedded catalogue.
    pub fn builder() -> PriceCatalogBuilder {
        PriceCatalogBuilder {
            embedded: true,
            ..Default::default()
        }
    }

    /// The embedded catalogue (parsed once).
    pub fn embedded() -> &'static PriceCatalog {
        static CATALOG: OnceLock<PriceCatalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            PriceCatalog::builder()
                .build()
                .expect("the embedded prices file is valid (a unit test checks it)")
        })
    }

    /// When the embedded prices were taken from their source.
    pub fn snapshot_date(&self) -> &str {
        &self.snapshot_date
    }

    /// Where the embedded prices come from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Canonical ids of every priced model, sorted.
    pub fn model_ids(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.models.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    fn lookup(&self, name: &str) -> Option<&Arc<PricedModel>> {
        self.names.get(name).and_then(|id| self.models.get(id))
    }

    /// Resolves a model name: exact id or alias, then without a provider prefix
    /// (`openai/`, `anthropic/`, …), then without a dated suffix. Unknown names are
    /// [`Error::UnknownModel`] with the closest known names.
    pub fn resolve(&self, model: &str) -> Result<&PricedModel> {
        let name = model.trim().to_lowercase();
        let bare = name.rsplit_once('/').map(|(_, b)| b).unwrap_or(&name);
        for candidate in [name.as_str(), bare] {
            if let Some(m) = self.lookup(candidate) {
                return Ok(m);
            }
            let mut cur = candidate;
            while let Some(shorter) = strip_date(cur) {
                if let Some(m) = self.lookup(shorter) {
                    return Ok(m);
                }
                cur = shorter;
            }
        }
        Err(Error::UnknownModel {
            model: model.to_string(),
            suggestions: self.closest(bare, 3),
        })
    }

    /// The price of a model (see [`PriceCatalog::resolve`]).
    pub fn price(&self, model: &str) -> Result<&ModelPrice> {
        self.resolve(model).map(|m| &m.price)
    }

    /// The `n` known names closest to `name` (Jaro-Winkler similarity), best first.
    pub fn closest(&self, name: &str, n: usize) -> Vec<String> {
        let mut scored: Vec<(f64, &str)> = self
            .names
            .keys()
            .map(|k| (strsim::jaro_winkler(name, k), k.as_str()))
            .filter(|(s, _)| *s >= 0.7)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        let mut out: Vec<String> = Vec::new();
        for (_, k) in scored {
            if !out.iter().any(|o| o == k) {
                out.push(k.to_string());
            }
            if out.len() == n {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn embedded_catalogue_parses_and_is_dated() {
        let c = PriceCatalog::embedded();
        assert_eq!(c.snapshot_date(), "2025-11-20");
        assert!(c.source().contains("LiteLLM"));
        assert!(c.model_ids().len() >= 30);
    }

    #[test]
    fn required_models_are_priced() {
        let c = PriceCatalog::embedded();
        for m in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-3.5-turbo",
            "gpt-3.5-turbo-0613",
            "gpt-3.5-turbo-0125",
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1",
            "gpt-4.1-mini",
            "gpt-4.1-nano",
            "o1",
            "o3",
            "o4-mini",
            "gpt-5",
            "gpt-5-mini",
            "gpt-5-nano",
            "claude-3-haiku",
            "claude-3-5-sonnet-20241022",
            "claude-3-5-sonnet-20240620",
            "claude-sonnet-4",
            "claude-sonnet-4.5",
            "claude-haiku-4.5",
            "claude-opus-4",
        ] {
            c.resolve(m).unwrap_or_else(|e| panic!("{m}: {e}"));
        }
    }

    #[test]
    fn reference_prices() {
        let c = PriceCatalog::embedded();
        let p = c.price("gpt-4").unwrap();
        // $0.03 / $0.06 per 1K tokens.
        assert_eq!(p.input / dec!(1000), dec!(0.03));
        assert_eq!(p.output / dec!(1000), dec!(0.06));
        let p = c.price("claude-3-5-sonnet-20241022").unwrap();
        assert_eq!((p.input, p.output), (dec!(3), dec!(15)));
        let p = c.price("gpt-3.5-turbo-0613").unwrap();
        assert_eq!((p.input, p.output), (dec!(1.5), dec!(2)));
        let p = c.price("gpt-3.5-turbo").unwrap();
        assert_eq!((p.input, p.output), (dec!(0.5), dec!(1.5)));
        assert_eq!(c.price("gpt-4o").unwrap().cached_input, Some(dec!(1.25)));
    }

    #[test]
    fn prefixes_and_dated_suffixes_resolve() {
        let c = PriceCatalog::embedded();
        assert_eq!(c.resolve("openai/gpt-4o").unwrap().id, "gpt-4o");
        assert_eq!(c.resolve("OpenAI/GPT-4o-2024-08-06").unwrap().id, "gpt-4o");
        assert_eq!(
            c.resolve("anthropic/claude-3-5-sonnet-20241022")
                .unwrap()
                .id,
            "claude-3-5-sonnet-20241022"
        );
        // A dated id not in the file resolves to its family.
        assert_eq!(c.resolve("gpt-4.1-2026-01-01").unwrap().id, "gpt-4.1");
        assert_eq!(c.resolve("o3-20260101").unwrap().id, "o3");
        assert_eq!(c.resolve("gpt-4-0613").unwrap().id, "gpt-4");
        assert_eq!(
            c.resolve("claude-sonnet-4-5@20250929").unwrap().id,
            "claude-sonnet-4-5-20250929"
        );
        assert_eq!(
            c.resolve("claude-3-5-sonnet-latest").unwrap().id,
            "claude-3-5-sonnet-20241022"
        );
        // A dated id with its own price is not folded into the family.
        assert_eq!(c.resolve("gpt-4o-2024-05-13").unwrap().price.input, dec!(5));
    }

    #[test]
    fn unknown_model_lists_closest_names() {
        let err = PriceCatalog::embedded().resolve("gpt-4o-mni").unwrap_err();
        match &err {
            Error::UnknownModel { model, suggestions } => {
                assert_eq!(model, "gpt-4o-mni");
                assert_eq!(suggestions.first().map(String::as_str), Some("gpt-4o-mini"));
                assert!(suggestions.len() <= 3);
            }
            other => panic!("unexpected {other:?}"),
        }
        let text = err.to_string();
        assert!(text.starts_with("unknown model `gpt-4o-mni`"), "{text}");
        assert!(text.contains("closest known: gpt-4o-mini"), "{text}");
        assert!(!text.ends_with('.'));
    }

    #[test]
    fn overrides_from_builder_and_file() {
        let c = PriceCatalog::builder()
            .toml(
                r#"
[[model]]
id = "llama-3-70b-selfhosted"
provider = "self"
input = "0.10"
output = "0.20"
tokenizer = "cl100k_base"
aliases = ["llama3"]
"#,
            )
            .price(
                "gpt-4o",
                ModelPrice::new(dec!(2), dec!(8)).cached_input(dec!(1)),
            )
            .build()
            .unwrap();
        assert_eq!(c.price("llama3").unwrap().output, dec!(0.20));
        assert_eq!(
            c.price("llama-3-70b-selfhosted").unwrap().tokenizer,
            Some(Tokenizer::Cl100kBase)
        );
        assert_eq!(c.price("gpt-4o").unwrap().input, dec!(2));
        // Aliases of the overridden entry still resolve to it.
        assert_eq!(c.price("gpt-4o-2024-08-06").unwrap().input, dec!(2));
        // The embedded one is untouched.
        assert_eq!(
            PriceCatalog::embedded().price("gpt-4o").unwrap().input,
            dec!(2.5)
        );
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(matches!(
            PriceCatalog::builder()
                .toml("[[model]]\nid = \"x\"\ninput = \"abc\"\noutput = \"1\"")
                .build(),
            Err(Error::InvalidCatalogue(_))
        ));
        assert!(matches!(
            PriceCatalog::builder()
                .toml("[[model]]\nid = \"x\"\ninput = \"-1\"\noutput = \"1\"")
                .build(),
            Err(Error::InvalidCatalogue(_))
        ));
        assert!(matches!(
            PriceCatalog::builder()
                .toml("[[model]]\nid = \"x\"\ninput = \"1\"\noutput = \"1\"\nextra = 1")
                .build(),
            Err(Error::InvalidCatalogue(_))
        ));
        assert!(matches!(
            PriceCatalog::builder().without_embedded().build(),
            Err(Error::InvalidCatalogue(_))
        ));
    }

    #[test]
    fn strip_date_forms() {
        assert_eq!(strip_date("gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(
            strip_date("claude-3-5-sonnet-20241022"),
            Some("claude-3-5-sonnet")
        );
        assert_eq!(strip_date("gpt-4-0613"), Some("gpt-4"));
        assert_eq!(
            strip_date("claude-sonnet-4-5@20250929"),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(strip_date("gpt-4o"), None);
        assert_eq!(strip_date("o1"), None);
    }
}
