//! Provider configuration: API key, endpoint, timeouts, retries, circuit breaker.

use crate::error::{Error, Result};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// An API key. It is never printed: `Debug` shows `[redacted]`, and the header that carries it
/// is marked sensitive.
#[derive(Clone)]
pub struct ApiKey(SecretString);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(SecretString::from(key.into()))
    }
    pub(crate) fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How the API key is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthScheme {
    /// `Authorization: Bearer KEY` (OpenAI and most compatible servers).
    Bearer,
    /// The key as the value of this header (`x-api-key` for Anthropic, `api-key` for Azure).
    Header(String),
}

/// Which JSON field carries the output-token limit of an OpenAI-compatible request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaxTokensField {
    /// `max_completion_tokens` for the model families that require it (o1, o3, o4, gpt-5,
    /// gpt-4.1), `max_tokens` otherwise.
    #[default]
    Auto,
    /// Always `max_tokens` (older servers and most self-hosted ones).
    MaxTokens,
    /// Always `max_completion_tokens`.
    MaxCompletionTokens,
}

/// Retries with exponential backoff and jitter on 429, 5xx, timeouts and connection errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    pub(crate) max_attempts: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) jitter: bool,
    pub(crate) max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            jitter: true,
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryConfig {
    /// Starts from the defaults (4 attempts, 500 ms doubling to at most 30 s, jitter on,
    /// Retry-After honoured up to 60 s).
    pub fn builder() -> RetryConfigBuilder {
        RetryConfigBuilder(Self::default())
    }
    /// No retries: one attempt.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }
    /// Total attempts, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
}

/// Builder of [`RetryConfig`].
#[derive(Debug, Clone)]
pub struct RetryConfigBuilder(RetryConfig);

impl RetryConfigBuilder {
    /// Total attempts, the first included (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.0.max_attempts = n;
        self
    }
    /// First backoff delay.
    pub fn initial_backoff(mut self, d: Duration) -> Self {
        self.0.initial_backoff = d;
        self
    }
    /// Largest backoff delay.
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.0.max_backoff = d;
        self
    }
    /// Adds random jitter to each delay (on by default).
    pub fn jitter(mut self, on: bool) -> Self {
        self.0.jitter = on;
        self
    }
    /// The longest Retry-After the client waits; a longer one ends the retries with the error.
    pub fn max_retry_after(mut self, d: Duration) -> Self {
        self.0.max_retry_after = d;
        self
    }
    /// Validates.
    pub fn build(self) -> Result<RetryConfig> {
        let c = self.0;
        if c.max_attempts == 0 {
            return Err(Error::InvalidConfig(
                "retry max_attempts is 0; use 1 for no retries".into(),
            ));
        }
        if c.initial_backoff > c.max_backoff {
            return Err(Error::InvalidConfig(format!(
                "retry initial_backoff {:?} exceeds max_backoff {:?}; lower it or raise max_backoff",
                c.initial_backoff, c.max_backoff
            )));
        }
        Ok(c)
    }
}

/// A circuit breaker per provider and model: after `failure_threshold` consecutive failed calls
/// it opens and refuses calls for `recovery_timeout`; then it half-opens and lets trial calls
/// through; `success_threshold` consecutive successes close it, one failure opens it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    pub(crate) failure_threshold: u32,
    pub(crate) recovery_timeout: Duration,
    pub(crate) success_threshold: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            recovery_timeout: Duration::from_secs(30),
            success_threshold: 2,
        }
    }
}

impl BreakerConfig {
    /// Starts from the defaults (5 failures, 30 s, 2 successes).
    pub fn builder() -> BreakerConfigBuilder {
        BreakerConfigBuilder(Self::default())
    }
}

/// Builder of [`BreakerConfig`].
#[derive(Debug, Clone)]
pub struct BreakerConfigBuilder(BreakerConfig);

