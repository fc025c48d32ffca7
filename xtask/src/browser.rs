//! The optional `browser` service: Debian's Chromium driven through ChromeDriver (WebDriver on
//! `ADDR`), for the web page's browser suite. `cargo xtask services up browser --install`
//! installs the packages (`chromium`, `chromium-driver`; about two minutes once) and starts the
//! driver; the suites get its URL and the browser's path.

use crate::util::{self, spawn_daemon, state_dir, wait_until};
use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

/// Where ChromeDriver listens.
pub(crate) const ADDR: &str = "127.0.0.1:9515";
/// Debian's Chromium.
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

/// The packages to install when missing.
pub(crate) fn missing_packages() -> Vec<&'static str> {
    let mut apt = Vec::new();
    if !std::path::Path::new(CHROMIUM).exists() {
        apt.push("chromium");
    }
    if !util::has("chromedriver") {
        apt.push("chromium-driver");
    }
    apt
}

/// ChromeDriver's `/status`: ready, with its version.
pub(crate) fn probe() -> Result<String> {
    if !util::has("chromedriver") {
        bail!(
            "chromedriver is not installed; run `cargo xtask services up browser --install` \
             (installs chromium and chromium-driver)"
        );
    }
    let mut s = TcpStream::connect(ADDR).with_context(|| format!("connect to {ADDR}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /status HTTP/1.1\r\nHost: {ADDR}\r\nConnection: close\r\n\r\n"
    )?;
    // ChromeDriver keeps the connection open: read until the answer says whether it is ready.
    let mut raw = String::new();
    let mut buf = [0u8; 4096];
    while !raw.contains("\"ready\"") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    if !raw.replace(' ', "").contains("\"ready\":true") {
        bail!(
            "chromedriver is not ready: {}",
            raw.lines().last().unwrap_or("")
        );
    }
    let version = util::output("chromedriver", &["--version"]).unwrap_or_default();
    Ok(version
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

pub(crate) fn up() -> Result<String> {
    let dir = state_dir()?;
    let log = dir.join("chromedriver.log");
    let port = ADDR.split_once(':').expect("host:port").1;
    spawn_daemon(
        Command::new("chromedriver").args([
            &format!("--port={port}"),
            "--allowed-ips=127.0.0.1",
            "--log-level=WARNING",
        ]),
        &log,
        &dir.join("chromedriver.pid"),
    )?;
    wait_until("browser", Duration::from_secs(30), probe)
        .with_context(|| format!("chromedriver log:\n{}", util::tail(&log, 20)))
}

pub(crate) fn down() -> Result<()> {
    util::stop_pidfile(
        &state_dir()?.join("chromedriver.pid"),
        Duration::from_secs(5),
    )?;
    Ok(())
}
