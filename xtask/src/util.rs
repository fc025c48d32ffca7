//! Small process helpers shared by the xtask commands.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (the parent of `xtask/`).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Where native services keep their pid files, logs and data: `target/wflo-services`.
pub(crate) fn state_dir() -> Result<PathBuf> {
    let dir = root().join("target").join("wflo-services");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// Whether `program` is on PATH.
pub(crate) fn has(program: &str) -> bool {
    which(program).is_some()
}

pub(crate) fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Runs a command quietly and returns its trimmed stdout; fails with its stderr.
pub(crate) fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run `{program}`"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs a command with inherited stdio; fails when it exits non-zero.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

/// Starts `cmd` detached from this process (its own session, output to `log`), so it outlives
/// xtask, and records its pid in `pidfile`.
pub(crate) fn spawn_daemon(cmd: &mut Command, log: &Path, pidfile: &Path) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let log_file =
        std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let err_file = log_file.try_clone()?;
    // SAFETY-free: `process_group(0)` puts the child in its own process group so that the
    // terminal's signals and our exit do not reach it.
    cmd.stdin(Stdio::null())
        .stdout(log_file)
        .stderr(err_file)
        .process_group(0);
    let child = cmd
        .spawn()
        .with_context(|| format!("start {:?}", cmd.get_program()))?;
    let pid = child.id();
    std::fs::write(pidfile, pid.to_string())?;
    // The child is intentionally not waited for: it is a daemon.
    std::mem::forget(child);
    Ok(pid)
}

/// Whether the process recorded in `pidfile` is alive.
pub(crate) fn pid_alive(pidfile: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // A zombie (state Z) is not alive.
    let state = stat.rsplit(')').next()?.split_whitespace().next()?;
    (state != "Z").then_some(pid)
}

/// Sends SIGTERM (then SIGKILL after `grace`) to the process in `pidfile`.
pub(crate) fn stop_pidfile(pidfile: &Path, grace: Duration) -> Result<bool> {
    let Some(pid) = pid_alive(pidfile) else {
        let _ = std::fs::remove_file(pidfile);
        return Ok(false);
    };
    let _ = output("kill", &["-TERM", &pid.to_string()]);
    let start = Instant::now();
    while start.elapsed() < grace {
        if pid_alive(pidfile).is_none() {
            let _ = std::fs::remove_file(pidfile);
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = output("kill", &["-KILL", &pid.to_string()]);
    let _ = std::fs::remove_file(pidfile);
    Ok(true)
}

/// Polls `probe` until it succeeds or `timeout` passes; the error names the last failure.
pub(crate) fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= timeout => {
                bail!("{what} did not become ready within {timeout:?}: {e:#}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The tail of a log file, for error messages.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `cargo` as invoked by the current toolchain.
pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// One HTTP/1.1 request to `addr` (loopback services), `Connection: close`; returns the
/// status, the head and the body.
pub(crate) fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).with_context(|| format!("connect to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(request.as_bytes())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP answer: {}", head.lines().next().unwrap_or("")))?;
    Ok((status, head.to_string(), body.to_string()))
}
