#![cfg(feature = "integration")]
//! Redis-only behaviour: health, basic calls and namespacing, the typed errors (malformed url,
//! unreachable, wrong password, timeout, connection lost, restart), and round trips per lock
//! cycle and per cache hit counted by the server.

mod common;

use common::{PrivateRedis, client, free_port, unique_prefix};
use std::time::{Duration, Instant};
use wflo_cache::{
    CacheValue, DistributedLock, Error, LlmCache, LlmCacheConfig, LlmCacheKey, LockOptions,
    RedisClient, RedisConfig,
};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Reply {
    text: String,
}

impl CacheValue for Reply {
    const KIND: &'static str = "reply";
    const SCHEMA_VERSION: u32 = 1;
}

fn quick(url: &str) -> RedisConfig {
    RedisConfig::builder(url)
        .key_prefix(unique_prefix("private"))
        .pool_size(1)
        .connect_timeout(Duration::from_millis(500))
        .command_timeout(Duration::from_millis(500))
        .reconnect_delay(Duration::from_millis(20), Duration::from_millis(100))
        .build()
        .unwrap()
}

#[tokio::test]
async fn health_check_reports_the_pool() {
    let c = client("health").await;
    let h = c.health().await.unwrap();
    assert_eq!(h.pool_size, 4);
    assert_eq!(h.connected, 4);
    assert!(h.latency > Duration::ZERO && h.latency < Duration::from_secs(1));
    assert!(c.is_connected());
}

#[tokio::test]
async fn set_get_delete_and_expiry() {
    let c = client("kv").await;
    assert_eq!(c.get("a").await.unwrap(), None);
    c.set("a", b"one", None).await.unwrap();
    assert_eq!(c.get("a").await.unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(c.ttl("a").await.unwrap(), None);
    assert!(!c.set_nx("a", b"two", None).await.unwrap());
    assert!(c.delete("a").await.unwrap());
    assert!(!c.delete("a").await.unwrap());
    assert!(!c.exists("a").await.unwrap());

    c.set("b", b"x", Some(Duration::from_millis(300)))
        .await
        .unwrap();
    let ttl = c.ttl("b").await.unwrap().unwrap();
    assert!(ttl <= Duration::from_millis(300) && ttl > Duration::from_millis(100));
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(c.get("b").await.unwrap(), None);
    assert_eq!(c.incr_by("n", 5).await.unwrap(), 5);
    assert_eq!(c.incr_by("n", -2).await.unwrap(), 3);
}

#[tokio::test]
async fn key_prefixes_keep_clients_apart() {
    let (a, b) = (client("ns-a").await, client("ns-b").await);
    a.set("k", b"from a", None).await.unwrap();
    assert_eq!(b.get("k").await.unwrap(), None);
    assert!(a.key("k").starts_with(a.config().key_prefix()));
    // Locks and cache entries follow the prefix too.
    let opts = LockOptions::builder(Duration::from_secs(10))
        .build()
        .unwrap();
    let la = DistributedLock::redis(a.clone());
    let lb = DistributedLock::redis(b.clone());
    let g = la.try_acquire("job", &opts).await.unwrap().unwrap();
    let g2 = lb
        .try_acquire("job", &opts)
        .await
        .unwrap()
        .expect("other prefix, other lock");
    assert!(g.release().await.unwrap() && g2.release().await.unwrap());
}

#[tokio::test]
async fn malformed_url_is_refused_before_connecting() {
    for url in [
        "redis//127.0.0.1",
        "http://127.0.0.1:6379",
        "redis://127.0.0.1:99999",
    ] {
        let err = RedisConfig::builder(url).build().unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err:?}");
        assert!(err.to_string().contains("redis://"), "{err}");
    }
}

