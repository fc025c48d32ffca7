//! How to reach Redis: [`RedisConfig`] and its validating builder.

use crate::{Error, Result};
use std::time::Duration;
use wflo_types::redact_url;

/// Checks a name used inside Redis keys: 1-200 characters among `a-z A-Z 0-9 _ - . : /`
/// (no glob characters, so a namespace can be scanned with `MATCH` safely).
pub(crate) fn check_name(what: &'static str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 200
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            what,
            value: value.to_string(),
        })
    }
}

/// How to reach Redis. Built with [`RedisConfig::builder`].
#[derive(Clone)]
pub struct RedisConfig {
    pub(crate) url: String,
    pub(crate) pool_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) key_prefix: String,
    pub(crate) reconnect_min_delay: Duration,
    pub(crate) reconnect_max_delay: Duration,
    pub(crate) tls: bool,
    /// Extra trusted root certificates (DER) for `rediss://`, on top of the system's.
    pub(crate) tls_roots: Vec<Vec<u8>>,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("key_prefix", &self.key_prefix)
            .field("reconnect_min_delay", &self.reconnect_min_delay)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .field("tls", &self.tls)
            .field("tls_roots", &self.tls_roots.len())
            .finish()
    }
}

impl RedisConfig {
    /// Starts a configuration for `url`: `redis://[user:password@]host[:port][/db]`, or
    /// `rediss://` for TLS.
    pub fn builder(url: impl Into<String>) -> RedisConfigBuilder {
        RedisConfigBuilder {
            config: RedisConfig {
                url: url.into(),
                pool_size: 4,
                connect_timeout: Duration::from_secs(5),
                command_timeout: Duration::from_secs(5),
                key_prefix: "wflo:".into(),
                reconnect_min_delay: Duration::from_millis(50),
                reconnect_max_delay: Duration::from_secs(2),
                tls: false,
                tls_roots: Vec::new(),
            },
            tls_root_pem: Vec::new(),
        }
    }

    /// The URL with its password redacted.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The prefix put in front of every key this crate writes.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// Number of connections.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// Whether the URL asks for TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Timeout of one command.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// Timeout of establishing a connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
}

/// Builder of [`RedisConfig`]; `build` validates.
#[derive(Debug, Clone)]
pub struct RedisConfigBuilder {
    config: RedisConfig,
    tls_root_pem: Vec<u8>,
}

impl RedisConfigBuilder {
    /// Number of pooled connections (default 4, at most 256).
    pub fn pool_size(mut self, n: usize) -> Self {
        self.config.pool_size = n;
        self
    }

    /// How long to wait for a connection (TCP and TLS handshake, AUTH) (default 5 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout = d;
        self
    }

    /// How long one command may take, including waiting for a reconnection (default 5 s).
    pub fn command_timeout(mut self, d: Duration) -> Self {
        self.config.command_timeout = d;
        self
    }

    /// Prefix of every key (default `wflo:`); characters among `a-z A-Z 0-9 _ - . : /`.
    /// Give each tenant or test its own.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.key_prefix = prefix.into();
        self
    }

    /// Bounds of the exponential backoff between reconnection attempts (default 50 ms to 2 s).
    pub fn reconnect_delay(mut self, min: Duration, max: Duration) -> Self {
        self.config.reconnect_min_delay = min;
        self.config.reconnect_max_delay = max;
        self
    }

    /// Trusts the CA certificate(s) in `pem` (PEM text, one or more `CERTIFICATE` blocks) for
    /// `rediss://`, besides the system's roots: for a server whose certificate a private CA
    /// signed. May be called more than once.
    pub fn tls_root_certificates_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.tls_root_pem.extend_from_slice(pem.as_ref());
        self.tls_root_pem.push(b'\n');
        self
    }

    /// Validates and returns the configuration.
    pub fn build(mut self) -> Result<RedisConfig> {
        let c = &mut self.config;
        let invalid = |reason: &str| Error::InvalidUrl {
            url: redact_url(&c.url),
            reason: reason.to_string(),
        };
        let parsed = url::Url::parse(&c.url).map_err(|e| invalid(&e.to_string()))?;
        c.tls = match parsed.scheme() {
            "redis" => false,
            "rediss" => true,
            other => {
                return Err(invalid(&format!(
                    "the scheme `{other}` is not supported (redis:// or rediss://)"
                )));
            }
        };
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid("the url has no host"));
        }
        let db = parsed.path().trim_start_matches('/');
        if !db.is_empty() && db.parse::<u8>().is_err() {
            return Err(invalid("the path must be a database number 0-255"));
        }
        if fred::prelude::Config::from_url(&c.url).is_err() {
            return Err(invalid("the redis client cannot use this url"));
        }
        if !self.tls_root_pem.is_empty() {
            if !c.tls {
                return Err(Error::InvalidConfig {
                    what: "tls root certificates",
                    reason: "they were given for a redis:// url; use rediss:// to connect over tls"
                        .into(),
                });
            }
            c.tls_roots = parse_pem_certificates(&self.tls_root_pem)?;
        }
        if c.pool_size == 0 || c.pool_size > 256 {
            return Err(Error::InvalidConfig {
                what: "pool size",
                reason: format!("{} is out of range 1-256", c.pool_size),
            });
        }
        for (what, d) in [
            ("connect timeout", c.connect_timeout),
            ("command timeout", c.command_timeout),
            ("reconnect delay", c.reconnect_min_delay),
        ] {
            if d.is_zero() {
                return Err(Error::InvalidConfig {
                    what,
                    reason: "must be greater than zero".into(),
                });
            }
        }
        if c.reconnect_max_delay < c.reconnect_min_delay {
            return Err(Error::InvalidConfig {
                what: "reconnect delay",
                reason: "the maximum is below the minimum".into(),
            });
        }
        check_name("key prefix", &c.key_prefix)?;
        Ok(self.config)
    }
}

