//! The Redis connection pool: connect, health check, namespaced key-value calls, scripts.

use crate::config::RedisConfig;
use crate::{Error, Result};
use fred::prelude::{
    Builder, ClientLike, Config as FredConfig, Error as FredError, ErrorKind, Expiration,
    KeysInterface, Pool, ReconnectPolicy, SetOptions, TcpConfig,
};
use fred::types::scripts::Script;
use fred::types::{FromValue, MultipleKeys, MultipleValues};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wflo_types::redact_url;

/// A pool of connections to one Redis server. Cheap to clone. Every key it touches is put under
/// the configured key prefix. It reconnects by itself (exponential backoff) after the server
/// goes away; calls made meanwhile fail with [`Error::ConnectionLost`] or [`Error::Timeout`].
#[derive(Clone)]
pub struct RedisClient {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    config: RedisConfig,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("config", &self.inner.config)
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// The answer of [`RedisClient::health`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Round trip of a `PING`.
    pub latency: Duration,
    /// How many pooled connections are up.
    pub connected: usize,
    /// Pool size.
    pub pool_size: usize,
}

impl RedisClient {
    /// Connects every pooled connection; fails with [`Error::Unreachable`] when the server
    /// cannot be reached and [`Error::Auth`] when it refuses the credentials.
    pub async fn connect(config: &RedisConfig) -> Result<RedisClient> {
        let url = redact_url(&config.url);
        let mut fred_config = FredConfig::from_url(&config.url).map_err(|e| Error::InvalidUrl {
            url: url.clone(),
            reason: e.details().to_string(),
        })?;
        if config.tls {
            // Pick ring for rustls if no process-wide provider was chosen yet.
            let _ = rustls::crypto::ring::default_provider().install_default();
            if !config.tls_roots.is_empty() {
                fred_config.tls = Some(tls_with_extra_roots(&url, &config.tls_roots)?.into());
            }
        }
        let min = u32::try_from(config.reconnect_min_delay.as_millis()).unwrap_or(u32::MAX);
        let max = u32::try_from(config.reconnect_max_delay.as_millis()).unwrap_or(u32::MAX);
        let mut builder = Builder::from_config(fred_config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = config.connect_timeout;
                c.internal_command_timeout = config.connect_timeout;
                c.max_command_attempts = 1;
                c.tcp = TcpConfig {
                    nodelay: Some(true),
                    ..TcpConfig::default()
                };
            })
            .with_performance_config(|p| {
                p.default_command_timeout = config.command_timeout;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, min, max, 2));
        let pool = builder
            .build_pool(config.pool_size)
            .map_err(|e| connect_error(&url, e))?;
        match tokio::time::timeout(config.connect_timeout * 2, pool.init()).await {
            Ok(Ok(_task)) => {}
            Ok(Err(e)) => {
                let _ = pool.quit().await;
                return Err(connect_error(&url, e));
            }
            Err(_) => {
                let _ = pool.quit().await;
                return Err(Error::Unreachable {
                    url,
                    reason: format!("no connection within {:?}", config.connect_timeout * 2),
                });
            }
        }
        Ok(RedisClient {
            inner: Arc::new(Inner {
                pool,
                config: config.clone(),
            }),
        })
    }

    /// The configuration this client was made from.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// Whether every pooled connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.inner.pool.clients().iter().all(|c| c.is_connected())
    }

    /// `PING`s the server and reports the round trip and connected pool members.
    pub async fn health(&self) -> Result<Health> {
        let started = Instant::now();
        let pong: String = self
            .client()
            .ping(None)
            .await
            .map_err(|e| self.call_error("PING", e))?;
        if pong != "PONG" {
            return Err(Error::Redis {
                command: "PING",
                reason: format!("unexpected answer `{pong}`"),
            });
        }
        Ok(Health {
            latency: started.elapsed(),
            connected: self
                .inner
                .pool
                .clients()
                .iter()
                .filter(|c| c.is_connected())
                .count(),
            pool_size: self.inner.pool.size(),
        })
    }

    /// Closes every connection.
    pub async fn close(&self) {
        let _ = self.inner.pool.quit().await;
    }

    /// The full Redis key of `key` (the key prefix in front).
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.config.key_prefix)
    }

    /// Reads a value (`GET`).
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.client()
            .get(self.key(key))
            .await
            .map_err(|e| self.call_error("GET", e))
    }

    /// Writes a value (`SET`), with an expiry when `ttl` is given (millisecond precision).
    pub async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let expiry = ttl.map(|t| Expiration::PX(millis(t)));
        self.client()
            .set::<(), _, _>(self.key(key), value, expiry, None, false)
            .await
            .map_err(|e| self.call_error("SET", e))
    }

    /// Writes a value only when the key does not exist (`SET NX`); true when written.
    pub async fn set_nx(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let expiry = ttl.map(|t| Expiration::PX(millis(t)));
        let r: Option<String> = self
            .client()
            .set(self.key(key), value, expiry, Some(SetOptions::NX), false)
            .await
            .map_err(|e| self.call_error("SET", e))?;
        Ok(r.is_some())
    }

    /// Deletes a key (`UNLINK`); true when it existed.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        let n: i64 = self
            .client()
            .unlink(self.key(key))
            .await
            .map_err(|e| self.call_error("UNLINK", e))?;
        Ok(n > 0)
    }

    /// Whether a key exists.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        let n: i64 = self
            .client()
            .exists(self.key(key))
            .await
            .map_err(|e| self.call_error("EXISTS", e))?;
        Ok(n > 0)
    }

    /// Remaining time to live of a key: `None` when the key is missing or never expires.
    pub async fn ttl(&self, key: &str) -> Result<Option<Duration>> {
        let ms: i64 = self
            .client()
            .pttl(self.key(key))
            .await
            .map_err(|e| self.call_error("PTTL", e))?;
        Ok(u64::try_from(ms).ok().map(Duration::from_millis))
    }

    /// Adds `by` to an integer key (`INCRBY`) and returns the new value.
    pub async fn incr_by(&self, key: &str, by: i64) -> Result<i64> {
        self.client()
            .incr_by(self.key(key), by)
            .await
            .map_err(|e| self.call_error("INCRBY", e))
    }

    /// Deletes every key under `pattern_suffix` (a key-prefix-relative prefix) with `SCAN` and
    /// `UNLINK` in batches of up to `batch` keys; returns how many were deleted.
    pub(crate) async fn unlink_matching(&self, prefix: &str, batch: u32) -> Result<u64> {
        let pattern = format!("{}*", self.key(prefix));
        let client = self.client();
        let mut cursor = "0".to_string();
        let mut total = 0u64;
        loop {
            let (next, keys): (String, Vec<String>) = client
                .scan_page(cursor, pattern.clone(), Some(batch), None)
                .await
                .map_err(|e| self.call_error("SCAN", e))?;
            if !keys.is_empty() {
                let n: i64 = client
                    .unlink(keys)
                    .await
                    .map_err(|e| self.call_error("UNLINK", e))?;
                total += u64::try_from(n).unwrap_or(0);
            }
            if next == "0" {
                return Ok(total);
            }
            cursor = next;
        }
    }

    /// Runs a Lua script by hash, loading it first when the server does not know it.
    pub(crate) async fn eval<R, K, V>(
        &self,
        command: &'static str,
        script: &Script,
        keys: K,
        args: V,
    ) -> Result<R>
    where
        R: FromValue,
        K: Into<MultipleKeys> + Send,
        V: TryInto<MultipleValues> + Send,
        V::Error: Into<FredError> + Send,
    {
        script
            .evalsha_with_reload(self.client(), keys, args)
            .await
            .map_err(|e| self.call_error(command, e))
    }

    pub(crate) fn client(&self) -> &fred::prelude::Client {
        self.inner.pool.next()
    }

    /// Maps a client error of a call to this crate's error.
    pub(crate) fn call_error(&self, command: &'static str, e: FredError) -> Error {
        let details = e.details().to_string();
        match e.kind() {
            ErrorKind::Auth => Error::Auth {
                url: self.inner.config.redacted_url(),
                reason: details,
            },
            ErrorKind::Timeout => {
                if self.is_connected() {
                    Error::Timeout {
                        command,
                        after: self.inner.config.command_timeout,
                    }
                } else {
                    Error::ConnectionLost {
                        command,
                        reason: format!(
                            "no connection within {:?} ({details})",
                            self.inner.config.command_timeout
                        ),
                    }
                }
            }
            ErrorKind::IO | ErrorKind::Canceled | ErrorKind::Tls => Error::ConnectionLost {
                command,
                reason: details,
            },
            _ if is_auth_message(&details) => Error::Auth {
                url: self.inner.config.redacted_url(),
                reason: details,
            },
            _ => Error::Redis {
                command,
                reason: details,
            },
        }
    }
}