#[tokio::test]
async fn unreachable_server_is_a_typed_error() {
    let port = free_port();
    let started = Instant::now();
    let err = RedisClient::connect(&quick(&format!("redis://127.0.0.1:{port}")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // rediss:// against a plain server: the TLS handshake fails, also as unreachable.
    let plain = PrivateRedis::start(&[]);
    let err = RedisClient::connect(&quick(&format!("rediss://127.0.0.1:{}", plain.port)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
}

#[tokio::test]
async fn wrong_password_is_an_auth_error() {
    let server = PrivateRedis::start(&["--requirepass", "s3cret"]);
    let bad = format!("redis://:wrong@127.0.0.1:{}", server.port);
    let err = RedisClient::connect(&quick(&bad)).await.unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(!err.to_string().contains("wrong"), "password leaked: {err}");
    assert!(err.to_string().contains("password"), "{err}");

    let good = format!("redis://:s3cret@127.0.0.1:{}", server.port);
    let c = RedisClient::connect(&quick(&good)).await.unwrap();
    c.set("k", b"v", None).await.unwrap();
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
}

#[tokio::test]
async fn frozen_server_times_out_with_a_typed_error() {
    let server = PrivateRedis::start(&[]);
    let c = RedisClient::connect(&quick(&server.url())).await.unwrap();
    c.set("k", b"v", None).await.unwrap();
    server.signal("-STOP");
    let started = Instant::now();
    let err = c.get("k").await.unwrap_err();
    let took = started.elapsed();
    server.signal("-CONT");
    assert!(
        matches!(err, Error::Timeout { command: "GET", .. }),
        "{err:?}"
    );
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn connection_lost_during_a_call_is_a_typed_error() {
    let mut server = PrivateRedis::start(&[]);
    let c = RedisClient::connect(
        &RedisConfig::builder(server.url())
            .key_prefix(unique_prefix("lost"))
            .pool_size(1)
            .command_timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    c.set("k", b"v", None).await.unwrap();
    server.signal("-STOP");
    let call = tokio::spawn({
        let c = c.clone();
        async move { c.get("k").await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.stop();
    let err = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the call must end when the connection drops, not wait for the timeout")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, Error::ConnectionLost { command: "GET", .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn redis_restart_mid_test_fails_typed_then_recovers() {
    let mut server = PrivateRedis::start(&[]);
    let c = RedisClient::connect(&quick(&server.url())).await.unwrap();
    let locks = DistributedLock::redis(c.clone());
    let cache = LlmCache::redis(c.clone(), LlmCacheConfig::default());
    let key = LlmCacheKey::builder("restart", "m")
        .temperature(0.0)
        .build()
        .unwrap();
    let opts = LockOptions::builder(Duration::from_secs(5))
        .build()
        .unwrap();
    c.set("k", b"v", None).await.unwrap();
    assert!(cache.set(&key, &Reply { text: "hi".into() }).await.unwrap());

    server.stop();
    let err = c.get("k").await.unwrap_err();
    assert!(matches!(err, Error::ConnectionLost { .. }), "{err:?}");
    assert!(err.is_retryable());
    let err = locks.try_acquire("job", &opts).await.unwrap_err();
    assert!(matches!(err, Error::ConnectionLost { .. }), "{err:?}");
    let err = cache.get::<Reply>(&key).await.unwrap_err();
    assert!(matches!(err, Error::ConnectionLost { .. }), "{err:?}");
    assert!(c.health().await.is_err());

    server.restart();
    // The client reconnects by itself (backoff up to 100 ms here).
    let started = Instant::now();
    loop {
        match c.health().await {
            Ok(_) => break,
            Err(e) => {
                assert!(e.is_retryable(), "{e:?}");
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "no reconnection: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // A fresh server (no persistence): the data is gone, every call works, scripts reload.
    assert_eq!(c.get("k").await.unwrap(), None);
    c.set("k", b"again", None).await.unwrap();
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some(&b"again"[..]));
    let g = locks
        .try_acquire("job", &opts)
        .await
        .unwrap()
        .expect("lock after restart");
    assert!(g.release().await.unwrap());
    assert_eq!(cache.get::<Reply>(&key).await.unwrap(), None);
    assert!(cache.set(&key, &Reply { text: "hi".into() }).await.unwrap());
    assert!(cache.get::<Reply>(&key).await.unwrap().is_some());
}

#[tokio::test]
async fn a_lock_cycle_costs_two_round_trips() {
    let server = PrivateRedis::start(&[]);
    let c = RedisClient::connect(&quick(&server.url())).await.unwrap();
    let locks = DistributedLock::redis(c.clone());
    let opts = LockOptions::builder(Duration::from_secs(30))
        .build()
        .unwrap();
    // Warm up: scripts loaded.
    let g = locks.try_acquire("warm", &opts).await.unwrap().unwrap();
    g.release().await.unwrap();
    let monitor = server.monitor();
    monitor.reset();
    for i in 0..50 {
        let g = locks
            .try_acquire(&format!("job{}", i % 5), &opts)
            .await
            .unwrap()
            .unwrap();
        assert!(g.release().await.unwrap());
    }
    let sent = monitor.client_commands();
    assert!(
        sent.len() <= 150,
        "more than 3 round trips per cycle: {}",
        sent.len()
    );
    assert_eq!(sent.len(), 100, "{sent:#?}");
    assert!(
        sent.iter()
            .all(|l| l.contains("\"EVALSHA\"") || l.contains("\"evalsha\"")),
        "{sent:#?}"
    );
}

#[tokio::test]
async fn a_cache_hit_costs_one_round_trip() {
    let server = PrivateRedis::start(&[]);
    let c = RedisClient::connect(&quick(&server.url())).await.unwrap();
    let cache = LlmCache::redis(c, LlmCacheConfig::default());
    let key = LlmCacheKey::builder("rt", "m")
        .temperature(0.0)
        .build()
        .unwrap();
    cache.set(&key, &Reply { text: "x".into() }).await.unwrap();
    assert!(cache.get::<Reply>(&key).await.unwrap().is_some());
    let monitor = server.monitor();
    monitor.reset();
    for _ in 0..40 {
        assert!(cache.get::<Reply>(&key).await.unwrap().is_some());
    }
    let sent = monitor.client_commands();
    assert_eq!(sent.len(), 40, "{sent:#?}");
    let s = cache.stats("rt").await.unwrap();
    assert_eq!(s.hits, 41);
}

#[tokio::test]
async fn watchdog_reports_loss_when_the_key_is_deleted_behind_its_back() {
    let server = PrivateRedis::start(&[]);
    let c = RedisClient::connect(&quick(&server.url())).await.unwrap();
    let locks = DistributedLock::redis(c.clone());
    let opts = LockOptions::builder(Duration::from_millis(600))
        .renew_every(Duration::from_millis(100))
        .build()
        .unwrap();
    let g = locks.try_acquire("job", &opts).await.unwrap().unwrap();
    assert!(c.delete("lock:job").await.unwrap());
    tokio::time::timeout(Duration::from_millis(400), g.lost())
        .await
        .expect("watchdog did not report the lost lock at its next renewal");
    assert!(!g.release().await.unwrap());
}

/// A CA and a server certificate for 127.0.0.1 it signed, written as PEM files into `dir`;
/// returns the CA's PEM text.
fn private_ca_and_server_cert(dir: &std::path::Path) -> String {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wflo test ca");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server_cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    ca_cert.pem()
}

#[tokio::test]
async fn rediss_to_a_server_signed_by_a_private_ca_works_when_that_ca_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = private_ca_and_server_cert(dir.path());
    let tls_port = free_port();
    let path = |f: &str| dir.path().join(f).display().to_string();
    let _server = PrivateRedis::start(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &path("server.pem"),
        "--tls-key-file",
        &path("server.key"),
        "--tls-ca-cert-file",
        &path("ca.pem"),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let trusted = RedisConfig::builder(&url)
        .key_prefix(unique_prefix("tls"))
        .pool_size(2)
        .connect_timeout(Duration::from_secs(2))
        .tls_root_certificates_pem(&ca_pem)
        .build()
        .unwrap();
    let c = RedisClient::connect(&trusted).await.unwrap();
    let health = c.health().await.unwrap();
    assert_eq!(health.connected, 2, "{health:?}");
    c.set("k", "über tls".as_bytes(), None).await.unwrap();
    assert_eq!(
        c.get("k").await.unwrap().as_deref(),
        Some("über tls".as_bytes())
    );
    // The lock works over TLS too (its scripts and fencing counter).
    let lock = DistributedLock::redis(c.clone());
    let opts = LockOptions::builder(Duration::from_secs(5))
        .build()
        .unwrap();
    let guard = lock
        .try_acquire("res", &opts)
        .await
        .unwrap()
        .expect("free lock");
    assert!(guard.release().await.unwrap());

    // Without the private CA the server's certificate is not trusted: unreachable, and the
    // reason says why.
    let untrusted = RedisConfig::builder(&url)
        .key_prefix(unique_prefix("tls"))
        .pool_size(1)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let err = RedisClient::connect(&untrusted).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "the reason should name the certificate: {err}"
    );
}
