//! `wflo doctor`: one line per service — ok, not configured, or what to do.

use crate::exit::{UNREACHABLE, USAGE, coded};
use std::time::Duration;
use wflo_core::Config;
use wflo_core::bus::{Bus, BusConfig};
use wflo_core::cache::RedisClient;
use wflo_core::db::{Db, DbConfig, redact};
use wflo_core::llm::{ProviderConfig, ReplayProvider, create_provider};
use wflo_core::sandbox::SandboxRuntime;

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    /// Works.
    Ok(String),
    /// Works, with something to do.
    Warn(String),
    /// Not configured: what Wflo does instead.
    Off(String),
    /// Configured and failing: what to do.
    Fail(String),
}

impl Check {
    fn line(&self, name: &str) -> String {
        let (tag, text) = match self {
            Check::Ok(t) => ("ok", t),
            Check::Warn(t) => ("warn", t),
            Check::Off(t) => ("--", t),
            Check::Fail(t) => ("FAIL", t),
        };
        format!("{name:<10} {tag:<5} {text}")
    }
}

const LIMIT: Duration = Duration::from_secs(10);

/// The error and its causes on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        src = s.source();
    }
    text
}

async fn within<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(LIMIT, fut)
        .await
        .unwrap_or_else(|_| Err(format!("{what} did not answer within {LIMIT:?}")))
}

async fn database(config: &Config) -> Check {
    let url = redact(config.database_url());
    let db_config = match DbConfig::builder(config.database_url())
        .auto_migrate(false)
        .max_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => return Check::Fail(format!("{e}; fix DATABASE_URL")),
    };
    let db = match within("the database", async {
        Db::connect(&db_config).await.map_err(|e| chain(&e))
    })
    .await
    {
        Ok(db) => db,
        Err(e) if e.contains("pending migration") => {
            return Check::Warn(format!("{url}: {e}"));
        }
        Err(e) => return Check::Fail(e),
    };
    if let Err(e) = db.ping().await {
        return Check::Fail(format!("{url}: {}", chain(&e)));
    }
    match db.schema_status().await {
        Ok(s) if s.pending.is_empty() && s.unknown.is_empty() => Check::Ok(format!(
            "{url} ({:?}), schema current ({} migrations)",
            db.backend(),
            s.applied.len()
        )),
        Ok(s) if !s.unknown.is_empty() => Check::Fail(format!(
            "{url}: the schema is newer than this wflo ({}); upgrade wflo",
            s.unknown.join(", ")
        )),
        Ok(s) => Check::Warn(format!(
            "{url}: {} pending migration(s); run `wflo migrate` (other commands apply them too)",
            s.pending.len()
        )),
        Err(e) => Check::Fail(format!("{url}: {}", chain(&e))),
    }
}

async fn redis(config: &Config) -> Check {
    let Some(url) = config.redis_url() else {
        return Check::Off(
            "REDIS_URL not set: in-process response cache and locks (one process)".into(),
        );
    };
    let shown = wflo_core::db::redact(url);
    let result = within("Redis", async {
        let c = config
            .redis_config()
            .map_err(|e| chain(&e))?
            .ok_or_else(|| "REDIS_URL is empty".to_string())?;
        let client = RedisClient::connect(&c).await.map_err(|e| chain(&e))?;
        client.health().await.map_err(|e| chain(&e))
    })
    .await;
    match result {
        Ok(h) => Check::Ok(format!("{shown}, PING in {:?}", h.latency)),
        Err(e) => Check::Fail(format!(
            "{e} (or unset REDIS_URL to use the in-process cache)"
        )),
    }
}

async fn kafka(config: &Config) -> Check {
    let Some(servers) = config.kafka_bootstrap() else {
        return Check::Off(
            "KAFKA_BOOTSTRAP_SERVERS not set: events wait in the outbox until `wflo relay` runs"
                .into(),
        );
    };
    let result = within("Kafka", async {
        let c = BusConfig::builder(servers).build().map_err(|e| chain(&e))?;
        let bus = Bus::connect(c).await.map_err(|e| chain(&e))?;
        bus.list_topics().await.map_err(|e| chain(&e))
    })
    .await;
    match result {
        Ok(topics) => Check::Ok(format!("{servers}, {} topic(s)", topics.len())),
        Err(e) => Check::Fail(format!(
            "{e} (or unset KAFKA_BOOTSTRAP_SERVERS: events then wait in the outbox)"
        )),
    }
}

/// `host:port` of a Temporal address (`http://host:port` or `host:port`).
pub(crate) fn host_port(address: &str) -> String {
    let a = address
        .trim()
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let a = a.split('/').next().unwrap_or(a);
    if a.contains(':') {
        a.to_string()
    } else {
        format!("{a}:7233")
    }
}

async fn temporal(config: &Config) -> Check {
    let Some(address) = config.temporal_address() else {
        return Check::Off("TEMPORAL_ADDRESS not set: the in-process engine runs workflows".into());
    };
    let target = host_port(address);
    let result = within("Temporal", async {
        tokio::net::TcpStream::connect(&target)
            .await
            .map_err(|e| format!("cannot reach {target}: {e}"))
    })
    .await;
    match result {
        Ok(_) => Check::Ok(format!(
            "{target} reachable (namespace {}, task queue {}); this build runs workflows with the local engine",
            config.temporal_namespace(),
            config.temporal_task_queue()
        )),
        Err(e) => Check::Fail(format!(
            "{e}; start it (`cargo xtask services up temporal`) or unset TEMPORAL_ADDRESS"
        )),
    }
}

