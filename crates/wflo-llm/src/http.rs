//! The HTTP core both real providers share: one POST with timeouts, retries with backoff and
//! jitter (honouring Retry-After), and the circuit breaker.

use crate::breaker::{Breakers, CircuitState, Outcome, Permit};
use crate::config::{ApiKey, AuthScheme, ProviderConfig, RetryConfig};
use crate::error::{Error, Result, truncate};
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use url::Url;

/// How much of an error body is kept in errors.
pub(crate) const BODY_LIMIT: usize = 512;

/// A successful (2xx) answer with its whole body.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) status: u16,
    /// The provider's request id header.
    pub(crate) request_id: Option<String>,
    pub(crate) body: Bytes,
    pub(crate) latency: Duration,
}

/// Why one attempt failed.
#[derive(Debug)]
enum AttemptError {
    Status {
        status: u16,
        body: String,
        retry_after: Option<Duration>,
        request_id: Option<String>,
    },
    Timeout,
    /// The TCP/TLS connection was not established within the connect timeout.
    ConnectTimeout,
    Connection(String),
}

impl AttemptError {
    fn retryable(&self) -> bool {
        match self {
            AttemptError::Status { status, .. } => *status == 429 || *status >= 500,
            AttemptError::Timeout | AttemptError::ConnectTimeout | AttemptError::Connection(_) => {
                true
            }
        }
    }

    fn from_reqwest(e: &reqwest::Error) -> Self {
        if e.is_connect() && e.is_timeout() {
            AttemptError::ConnectTimeout
        } else if e.is_timeout() {
            AttemptError::Timeout
        } else {
            // Print the whole source chain (it never holds headers, so never the key).
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            AttemptError::Connection(msg)
        }
    }
}

/// How a provider's own SDKs read a base URL, and so how the endpoint is appended to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BaseUrlConvention {
    /// OpenAI's SDKs: the base URL includes the API version (`https://api.openai.com/v1`,
    /// `http://HOST/v1`, `https://HOST/openai/deployments/NAME`) and the endpoint is appended.
    /// A bare host (no path at all) is read as the server root: `/v1` is added.
    IncludesVersion,
    /// Anthropic's SDKs: the base URL is the server root (`https://api.anthropic.com`,
    /// `http://HOST`, `https://HOST/proxy`) and `/v1/ENDPOINT` is appended. A base URL that
    /// already ends in `/v1` (the form Wflo used to ask for) gets the endpoint only.
    ServerRoot,
}

/// The URL `endpoint` (`chat/completions`, `messages`) is posted to under `base`.
pub(crate) fn endpoint_url(
    base: &str,
    endpoint: &str,
    convention: BaseUrlConvention,
) -> Result<Url> {
    let parsed =
        Url::parse(base).map_err(|e| Error::InvalidConfig(format!("base url {base:?}: {e}")))?;
    let path = parsed.path().trim_end_matches('/');
    let ends_in_version = path.rsplit('/').next() == Some("v1");
    let add_version = match convention {
        BaseUrlConvention::IncludesVersion => path.is_empty(),
        BaseUrlConvention::ServerRoot => !ends_in_version,
    };
    let mut url = parsed.clone();
    url.set_path(&format!(
        "{path}/{}{endpoint}",
        if add_version { "v1/" } else { "" }
    ));
    Ok(url)
}