impl BreakerConfigBuilder {
    /// Consecutive failed calls that open the breaker (at least 1).
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.0.failure_threshold = n;
        self
    }
    /// How long an open breaker refuses calls before it half-opens.
    pub fn recovery_timeout(mut self, d: Duration) -> Self {
        self.0.recovery_timeout = d;
        self
    }
    /// Consecutive successful trial calls that close a half-open breaker (at least 1).
    pub fn success_threshold(mut self, n: u32) -> Self {
        self.0.success_threshold = n;
        self
    }
    /// Validates.
    pub fn build(self) -> Result<BreakerConfig> {
        let c = self.0;
        if c.failure_threshold == 0 || c.success_threshold == 0 {
            return Err(Error::InvalidConfig(
                "breaker thresholds must be at least 1".into(),
            ));
        }
        if c.recovery_timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "breaker recovery_timeout is 0; give it a duration".into(),
            ));
        }
        Ok(c)
    }
}

/// Configuration of one provider. The library never reads the environment: the caller passes
/// the key (wflo-core reads `OPENAI_API_KEY` / `ANTHROPIC_API_KEY`).
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub(crate) api_key: Option<ApiKey>,
    pub(crate) allow_missing_api_key: bool,
    pub(crate) base_url: Option<Url>,
    pub(crate) auth: Option<AuthScheme>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) connect_timeout: Duration,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryConfig,
    pub(crate) breaker: BreakerConfig,
    pub(crate) max_tokens_field: MaxTokensField,
    pub(crate) anthropic_version: String,
    pub(crate) default_max_tokens: u32,
    pub(crate) cassette: Option<PathBuf>,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            allow_missing_api_key: false,
            base_url: None,
            auth: None,
            headers: Vec::new(),
            query: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(120),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            max_tokens_field: MaxTokensField::Auto,
            anthropic_version: "2023-06-01".into(),
            default_max_tokens: 4096,
            cassette: None,
        }
    }
}

impl ProviderConfig {
    /// Starts from the defaults (connect timeout 10 s, total 120 s, default retry and breaker).
    pub fn builder() -> ProviderConfigBuilder {
        ProviderConfigBuilder(Self::default())
    }
    /// The base URL, when one was set.
    pub fn base_url(&self) -> Option<&Url> {
        self.base_url.as_ref()
    }
    /// Total timeout of one attempt.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
    /// The retry policy.
    pub fn retry(&self) -> &RetryConfig {
        &self.retry
    }
    /// The breaker policy.
    pub fn breaker(&self) -> &BreakerConfig {
        &self.breaker
    }
}

/// Builder of [`ProviderConfig`].
#[derive(Debug, Clone)]
pub struct ProviderConfigBuilder(ProviderConfig);

