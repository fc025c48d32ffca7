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
    if services.contains(&Service::Litellm) && std::env::var_os("WFLO_TEST_LITELLM_URL").is_none() {
        set(
            "WFLO_TEST_LITELLM_URL",
            format!("http://{}", crate::litellm::ADDR),
        );
        set("WFLO_TEST_LITELLM_KEY", crate::litellm::KEY.to_string());
    }
    if services.contains(&Service::Browser) && std::env::var_os("WFLO_TEST_WEBDRIVER_URL").is_none()
    {
        set(
            "WFLO_TEST_WEBDRIVER_URL",
            format!("http://{}", crate::browser::ADDR),
        );
        set("WFLO_TEST_CHROMIUM", crate::browser::CHROMIUM.to_string());
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
    let env = test_env(&needed);
    for (k, v) in &env {
        println!("export {k}={v}");
    }

    // One build for every suite, so the feature set (and so the dependency build) is shared;
    // then each crate's test executables run on their own, for a per-crate result. (Cargo
    // refuses `-p A --features B/integration`, and per-crate feature sets would rebuild shared
    // dependencies each time.)
    let features = features(&crates);
    let mut build = util::cargo();
    build.envs(env.iter().cloned());
    build.args([
        "test",
        "--no-run",
        "--message-format=json-render-diagnostics",
        "--features",
        &features,
    ]);
    for c in &crates {
        build.args(["-p", &c.name]);
    }
    let executables = test_executables(&mut build).context("build the integration suites")?;

    let mut results = Vec::new();
    for c in &crates {
        let start = Instant::now();
        println!("\n=== integration suite: {} ===", c.name);
        let mut ok = true;
        let mine: Vec<_> = executables.iter().filter(|e| e.package == c.name).collect();
        if mine.is_empty() {
            println!("no test executable was built for {}", c.name);
            ok = false;
        }
        for exe in mine {
            println!("     Running {} ({})", exe.target, exe.path.display());
            let status = std::process::Command::new(&exe.path)
                .args(test_args)
                .current_dir(&exe.package_dir)
                .envs(env.iter().cloned())
                .stdin(std::process::Stdio::null())
                .status()
                .with_context(|| format!("run {}", exe.path.display()))?;
            ok &= status.success();
        }
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

/// A test executable cargo built.
#[derive(Debug)]
pub(crate) struct TestExe {
    package: String,
    package_dir: std::path::PathBuf,
    target: String,
    path: std::path::PathBuf,
}

/// Runs a `cargo test --no-run --message-format=json...` build and collects the executables.
fn test_executables(cmd: &mut std::process::Command) -> Result<Vec<TestExe>> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("run cargo")?;
    if !out.status.success() {
        bail!("cargo test --no-run failed: {}", out.status);
    }
    let mut exes = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact"
            || !msg["profile"]["test"].as_bool().unwrap_or(false)
        {
            continue;
        }
        let Some(path) = msg["executable"].as_str() else {
            continue;
        };
        let manifest = std::path::PathBuf::from(msg["manifest_path"].as_str().unwrap_or_default());
        let package_dir = manifest
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        let package = package_name(&manifest)?;
        exes.push(TestExe {
            package,
            package_dir,
            target: format!(
                "{} {}",
                msg["target"]["kind"][0].as_str().unwrap_or("test"),
                msg["target"]["name"].as_str().unwrap_or("?")
            ),
            path: path.into(),
        });
    }
    Ok(exes)
}

/// The `name` in a package manifest.
fn package_name(manifest: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("read {}", manifest.display()))?;
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        if in_package && let Some(rest) = line.strip_prefix("name") {
            let value = rest
                .trim_start()
                .trim_start_matches('=')
                .trim()
                .trim_matches('"');
            return Ok(value.to_string());
        }
    }
    bail!("no package name in {}", manifest.display())
}