async fn docker(config: &Config) -> Check {
    let sandbox = match super::sandbox_config(config) {
        Ok(s) => s,
        Err(e) => return Check::Fail(format!("{e:#}")),
    };
    let image = sandbox.image().to_string();
    let socket = sandbox.docker_socket().to_string();
    let result = within("the Docker engine", async {
        SandboxRuntime::new(sandbox).await.map_err(|e| chain(&e))
    })
    .await;
    match result {
        Ok(rt) => {
            rt.shutdown().await;
            Check::Ok(format!("{socket}, sandbox image {image} present"))
        }
        Err(e) => Check::Fail(format!(
            "{e} (code steps need it; `cargo xtask services up docker --install` starts the engine, \
             `cargo xtask sandbox-image` builds the image)"
        )),
    }
}

fn llm(config: &Config) -> Check {
    let s = config.llm();
    let name = match (
        &s.provider,
        &s.cassette,
        &s.openai_api_key,
        &s.anthropic_api_key,
    ) {
        (Some(p), _, _, _) => p.clone(),
        (None, Some(_), _, _) => "replay".into(),
        (None, None, Some(_), _) => "openai".into(),
        (None, None, None, Some(_)) => "anthropic".into(),
        _ => {
            return Check::Off(
                "no provider: llm steps fail; set OPENAI_API_KEY or ANTHROPIC_API_KEY, or \
                 WFLO_LLM_CASSETTE for offline replay"
                    .into(),
            );
        }
    };
    match name.as_str() {
        "replay" => match &s.cassette {
            None => Check::Fail(
                "WFLO_LLM_PROVIDER=replay needs WFLO_LLM_CASSETTE (a cassette file)".into(),
            ),
            Some(path) => match ReplayProvider::replay(path) {
                Ok(r) => Check::Ok(format!(
                    "replay cassette {} ({} recorded answer(s)), offline",
                    path.display(),
                    r.len()
                )),
                Err(e) => Check::Fail(chain(&e)),
            },
        },
        "openai" | "anthropic" => {
            let (key, base, var) = if name == "openai" {
                (&s.openai_api_key, &s.openai_base_url, "OPENAI_API_KEY")
            } else {
                (
                    &s.anthropic_api_key,
                    &s.anthropic_base_url,
                    "ANTHROPIC_API_KEY",
                )
            };
            let mut b = ProviderConfig::builder().maybe_api_key(key.clone());
            if let Some(u) = base {
                b = match b.base_url(u) {
                    Ok(b) => b,
                    Err(e) => return Check::Fail(chain(&e)),
                };
            }
            match b.build().and_then(|c| create_provider(&name, &c)) {
                Ok(_) => Check::Ok(format!(
                    "{name} ({var} set{}); not called by doctor",
                    base.as_ref()
                        .map(|u| format!(", base URL {u}"))
                        .unwrap_or_default()
                )),
                Err(e) => Check::Fail(chain(&e)),
            }
        }
        other => Check::Fail(format!(
            "unknown provider `{other}`; use openai, anthropic or replay"
        )),
    }
}

pub(crate) async fn doctor() -> anyhow::Result<u8> {
    let config = match super::config() {
        Ok(c) => c,
        Err(e) => {
            println!("{}", Check::Fail(format!("{e:#}")).line("config"));
            return Err(coded(USAGE, "fix the configuration above"));
        }
    };
    let (db, redis, kafka, temporal, docker) = tokio::join!(
        database(&config),
        redis(&config),
        kafka(&config),
        temporal(&config),
        docker(&config)
    );
    let checks = [
        ("database", db),
        ("redis", redis),
        ("kafka", kafka),
        ("temporal", temporal),
        ("docker", docker),
        ("llm", llm(&config)),
    ];
    let mut failed = Vec::new();
    for (name, check) in &checks {
        println!("{}", check.line(name));
        if matches!(check, Check::Fail(_)) {
            failed.push(*name);
        }
    }
    if failed.is_empty() {
        println!("all configured services answer");
        Ok(0)
    } else {
        Err(coded(
            UNREACHABLE,
            format!("{} check(s) failed: {}", failed.len(), failed.join(", ")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporal_addresses_become_host_port() {
        assert_eq!(host_port("127.0.0.1:7233"), "127.0.0.1:7233");
        assert_eq!(host_port("http://localhost:7233/"), "localhost:7233");
        assert_eq!(host_port("temporal"), "temporal:7233");
    }

    #[test]
    fn lines_say_ok_off_or_fail() {
        assert_eq!(Check::Fail("x".into()).line("redis"), "redis      FAIL  x");
        assert!(Check::Off("y".into()).line("kafka").contains("--"));
    }

    #[test]
    fn no_provider_is_not_a_failure_but_says_what_to_set() {
        let c = Config::builder().build().unwrap();
        match llm(&c) {
            Check::Off(t) => assert!(t.contains("OPENAI_API_KEY"), "{t}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_cassette_fails_naming_it() {
        let c = Config::builder()
            .llm(wflo_core::LlmSettings {
                cassette: Some("/nonexistent/x.jsonl".into()),
                ..Default::default()
            })
            .build()
            .unwrap();
        match llm(&c) {
            Check::Fail(t) => assert!(t.contains("/nonexistent/x.jsonl"), "{t}"),
            other => panic!("{other:?}"),
        }
    }
}