impl ProviderConfigBuilder {
    /// The API key.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.0.api_key = Some(ApiKey::new(key));
        self
    }
    /// The API key when there is one (an empty key counts as none).
    pub fn maybe_api_key(mut self, key: Option<String>) -> Self {
        self.0.api_key = key.filter(|k| !k.is_empty()).map(ApiKey::new);
        self
    }
    /// Lets an OpenAI-compatible provider run without a key (local vLLM, Ollama).
    pub fn allow_missing_api_key(mut self) -> Self {
        self.0.allow_missing_api_key = true;
        self
    }
    /// Base URL, in the form the provider's own SDKs take (`OPENAI_BASE_URL`,
    /// `ANTHROPIC_BASE_URL`): for OpenAI-compatible servers up to the API version
    /// (`https://api.openai.com/v1`, `http://127.0.0.1:11434/v1`; a bare host gets `/v1`), for
    /// Anthropic the server root (`https://api.anthropic.com`; a base ending in `/v1` works too).
    pub fn base_url(mut self, url: &str) -> Result<Self> {
        let u = Url::parse(url)
            .map_err(|e| Error::InvalidConfig(format!("base url {url:?} does not parse: {e}")))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(Error::InvalidConfig(format!(
                "base url {url:?} must be http or https"
            )));
        }
        self.0.base_url = Some(u);
        Ok(self)
    }
    /// How the key is sent (default: per provider).
    pub fn auth(mut self, a: AuthScheme) -> Self {
        self.0.auth = Some(a);
        self
    }
    /// An extra header on every request (not for secrets: use the API key).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.headers.push((name.into(), value.into()));
        self
    }
    /// An extra query parameter on every request (`api-version` for Azure).
    pub fn query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.query.push((name.into(), value.into()));
        self
    }
    /// Time to establish a connection.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.0.connect_timeout = d;
        self
    }
    /// Total time of one attempt, connection to last byte (for streams: to the first byte).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.0.timeout = d;
        self
    }
    /// The retry policy.
    pub fn retry(mut self, r: RetryConfig) -> Self {
        self.0.retry = r;
        self
    }
    /// The circuit breaker policy.
    pub fn breaker(mut self, b: BreakerConfig) -> Self {
        self.0.breaker = b;
        self
    }
    /// Which field carries max tokens for OpenAI-compatible servers.
    pub fn max_tokens_field(mut self, f: MaxTokensField) -> Self {
        self.0.max_tokens_field = f;
        self
    }
    /// `anthropic-version` header (default `2023-06-01`).
    pub fn anthropic_version(mut self, v: impl Into<String>) -> Self {
        self.0.anthropic_version = v.into();
        self
    }
    /// Max tokens sent to providers that require one when the request sets none (default 4096).
    pub fn default_max_tokens(mut self, n: u32) -> Self {
        self.0.default_max_tokens = n;
        self
    }
    /// Cassette file of the replay provider.
    pub fn cassette(mut self, path: impl Into<PathBuf>) -> Self {
        self.0.cassette = Some(path.into());
        self
    }
    /// Validates.
    pub fn build(self) -> Result<ProviderConfig> {
        let c = self.0;
        if c.timeout.is_zero() || c.connect_timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "timeouts must be greater than zero".into(),
            ));
        }
        if c.default_max_tokens == 0 {
            return Err(Error::InvalidConfig(
                "default_max_tokens is 0; use at least 1".into(),
            ));
        }
        for (name, value) in &c.headers {
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::InvalidConfig(format!("header name {name:?} is invalid")))?;
            reqwest::header::HeaderValue::from_str(value).map_err(|_| {
                Error::InvalidConfig(format!("value of header {name:?} is invalid"))
            })?;
        }
        if let Some(AuthScheme::Header(name)) = &c.auth {
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                Error::InvalidConfig(format!("auth header name {name:?} is invalid"))
            })?;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let c = ProviderConfig::builder()
            .api_key("sk-very-secret-123")
            .build()
            .unwrap();
        let s = format!("{c:?} {:?}", ApiKey::new("sk-very-secret-123"));
        assert!(!s.contains("sk-very-secret-123"), "{s}");
        assert!(s.contains("[redacted]"), "{s}");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(ProviderConfig::builder().base_url("ftp://x").is_err());
        assert!(ProviderConfig::builder().base_url("not a url").is_err());
        assert!(
            ProviderConfig::builder()
                .timeout(Duration::ZERO)
                .build()
                .is_err()
        );
        assert!(
            ProviderConfig::builder()
                .header("bad header", "v")
                .build()
                .is_err()
        );
        assert!(RetryConfig::builder().max_attempts(0).build().is_err());
        assert!(
            RetryConfig::builder()
                .initial_backoff(Duration::from_secs(9))
                .max_backoff(Duration::from_secs(1))
                .build()
                .is_err()
        );
        assert!(
            BreakerConfig::builder()
                .failure_threshold(0)
                .build()
                .is_err()
        );
        assert!(
            BreakerConfig::builder()
                .recovery_timeout(Duration::ZERO)
                .build()
                .is_err()
        );
        let c = ProviderConfig::builder()
            .maybe_api_key(Some(String::new()))
            .build()
            .unwrap();
        assert!(c.api_key.is_none());
    }
}
