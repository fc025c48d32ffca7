//! The optional `litellm` service: LiteLLM's proxy (PyPI `litellm[proxy]`), an OpenAI- and
//! Anthropic-compatible server whose models answer with a fixed `mock_response`, so the
//! providers of wflo-llm are tried against a real third-party implementation of both APIs
//! (`/v1/chat/completions` and `/v1/messages`, plain and streamed, with usage) without a key.
//!
//! Installed by `cargo xtask services up litellm --install` into its own virtualenv in a cache
//! directory that later installs reuse (`$WFLO_CACHE_DIR`, else `$XDG_CACHE_HOME/wflo`, else
//! `~/.cache/wflo`): about 750 MB, about 2 minutes on the project's machines. Not started by a
//! bare `services up`; wflo-llm's suite names it in `[package.metadata.wflo] services`.

use crate::util::{self, spawn_daemon, state_dir, wait_until};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Where the proxy listens.
pub(crate) const ADDR: &str = "127.0.0.1:4000";
/// The proxy's master key: the API key the suites send.
pub(crate) const KEY: &str = "sk-wflo-litellm-test";
/// The version installed (the mock behaviour the suite relies on was checked with it).
const VERSION: &str = "1.108.7";

/// The mock answers of the configured models.
pub(crate) const OPENAI_MODEL: &str = "gpt-4o-mini";
const OPENAI_ANSWER: &str = "Paris is the capital of France.";

/// The proxy config: `gpt-4o-mini` answers `/v1/chat/completions` (plain and streamed) from its
/// `mock_response`; `claude-sonnet-4-5` answers `/v1/messages` from its `mock_response` (LiteLLM's
/// Anthropic mock never streams); `claude-haiku-4-5` is translated by the proxy to the OpenAI
/// mock above, so `/v1/messages` streams real Anthropic events with usage.
fn config() -> String {
    format!(
        r#"model_list:
  - model_name: {OPENAI_MODEL}
    litellm_params:
      model: openai/{OPENAI_MODEL}
      api_key: sk-unused
      mock_response: "{OPENAI_ANSWER}"
  - model_name: claude-sonnet-4-5
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_key: sk-unused
      mock_response: "Paris."
  - model_name: claude-haiku-4-5
    litellm_params:
      model: hosted_vllm/{OPENAI_MODEL}
      api_base: http://{ADDR}/v1
      api_key: {KEY}
general_settings:
  master_key: {KEY}
"#
    )
}

/// The cache directory that holds the virtualenv.
fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("WFLO_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("wflo");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache").join("wflo"),
        None => util::root().join("target").join("wflo-cache"),
    }
}

fn venv() -> PathBuf {
    cache_dir().join("litellm-venv")
}

fn binary() -> Result<PathBuf> {
    let bin = venv().join("bin").join("litellm");
    if bin.is_file() {
        Ok(bin)
    } else {
        bail!(
            "LiteLLM's proxy is not installed (looked for {}); run `cargo xtask services up litellm --install` \
             (installs litellm[proxy]=={VERSION} into that virtualenv, about 2 minutes)",
            bin.display()
        )
    }
}

/// Installs `litellm[proxy]` into its virtualenv unless it is there; prints how long it took.
pub(crate) fn install() -> Result<()> {
    if binary().is_ok() {
        return Ok(());
    }
    let dir = venv();
    let start = Instant::now();
    println!(
        "installing litellm[proxy]=={VERSION} into {} (about 2 minutes)",
        dir.display()
    );
    std::fs::create_dir_all(cache_dir())?;
    util::run(Command::new("python3").args(["-m", "venv"]).arg(&dir))?;
    util::run(
        Command::new(dir.join("bin").join("pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .arg(format!("litellm[proxy]=={VERSION}")),
    )
    .context("pip install litellm[proxy]")?;
    println!(
        "installed litellm[proxy] in {:.0}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One HTTP/1.1 request to the proxy with the master key; returns the status, head and body.
fn http(method: &str, path: &str, body: &str) -> Result<(u16, String, String)> {
    let auth = format!("Bearer {KEY}");
    util::http(
        ADDR,
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
    )
}

/// A real completion through the proxy; returns its version.
pub(crate) fn probe() -> Result<String> {
    binary()?;
    let (status, head, body) = http(
        "POST",
        "/v1/chat/completions",
        &format!(r#"{{"model":"{OPENAI_MODEL}","messages":[{{"role":"user","content":"ping"}}]}}"#),
    )?;
    if status != 200 || !body.contains(OPENAI_ANSWER) {
        bail!("the proxy answered http {status}: {}", body.trim());
    }
    let version = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-litellm-version:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    Ok(format!("LiteLLM proxy {version} (mock models)"))
}

pub(crate) fn up() -> Result<String> {
    let bin = binary()?;
    let dir = state_dir()?;
    let config_path = dir.join("litellm.yaml");
    std::fs::write(&config_path, config())?;
    let log = dir.join("litellm.log");
    let (host, port) = ADDR.split_once(':').expect("host:port");
    spawn_daemon(
        Command::new(bin)
            .arg("--config")
            .arg(&config_path)
            .args(["--host", host, "--port", port, "--num_workers", "1"])
            // No network here: use the model cost map shipped in the package.
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("LITELLM_MODE", "PRODUCTION")
            .env("LITELLM_TELEMETRY", "False"),
        &log,
        &dir.join("litellm.pid"),
    )?;
    wait_until("litellm", Duration::from_secs(120), probe)
        .with_context(|| format!("litellm log:\n{}", util::tail(&log, 20)))
}

pub(crate) fn down() -> Result<()> {
    util::stop_pidfile(&state_dir()?.join("litellm.pid"), Duration::from_secs(10))?;
    Ok(())
}