/// `url` without its query (which may carry a gateway's key), for messages.
pub(crate) fn shown_url(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

#[derive(Debug)]
pub(crate) struct HttpCore {
    pub(crate) provider: &'static str,
    client: reqwest::Client,
    url: Url,
    headers: HeaderMap,
    retry: RetryConfig,
    timeout: Duration,
    connect_timeout: Duration,
    breakers: Breakers,
    request_id_header: &'static str,
}

impl HttpCore {
    /// `endpoint` (`chat/completions`, `messages`) is appended to the base URL the way the
    /// provider's SDKs do it (see [`BaseUrlConvention`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        provider: &'static str,
        config: &ProviderConfig,
        default_base: &str,
        endpoint: &str,
        convention: BaseUrlConvention,
        default_auth: AuthScheme,
        mut headers: HeaderMap,
        request_id_header: &'static str,
    ) -> Result<Self> {
        let base = config.base_url.as_ref().map_or(default_base, Url::as_str);
        let mut url = endpoint_url(base, endpoint, convention)?;
        if !config.query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in &config.query {
                q.append_pair(k, v);
            }
        }
        if let Some(key) = &config.api_key {
            let (name, value) = auth_header(config.auth.as_ref().unwrap_or(&default_auth), key)?;
            headers.insert(name, value);
        }
        for (k, v) in &config.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| Error::InvalidConfig(format!("header name {k:?} is invalid")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| Error::InvalidConfig(format!("value of header {k:?} is invalid")))?;
            headers.insert(name, value);
        }
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // No total timeout on the client: a completion is bounded per attempt below, and a
        // stream is bounded to its first byte and then per chunk.
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("wflo-llm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::InvalidConfig(format!("http client: {e}")))?;
        Ok(Self {
            provider,
            client,
            url,
            headers,
            retry: config.retry.clone(),
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
            breakers: Breakers::new(config.breaker.clone()),
            request_id_header,
        })
    }

    pub(crate) fn circuit_state(&self, model: &str) -> CircuitState {
        self.breakers.state(model)
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    fn acquire(&self, model: &str) -> Result<Permit> {
        self.breakers
            .acquire(model)
            .map_err(|retry_in| Error::CircuitOpen {
                provider: self.provider.to_string(),
                model: model.to_string(),
                retry_in,
            })
    }

    pub(crate) fn request_id(&self, headers: &HeaderMap) -> Option<String> {
        headers
            .get(self.request_id_header)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    fn backoff(&self) -> ExponentialBuilder {
        let b = ExponentialBuilder::default()
            .with_min_delay(self.retry.initial_backoff)
            .with_max_delay(self.retry.max_backoff)
            .with_max_times(self.retry.max_attempts.saturating_sub(1) as usize);
        if self.retry.jitter {
            b.with_jitter()
        } else {
            b
        }
    }

    /// Runs `attempt` under the retry policy; returns its value or the last error, with the
    /// number of attempts made.
    async fn with_retries<T, F, Fut>(&self, model: &str, attempt: F) -> Result<T>
    where
        F: Fn(u32) -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        let attempts = AtomicU32::new(0);
        let max_retry_after = self.retry.max_retry_after;
        let result = (|| {
            let n = attempts.fetch_add(1, Ordering::Relaxed) + 1;
            attempt(n)
        })
        .retry(self.backoff())
        .sleep(tokio::time::sleep)
        .when(AttemptError::retryable)
        .adjust(|e, backoff| {
            // `None` means the retries are used up: keep it.
            let backoff = backoff?;
            match e {
                AttemptError::Status {
                    retry_after: Some(ra),
                    ..
                } => (*ra <= max_retry_after).then_some((*ra).max(backoff)),
                _ => Some(backoff),
            }
        })
        .notify(|e, wait| {
            tracing::warn!(
                provider = self.provider,
                model,
                error = ?e,
                wait_ms = wait.as_millis() as u64,
                "llm call failed; retrying"
            );
        })
        .await;
        let attempts = attempts.load(Ordering::Relaxed);
        result.map_err(|e| self.final_error(e, attempts))
    }

    fn final_error(&self, e: AttemptError, attempts: u32) -> Error {
        let provider = self.provider.to_string();
        match e {
            AttemptError::Status {
                status,
                body,
                request_id,
                ..
            } => Error::Status {
                provider,
                status,
                url: shown_url(&self.url),
                body,
                attempts,
                request_id,
            },
            AttemptError::Timeout => Error::Timeout {
                provider,
                attempts,
                timeout: self.timeout,
            },
            AttemptError::ConnectTimeout => Error::Connection {
                provider,
                attempts,
                message: format!(
                    "no connection within the connect timeout ({:?})",
                    self.connect_timeout
                ),
            },
            AttemptError::Connection(message) => Error::Connection {
                provider,
                attempts,
                message,
            },
        }
    }

    fn post(&self, body: &Bytes) -> reqwest::RequestBuilder {
        self.client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(body.clone())
    }

    async fn status_error(&self, resp: reqwest::Response) -> AttemptError {
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers());
        let request_id = self.request_id(resp.headers());
        let body = match tokio::time::timeout(self.timeout, resp.bytes()).await {
            Ok(Ok(b)) => truncate(&String::from_utf8_lossy(&b), BODY_LIMIT),
            _ => String::new(),
        };
        AttemptError::Status {
            status,
            body,
            retry_after,
            request_id,
        }
    }

    /// POSTs `body` and hands the 2xx answer to `parse`; the breaker counts the outcome.
    pub(crate) async fn call<T>(
        &self,
        model: &str,
        body: Bytes,
        parse: impl FnOnce(RawResponse) -> Result<T>,
    ) -> Result<T> {
        let permit = self.acquire(model)?;
        let result = self
            .with_retries(model, |n| {
                let body = &body;
                async move {
                    tracing::debug!(provider = self.provider, model, attempt = n, "llm request");
                    let start = Instant::now();
                    let once = async {
                        let resp = self
                            .post(body)
                            .send()
                            .await
                            .map_err(|e| AttemptError::from_reqwest(&e))?;
                        if !resp.status().is_success() {
                            return Err(self.status_error(resp).await);
                        }
                        let status = resp.status().as_u16();
                        let request_id = self.request_id(resp.headers());
                        let body = resp
                            .bytes()
                            .await
                            .map_err(|e| AttemptError::from_reqwest(&e))?;
                        Ok(RawResponse {
                            status,
                            request_id,
                            body,
                            latency: start.elapsed(),
                        })
                    };
                    tokio::time::timeout(self.timeout, once)
                        .await
                        .unwrap_or(Err(AttemptError::Timeout))
                }
            })
            .await
            .and_then(parse);
        permit.record(outcome(&result));
        result
    }

    /// POSTs `body` for a stream; returns the 2xx response (its body not yet read) and the
    /// breaker permit, which the stream settles when it ends.
    pub(crate) async fn open_stream(
        &self,
        model: &str,
        body: Bytes,
    ) -> Result<(reqwest::Response, Permit)> {
        let permit = self.acquire(model)?;
        let result = self
            .with_retries(model, |n| {
                let body = &body;
                async move {
                    tracing::debug!(
                        provider = self.provider,
                        model,
                        attempt = n,
                        "llm stream request"
                    );
                    let once = async {
                        let resp = self
                            .post(body)
                            .send()
                            .await
                            .map_err(|e| AttemptError::from_reqwest(&e))?;
                        if !resp.status().is_success() {
                            return Err(self.status_error(resp).await);
                        }
                        Ok(resp)
                    };
                    tokio::time::timeout(self.timeout, once)
                        .await
                        .unwrap_or(Err(AttemptError::Timeout))
                }
            })
            .await;
        let o = outcome(&result);
        match result {
            Ok(resp) => Ok((resp, permit)),
            Err(e) => {
                permit.record(o);
                Err(e)
            }
        }
    }
}

