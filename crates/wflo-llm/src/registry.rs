//! Providers by name.

use crate::anthropic::AnthropicProvider;
use crate::config::ProviderConfig;
use crate::error::{Error, Result};
use crate::openai::OpenAiProvider;
use crate::provider::LlmProvider;
use crate::replay::ReplayProvider;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Builds a provider from a configuration.
pub type ProviderFactory =
    Arc<dyn Fn(&ProviderConfig) -> Result<Arc<dyn LlmProvider>> + Send + Sync>;

/// Provider factories by name. [`ProviderRegistry::default`] knows "openai", "anthropic" and
/// "replay" (answers from the cassette set with [`crate::ProviderConfigBuilder::cassette`]).
#[derive(Clone)]
pub struct ProviderRegistry {
    factories: BTreeMap<String, ProviderFactory>,
}

impl fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderRegistry")
            .field("names", &self.names())
            .finish()
    }
}

impl Default for ProviderRegistry {
    fn default() -> Self {
        let mut r = Self::empty();
        r.register("openai", |c| Ok(Arc::new(OpenAiProvider::new(c)?)));
        r.register("anthropic", |c| Ok(Arc::new(AnthropicProvider::new(c)?)));
        r.register("replay", |c| {
            let path = c.cassette.clone().ok_or_else(|| {
                Error::InvalidConfig(
                    "the replay provider needs a cassette; set ProviderConfigBuilder::cassette"
                        .into(),
                )
            })?;
            Ok(Arc::new(ReplayProvider::replay(path)?))
        });
        r
    }
}

impl ProviderRegistry {
    /// A registry with no providers.
    pub fn empty() -> Self {
        Self {
            factories: BTreeMap::new(),
        }
    }

    /// Registers (or replaces) a factory under `name`.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        factory: impl Fn(&ProviderConfig) -> Result<Arc<dyn LlmProvider>> + Send + Sync + 'static,
    ) -> &mut Self {
        self.factories.insert(name.into(), Arc::new(factory));
        self
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.factories.keys().map(String::as_str).collect()
    }

    /// Builds the provider registered as `name`; an unknown name is
    /// [`Error::UnknownProvider`], a missing key [`Error::MissingApiKey`].
    pub fn create(&self, name: &str, config: &ProviderConfig) -> Result<Arc<dyn LlmProvider>> {
        let f = self
            .factories
            .get(name)
            .ok_or_else(|| Error::UnknownProvider {
                name: name.to_string(),
                known: self.names().join(", "),
            })?;
        f(config)
    }
}

/// Builds a built-in provider by name (see [`ProviderRegistry::default`]).
pub fn create_provider(name: &str, config: &ProviderConfig) -> Result<Arc<dyn LlmProvider>> {
    ProviderRegistry::default().create(name, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_and_missing_keys_are_typed_errors() {
        let c = ProviderConfig::builder().build().unwrap();
        match create_provider("gemini", &c).unwrap_err() {
            Error::UnknownProvider { name, known } => {
                assert_eq!(name, "gemini");
                assert_eq!(known, "anthropic, openai, replay");
            }
            e => panic!("{e}"),
        }
        match create_provider("openai", &c).unwrap_err() {
            Error::MissingApiKey { env_var, .. } => assert_eq!(env_var, "OPENAI_API_KEY"),
            e => panic!("{e}"),
        }
        match create_provider("anthropic", &c).unwrap_err() {
            Error::MissingApiKey { env_var, .. } => assert_eq!(env_var, "ANTHROPIC_API_KEY"),
            e => panic!("{e}"),
        }
        assert!(matches!(
            create_provider("replay", &c).unwrap_err(),
            Error::InvalidConfig(_)
        ));
        let keyed = ProviderConfig::builder().api_key("k").build().unwrap();
        assert_eq!(create_provider("openai", &keyed).unwrap().name(), "openai");
        assert_eq!(
            create_provider("anthropic", &keyed).unwrap().name(),
            "anthropic"
        );
    }
}
