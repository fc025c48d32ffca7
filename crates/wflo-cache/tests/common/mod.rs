//! Shared helpers of the integration suites: the shared server's URL, unique key prefixes, and
//! private redis-server processes for stop/restart and password scenarios.
#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wflo_cache::{RedisClient, RedisConfig};

pub fn redis_url() -> String {
    std::env::var("WFLO_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!("WFLO_TEST_REDIS_URL is not set: run `cargo xtask itest wflo-cache`")
    })
}

pub fn unique_prefix(what: &str) -> String {
    let n: u64 = rand::random();
    format!("wflo-test:{what}:{n:016x}:")
}

/// A client on the shared server with a key prefix of its own.
pub async fn client(what: &str) -> RedisClient {
    let config = RedisConfig::builder(redis_url())
        .key_prefix(unique_prefix(what))
        .pool_size(4)
        .build()
        .unwrap();
    RedisClient::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("{e} (run `cargo xtask itest wflo-cache`)"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server of this test only, on a free loopback port; killed when dropped.
pub struct PrivateRedis {
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
    bin: PathBuf,
}

impl PrivateRedis {
    pub fn start(extra: &[&str]) -> PrivateRedis {
        let bin = std::env::var("WFLO_TEST_REDIS_SERVER_BIN").unwrap_or_else(|_| {
            panic!("WFLO_TEST_REDIS_SERVER_BIN is not set: run `cargo xtask itest wflo-cache`")
        });
        let mut r = PrivateRedis {
            port: free_port(),
            args: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            bin: bin.into(),
        };
        r.spawn();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.bin)
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        let started = Instant::now();
        // Ready when *our* process answers PING (not merely something listening on the port).
        loop {
            let pong = self.cli(&["PING"]);
            if pong.contains("PONG") || pong.contains("NOAUTH") {
                break;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("private redis-server on {} exited: {status}", self.port);
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "private redis-server did not answer on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server process: connections stay open but
    /// nothing is answered.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// `redis-cli` against this server (next to redis-server, or on PATH).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(self.cli_path())
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `redis-cli MONITOR`: every command the server receives from clients is recorded
    /// (commands run inside Lua scripts are marked `lua` and are not round trips).
    pub fn monitor(&self) -> Monitor {
        use std::io::BufRead;
        let mut child = Command::new(self.cli_path())
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "MONITOR"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-cli monitor");
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        let m = Monitor {
            child,
            lines,
            port: self.port,
            cli: self.cli_path(),
        };
        m.mark("monitor-start");
        m
    }

    fn cli_path(&self) -> PathBuf {
        self.bin
            .parent()
            .map(|d| d.join("redis-cli"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| "redis-cli".into())
    }

    /// Calls per command from `INFO commandstats` (lower-case names, e.g. `evalsha`).
    pub fn command_calls(&self) -> std::collections::BTreeMap<String, u64> {
        self.cli(&["INFO", "commandstats"])
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("cmdstat_")?;
                let (name, stats) = rest.split_once(':')?;
                let calls = stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))?
                    .parse()
                    .ok()?;
                Some((name.to_string(), calls))
            })
            .collect()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_ref() {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.stop();
    }
}

/// A running `MONITOR` on a private server.
pub struct Monitor {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    port: u16,
    cli: PathBuf,
}

impl Monitor {
    /// Sends `ECHO marker` and waits until the monitor has seen it.
    fn mark(&self, marker: &str) {
        let started = Instant::now();
        loop {
            Command::new(&self.cli)
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "ECHO",
                    marker,
                ])
                .output()
                .expect("redis-cli echo");
            let seen = Instant::now();
            while seen.elapsed() < Duration::from_millis(200) {
                if self
                    .lines
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.contains(marker))
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "monitor missed {marker}"
            );
        }
    }

    /// Starts counting from now.
    pub fn reset(&self) {
        self.mark("monitor-reset");
        self.lines.lock().unwrap().clear();
    }

    /// Commands clients sent since the last reset (round trips), excluding those run by
    /// scripts and the markers.
    pub fn client_commands(&self) -> Vec<String> {
        self.mark("monitor-count");
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| !l.contains(" lua]") && !l.contains("\"ECHO\"") && l.contains('['))
            .cloned()
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
