//! `cargo xtask sandbox-image`: builds the sandbox image without a registry.
//!
//! Where a registry answers, `docker build docker/sandbox` (FROM python:3.11-slim) makes the
//! image. Here none does, so the same image is made from Debian's packages: `debootstrap
//! --variant=minbase --include=python3 bookworm`, a user with uid/gid 1000, docs, man pages,
//! locales and tests stripped, every setuid/setgid bit removed, then `docker import`.

use crate::util;
use anyhow::{Context, Result, bail};
use std::process::{Command, Stdio};
use std::time::Instant;

pub(crate) const DEFAULT_TAG: &str = "wflo-sandbox-python:3.11";

/// Builds the image when it is missing.
pub(crate) fn ensure(tag: &str) -> Result<()> {
    if image_exists(tag) {
        return Ok(());
    }
    build(tag, false)
}

fn image_exists(tag: &str) -> bool {
    util::output("docker", &["image", "inspect", "--format", "{{.Id}}", tag]).is_ok()
}

/// The Debian mirror apt is configured with (deb822 `URIs:` or a one-line `deb` entry).
fn mirror() -> Result<String> {
    let mut files = vec![std::path::PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(dir.filter_map(|e| e.ok()).map(|e| e.path()));
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let ext = file
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        for line in text.lines().map(str::trim) {
            let candidate = if ext == "sources" {
                line.strip_prefix("URIs:").map(str::trim)
            } else if ext == "list" || file.ends_with("sources.list") {
                line.strip_prefix("deb ")
                    .and_then(|rest| rest.split_whitespace().find(|w| w.contains("://")))
            } else {
                None
            };
            if let Some(uri) = candidate {
                let uri = uri.split_whitespace().next().unwrap_or_default();
                if uri.trim_end_matches('/').ends_with("/debian") {
                    return Ok(uri.to_string());
                }
            }
        }
    }
    bail!("no Debian mirror found in /etc/apt/sources.list*; set WFLO_DEBIAN_MIRROR")
}

pub(crate) fn build(tag: &str, force: bool) -> Result<()> {
    if !force && image_exists(tag) {
        println!("sandbox image {tag} already present (use --force to rebuild)");
        return Ok(());
    }
    crate::services::docker_probe().context(
        "the sandbox image needs a running Docker engine; run `cargo xtask services up docker`",
    )?;
    // A registry that answers makes this simple.
    let dockerfile_dir = util::root().join("docker/sandbox");
    if std::env::var("WFLO_SANDBOX_BUILD").as_deref() == Ok("dockerfile") {
        return util::run(
            Command::new("docker")
                .args(["build", "-t", tag])
                .arg(&dockerfile_dir),
        );
    }
    if !util::has("debootstrap") {
        bail!(
            "debootstrap is not installed; run `cargo xtask services up docker --install` \
             (or `apt-get install debootstrap`)"
        );
    }
    let start = Instant::now();
    let mirror = std::env::var("WFLO_DEBIAN_MIRROR").or_else(|_| mirror())?;
    let work = util::state_dir()?.join("sandbox-rootfs");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("remove {}", work.display()))?;
    }
    println!("building {tag} with debootstrap from {mirror} (1-2 minutes)");
    util::run(Command::new("debootstrap").args([
        "--variant=minbase",
        "--include=python3",
        "bookworm",
        work.to_str().unwrap_or_default(),
        &mirror,
    ]))?;
    let rootfs = work.to_str().unwrap_or_default();
    let script = format!(
        r#"set -e
R='{rootfs}'
chroot "$R" groupadd --gid 1000 sandbox
chroot "$R" useradd --uid 1000 --gid 1000 --home-dir /workspace --no-create-home --shell /bin/sh sandbox
mkdir -p "$R/workspace"
chown 1000:1000 "$R/workspace"
chmod 0755 "$R/workspace"
rm -rf "$R"/usr/share/doc/* "$R"/usr/share/man/* "$R"/usr/share/info/* "$R"/usr/share/locale/* \
       "$R"/usr/share/lintian "$R"/var/cache/apt/* "$R"/var/lib/apt/lists/* "$R"/var/log/* \
       "$R"/usr/lib/python3*/test "$R"/usr/lib/python3*/unittest/test "$R"/usr/lib/python3*/lib2to3/tests
find "$R" -xdev -type f -perm /6000 -exec chmod ug-s {{}} +
"#
    );
    util::run(Command::new("sh").args(["-c", &script]))?;

    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "-C", rootfs, "-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("run tar")?;
    let tar_out = tar.stdout.take().context("tar stdout")?;
    let status = Command::new("docker")
        .args([
            "import",
            "-c",
            r#"CMD ["python3"]"#,
            "-c",
            "USER 1000:1000",
            "-c",
            "WORKDIR /workspace",
            "-c",
            "ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/workspace",
            "-c",
            "LABEL org.wflo.sandbox=python3",
            "-",
            tag,
        ])
        .stdin(tar_out)
        .stdout(Stdio::null())
        .status()
        .context("run docker import")?;
    let tar_status = tar.wait()?;
    if !tar_status.success() || !status.success() {
        bail!("building the sandbox image failed (tar {tar_status}, docker import {status})");
    }
    std::fs::remove_dir_all(&work).ok();
    let check = util::output(
        "docker",
        &[
            "run",
            "--rm",
            "--network",
            "none",
            tag,
            "python3",
            "-c",
            "import json,asyncio,decimal,os; print(os.getuid())",
        ],
    )?;
    if check != "1000" {
        bail!("the new image {tag} runs as uid {check}, expected 1000");
    }
    println!("built {tag} in {:.0}s", start.elapsed().as_secs_f64());
    Ok(())
}