/// The DER certificates of every `CERTIFICATE` block in `pem`; none, or a broken block, is an
/// error.
fn parse_pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let invalid = |reason: String| Error::InvalidConfig {
        what: "tls root certificates",
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("{e}; give PEM text with BEGIN CERTIFICATE blocks")))?;
    if certs.is_empty() {
        return Err(invalid(
            "no BEGIN CERTIFICATE block found; give the CA certificate as PEM text".into(),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_redis_and_rediss() {
        let c = RedisConfig::builder("redis://127.0.0.1:6379/2")
            .build()
            .unwrap();
        assert!(!c.tls());
        let c = RedisConfig::builder("rediss://user:secret@cache.example:6380")
            .pool_size(8)
            .build()
            .unwrap();
        assert!(c.tls());
        assert_eq!(c.pool_size(), 8);
        assert!(!format!("{c:?}").contains("secret"));
        assert!(c.redacted_url().contains("***"));
    }

    #[test]
    fn tls_root_certificates_are_checked_when_built() {
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["ca.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem();
        let c = RedisConfig::builder("rediss://127.0.0.1:6380")
            .tls_root_certificates_pem(&ca)
            .tls_root_certificates_pem(&ca)
            .build()
            .unwrap();
        assert_eq!(c.tls_roots.len(), 2);

        let err = RedisConfig::builder("redis://127.0.0.1:6379")
            .tls_root_certificates_pem(&ca)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("use rediss://"), "{err}");

        for bad in [
            "",
            "not pem",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let err = RedisConfig::builder("rediss://127.0.0.1:6380")
                .tls_root_certificates_pem(bad)
                .build()
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidConfig {
                        what: "tls root certificates",
                        ..
                    }
                ),
                "{bad:?}: {err:?}"
            );
        }
        let broken = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        let err = RedisConfig::builder("rediss://127.0.0.1:6380")
            .tls_root_certificates_pem(broken)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    }

    #[test]
    fn refuses_malformed_urls() {
        for url in [
            "",
            "127.0.0.1:6379",
            "http://127.0.0.1:6379",
            "redis://",
            "redis://127.0.0.1:notaport",
            "redis://127.0.0.1:6379/notadb",
        ] {
            let err = RedisConfig::builder(url).build().unwrap_err();
            assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err:?}");
        }
        let err = RedisConfig::builder("redis://u:hunter2@[::1:6379")
            .build()
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn refuses_bad_numbers_and_prefixes() {
        let b = || RedisConfig::builder("redis://127.0.0.1");
        assert!(matches!(
            b().pool_size(0).build(),
            Err(Error::InvalidConfig { .. })
        ));
        assert!(matches!(
            b().command_timeout(Duration::ZERO).build(),
            Err(Error::InvalidConfig { .. })
        ));
        assert!(matches!(
            b().reconnect_delay(Duration::from_secs(2), Duration::from_millis(1))
                .build(),
            Err(Error::InvalidConfig { .. })
        ));
        assert!(matches!(
            b().key_prefix("a*b").build(),
            Err(Error::InvalidName { .. })
        ));
    }
}