fn is_auth_message(details: &str) -> bool {
    let d = details.to_ascii_uppercase();
    d.contains("WRONGPASS")
        || d.contains("NOAUTH")
        || d.contains("INVALID PASSWORD")
        || d.contains("INVALID USERNAME-PASSWORD")
}

/// A rustls client configuration trusting the system's roots and `extra` (DER).
fn tls_with_extra_roots(url: &str, extra: &[Vec<u8>]) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    // The system's roots are a convenience here: unreadable ones are skipped, the given
    // ones must all load.
    let (_added, _skipped) =
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    for der in extra {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| Error::InvalidConfig {
                what: "tls root certificates",
                reason: format!("a certificate for {url} cannot be a trust root: {e}"),
            })?;
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn connect_error(url: &str, e: FredError) -> Error {
    let details = e.details().to_string();
    match e.kind() {
        ErrorKind::Auth => Error::Auth {
            url: url.to_string(),
            reason: details,
        },
        _ if is_auth_message(&details) => Error::Auth {
            url: url.to_string(),
            reason: details,
        },
        ErrorKind::Url | ErrorKind::Config => Error::InvalidUrl {
            url: url.to_string(),
            reason: details,
        },
        _ => Error::Unreachable {
            url: url.to_string(),
            reason: format!("{:?}: {details}", e.kind()),
        },
    }
}

pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}