/// How the breaker counts a call's result: the provider's faults count, the caller's do not.
pub(crate) fn outcome<T>(r: &Result<T>) -> Outcome {
    match r {
        Ok(_) => Outcome::Success,
        Err(e) if e.is_retryable() => Outcome::Failure,
        Err(Error::MalformedResponse { .. } | Error::Stream { .. }) => Outcome::Failure,
        Err(_) => Outcome::Neutral,
    }
}

fn auth_header(scheme: &AuthScheme, key: &ApiKey) -> Result<(HeaderName, HeaderValue)> {
    let (name, raw) = match scheme {
        AuthScheme::Bearer => (
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", key.expose()),
        ),
        AuthScheme::Header(h) => (
            HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| Error::InvalidConfig(format!("auth header name {h:?} is invalid")))?,
            key.expose().to_string(),
        ),
    };
    let mut value = HeaderValue::from_str(&raw).map_err(|_| {
        Error::InvalidConfig("the api key holds characters not allowed in a header".into())
    })?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// `retry-after-ms` (OpenAI), else `Retry-After` in seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_provider_reads_base_urls_the_way_its_sdks_do() {
        use BaseUrlConvention::{IncludesVersion as OpenAi, ServerRoot as Anthropic};
        let url = |base, endpoint, c| endpoint_url(base, endpoint, c).unwrap().to_string();
        // OpenAI: the base includes the version; a bare host gets it.
        for (base, want) in [
            (
                "https://api.openai.com/v1",
                "https://api.openai.com/v1/chat/completions",
            ),
            ("http://h:4000/v1/", "http://h:4000/v1/chat/completions"),
            ("http://h:4000", "http://h:4000/v1/chat/completions"),
            ("http://h:4000/", "http://h:4000/v1/chat/completions"),
            (
                "https://g.example/openai/v1",
                "https://g.example/openai/v1/chat/completions",
            ),
            (
                "https://x.example/openai/deployments/prod",
                "https://x.example/openai/deployments/prod/chat/completions",
            ),
        ] {
            assert_eq!(url(base, "chat/completions", OpenAi), want, "{base}");
        }
        // Anthropic: the base is the server root; the older `/v1` form still works.
        for (base, want) in [
            (
                "https://api.anthropic.com",
                "https://api.anthropic.com/v1/messages",
            ),
            ("http://h:4000", "http://h:4000/v1/messages"),
            ("http://h:4000/", "http://h:4000/v1/messages"),
            ("http://h:4000/v1", "http://h:4000/v1/messages"),
            ("http://h:4000/v1/", "http://h:4000/v1/messages"),
            (
                "https://g.example/anthropic",
                "https://g.example/anthropic/v1/messages",
            ),
        ] {
            assert_eq!(url(base, "messages", Anthropic), want, "{base}");
        }
        // The query of a base URL is kept for the request but never shown.
        let u = endpoint_url("http://u:p@h/v1?key=secret", "messages", Anthropic).unwrap();
        assert_eq!(u.query(), Some("key=secret"));
        assert_eq!(shown_url(&u), "http://h/v1/messages");
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert("retry-after", HeaderValue::from_str(&date).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
