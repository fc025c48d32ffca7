//! Connection and producer settings: [`BusConfig`], built and validated by [`BusConfigBuilder`].

use crate::{Error, Result};
use std::time::Duration;

/// How records are compressed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// LZ4.
    Lz4,
    /// Snappy.
    Snappy,
    /// Zstandard (the default: best ratio for JSON, accepted by Kafka, Redpanda and Tansu).
    #[default]
    Zstd,
}

impl Compression {
    pub(crate) fn to_rskafka(self) -> rskafka::client::partition::Compression {
        use rskafka::client::partition::Compression as C;
        match self {
            Compression::None => C::NoCompression,
            Compression::Gzip => C::Gzip,
            Compression::Lz4 => C::Lz4,
            Compression::Snappy => C::Snappy,
            Compression::Zstd => C::Zstd,
        }
    }
}

/// Retries of retriable broker errors (connection loss, leader change, timeouts): exponential
/// backoff with jitter from `initial` up to `max` per wait, giving up after `max_elapsed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First wait.
    pub initial: Duration,
    /// Longest single wait.
    pub max: Duration,
    /// Total time after which a request fails with its last error.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    pub(crate) fn backoff(&self) -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_total_delay(Some(self.max_elapsed))
            .with_jitter()
            .without_max_times()
    }
}

/// How to reach the brokers and how to produce. Built with [`BusConfig::builder`].
#[derive(Debug, Clone)]
pub struct BusConfig {
    pub(crate) bootstrap: Vec<String>,
    pub(crate) client_id: String,
    pub(crate) linger: Duration,
    pub(crate) batch_size: usize,
    pub(crate) compression: Compression,
    pub(crate) retry: RetryPolicy,
    pub(crate) max_message_size: usize,
    pub(crate) request_timeout: Duration,
}

impl BusConfig {
    /// Starts a configuration for `bootstrap` servers, `host:port` separated by commas
    /// (for example `127.0.0.1:9092`).
    pub fn builder(bootstrap: impl AsRef<str>) -> BusConfigBuilder {
        BusConfigBuilder {
            config: BusConfig {
                bootstrap: bootstrap
                    .as_ref()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                client_id: "wflo".into(),
                linger: Duration::from_millis(5),
                batch_size: 1024 * 1024,
                compression: Compression::default(),
                retry: RetryPolicy::default(),
                max_message_size: 1024 * 1024,
                request_timeout: Duration::from_secs(10),
            },
        }
    }

    /// The bootstrap servers, comma-separated (for messages).
    pub fn bootstrap_servers(&self) -> String {
        self.bootstrap.join(",")
    }

    /// The largest message (key + value + headers) the producer accepts.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// The compression codec.
    pub fn compression(&self) -> Compression {
        self.compression
    }
}

/// Builder of [`BusConfig`]; `build` validates.
#[derive(Debug, Clone)]
pub struct BusConfigBuilder {
    config: BusConfig,
}

impl BusConfigBuilder {
    /// Client id sent to the brokers (default `wflo`).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.config.client_id = id.into();
        self
    }

    /// How long the producer waits to fill a batch (default 5 ms; zero sends at once).
    pub fn linger(mut self, d: Duration) -> Self {
        self.config.linger = d;
        self
    }

    /// Upper bound of one batch, in bytes before compression (default 1 MiB).
    pub fn batch_size(mut self, bytes: usize) -> Self {
        self.config.batch_size = bytes;
        self
    }

    /// Compression codec (default zstd).
    pub fn compression(mut self, c: Compression) -> Self {
        self.config.compression = c;
        self
    }

    /// Retry policy for retriable broker errors.
    pub fn retry(mut self, r: RetryPolicy) -> Self {
        self.config.retry = r;
        self
    }

    /// Largest message accepted, key + value + headers (default 1 MiB, Kafka's own default).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// Timeout of one admin request (default 10 s).
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.config.request_timeout = d;
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<BusConfig> {
        let c = &self.config;
        if c.bootstrap.is_empty() {
            return Err(Error::InvalidConfig(
                "give at least one bootstrap server as host:port, e.g. 127.0.0.1:9092".into(),
            ));
        }
        for s in &c.bootstrap {
            let ok = s
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(Error::InvalidConfig(format!(
                    "bootstrap server `{s}` is not host:port, e.g. 127.0.0.1:9092"
                )));
            }
        }
        if c.client_id.is_empty() {
            return Err(Error::InvalidConfig("client_id must not be empty".into()));
        }
        if c.max_message_size < 1024 {
            return Err(Error::InvalidConfig(
                "max_message_size must be at least 1024 bytes".into(),
            ));
        }
        if c.batch_size < c.max_message_size {
            return Err(Error::InvalidConfig(format!(
                "batch_size ({}) must be at least max_message_size ({}) so every message fits a batch",
                c.batch_size, c.max_message_size
            )));
        }
        if c.linger > Duration::from_secs(10) {
            return Err(Error::InvalidConfig(
                "linger must be at most 10 s; events would wait too long".into(),
            ));
        }
        if c.retry.initial.is_zero()
            || c.retry.max < c.retry.initial
            || c.retry.max_elapsed.is_zero()
        {
            return Err(Error::InvalidConfig(
                "retry policy needs 0 < initial <= max and a non-zero max_elapsed".into(),
            ));
        }
        if c.request_timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "request_timeout must be greater than zero".into(),
            ));
        }
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_validates() {
        let c = BusConfig::builder("127.0.0.1:9092, 127.0.0.1:9093")
            .build()
            .unwrap();
        assert_eq!(c.bootstrap_servers(), "127.0.0.1:9092,127.0.0.1:9093");
        assert!(BusConfig::builder("").build().is_err());
        let e = BusConfig::builder("localhost").build().unwrap_err();
        assert!(e.to_string().contains("host:port"), "{e}");
        assert!(
            BusConfig::builder("h:1")
                .max_message_size(10)
                .build()
                .is_err()
        );
        assert!(
            BusConfig::builder("h:1")
                .batch_size(2048)
                .max_message_size(4096)
                .build()
                .is_err()
        );
        assert!(
            BusConfig::builder("h:1")
                .linger(Duration::from_secs(60))
                .build()
                .is_err()
        );
    }
}
