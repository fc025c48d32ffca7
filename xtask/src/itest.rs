//! `cargo xtask itest` and `cargo xtask ci`.
//!
//! A crate takes part in `itest` when it has an `integration` feature. The services it needs are
//! declared in its own manifest:
//!
//! ```toml
//! [package.metadata.wflo]
//! services = ["postgres"]
//! ```

use crate::services::{self, Service};
use crate::{db, util};
use anyhow::{Context, Result, bail};
use std::time::Instant;

#[derive(Debug, Clone)]
pub(crate) struct SuiteCrate {
    pub(crate) name: String,
    pub(crate) services: Vec<Service>,
}

/// Workspace crates with an `integration` feature, in manifest order.
pub(crate) fn suite_crates() -> Result<Vec<SuiteCrate>> {
    let out = util::output(
        std::env::var("CARGO").as_deref().unwrap_or("cargo"),
        &[
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
            util::root().join("Cargo.toml").to_str().unwrap_or_default(),
        ],
    )?;
    let meta: serde_json::Value = serde_json::from_str(&out).context("parse cargo metadata")?;
    let mut crates = Vec::new();
    for pkg in meta["packages"].as_array().into_iter().flatten() {
        if pkg["features"].get("integration").is_none() {
            continue;
        }
        let name = pkg["name"].as_str().unwrap_or_default().to_string();
        let services = pkg["metadata"]["wflo"]["services"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| Service::parse(s.as_str().unwrap_or_default()))
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("[package.metadata.wflo] services of {name}"))?;
        crates.push(SuiteCrate { name, services });
    }
    Ok(crates)
}

fn choose(names: &[String]) -> Result<Vec<SuiteCrate>> {
    let all = suite_crates()?;
    if names.is_empty() {
        return Ok(all);
    }
    names
        .iter()
        .map(|n| {
            let wanted = if n.starts_with("wflo-") || n == "xtask" {
                n.clone()
            } else {
                format!("wflo-{n}")
            };
            all.iter()
                .find(|c| c.name == wanted)
                .cloned()
                .with_context(|| {
                    format!(
                        "`{n}` has no integration suite; crates with one: {}",
                        all.iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
        })
        .collect()
}

/// The `--features` value enabling `integration` on every given crate.
pub(crate) fn features(crates: &[SuiteCrate]) -> String {
    crates
        .iter()
        .map(|c| format!("{}/integration", c.name))
        .collect::<Vec<_>>()
        .join(",")
}

/// The connection variables the suites read (given to the test processes).
pub(crate) fn test_env(services: &[Service]) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    let mut set = |k: &str, v: String| vars.push((k.to_string(), v));
    if services.contains(&Service::Postgres) {
        set("WFLO_TEST_DATABASE_URL", db::test_url());
    }
    if services.contains(&Service::Redis) {
        if std::env::var_os("WFLO_TEST_REDIS_URL").is_none() {
            set(
                "WFLO_TEST_REDIS_URL",
                format!("redis://127.0.0.1:{}", services::REDIS_PORT),
            );
        }
        if let Some(bin) = util::which("redis-server") {
            // For suites that start a private server to stop and restart it.
            set("WFLO_TEST_REDIS_SERVER_BIN", bin.display().to_string());
        }
    }
    if services.contains(&Service::Kafka) {
        if std::env::var_os("WFLO_TEST_KAFKA_BOOTSTRAP").is_none() {
            set(
                "WFLO_TEST_KAFKA_BOOTSTRAP",
                services::KAFKA_ADDR.to_string(),
            );
        }
        if let Ok(bin) = services::tansu_binary() {
            // For suites that start a private broker to stop and restart it.
            set("WFLO_TEST_TANSU_BIN", bin.display().to_string());
        }
    }
    if services.contains(&Service::Temporal)
        && std::env::var_os("WFLO_TEST_TEMPORAL_ADDRESS").is_none()
    {
        set(
            "WFLO_TEST_TEMPORAL_ADDRESS",
            format!("http://{}", services::TEMPORAL_ADDR),
        );
    }
    if services.contains(&Service::Docker) && std::env::var_os("WFLO_TEST_SANDBOX_IMAGE").is_none()
    {
        set(
            "WFLO_TEST_SANDBOX_IMAGE",
            crate::sandbox_image::DEFAULT_TAG.to_string(),
        );
    }
    vars
}

pub(crate) fn run(names: &[String], install: bool, test_args: &[String]) -> Result<()> {
    let crates = choose(names)?;
    if crates.is_empty() {
        bail!("no crate has an integration suite yet");
    }
    let mut needed: Vec<Service> = Vec::new();
    for c in &crates {
        for s in &c.services {
            if !needed.contains(s) {
                needed.push(*s);
            }
        }
    }
    if !needed.is_empty() {
        services::up(&needed, install)?;
    }
    if needed.contains(&Service::Postgres) {
        db::setup()?;
    }
    if needed.contains(&Service::Docker) {
        crate::sandbox_image::ensure(crate::sandbox_image::DEFAULT_TAG)?;
    }
    let env = test_env(&needed);
    for (k, v) in &env {
        println!("export {k}={v}");
    }

    // One build for every suite, so the feature set (and so the dependency build) is shared.
    let features = features(&crates);
    let mut build = util::cargo();
    build.envs(env.iter().cloned());
    build.args(["test", "--no-run", "--features", &features]);
    for c in &crates {
        build.args(["-p", &c.name]);
    }
    util::run(&mut build).context("build the integration suites")?;

    let mut results = Vec::new();
    for c in &crates {
        let start = Instant::now();
        let mut cmd = util::cargo();
        cmd.envs(env.iter().cloned());
        cmd.args(["test", "-p", &c.name, "--features", &features]);
        if !test_args.is_empty() {
            cmd.arg("--").args(test_args);
        }
        println!("\n=== integration suite: {} ===", c.name);
        let ok = util::run(&mut cmd).is_ok();
        results.push((c.name.clone(), ok, start.elapsed()));
    }
    println!("\nintegration suites:");
    for (name, ok, took) in &results {
        println!(
            "  {:<16} {}  ({:.1}s)",
            name,
            if *ok { "pass" } else { "FAIL" },
            took.as_secs_f64()
        );
    }
    let failed: Vec<_> = results
        .iter()
        .filter(|r| !r.1)
        .map(|r| r.0.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("integration suites failed: {}", failed.join(", "));
    }
    Ok(())
}

pub(crate) fn ci(install: bool) -> Result<()> {
    let start = Instant::now();
    let step = |what: &str| {
        println!(
            "\n=== ci: {what} ({:.0}s) ===",
            start.elapsed().as_secs_f64()
        )
    };

    step("cargo fmt --check");
    util::run(util::cargo().args(["fmt", "--all", "--check"]))?;

    let crates = suite_crates()?;
    let features = features(&crates);
    step("cargo clippy -D warnings");
    let mut clippy = util::cargo();
    clippy.args(["clippy", "--workspace", "--all-targets"]);
    if !features.is_empty() {
        clippy.args(["--features", &features]);
    }
    util::run(clippy.args(["--", "-D", "warnings"]))?;

    step("cargo test (hermetic)");
    util::run(util::cargo().args(["test", "--workspace"]))?;

    step("integration suites");
    run(&[], install, &[])?;
    step("done");
    Ok(())
}
