//! Runs the built `wflo` binary with a clean environment on a private SQLite database.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file in `examples/`.
pub fn example(name: &str) -> PathBuf {
    root().join("examples").join(name)
}

/// One test's world: a temporary directory with its own database.
pub struct World {
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

/// What a command did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panics with both streams unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// The execution id printed by `wflo run`.
    pub fn execution_id(&self) -> String {
        let text = format!("{}\n{}", self.stderr, self.stdout);
        let at = text
            .find("execution ")
            .unwrap_or_else(|| panic!("no execution id in:\n{text}"));
        text[at + "execution ".len()..][..36].to_string()
    }
}

/// Kills a child process on drop (a failed assertion must not leave processes behind).
pub struct Guard(pub Option<std::process::Child>);

impl Guard {
    /// Takes the child out (to wait for it).
    pub fn take(&mut self) -> std::process::Child {
        self.0.take().expect("the child is still here")
    }
    /// Its process id.
    pub fn pid(&self) -> String {
        self.0.as_ref().expect("running").id().to_string()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits for a child started with piped output and collects what it did.
pub fn output(child: std::process::Child) -> Run {
    Run::from(child.wait_with_output().expect("the process ends"))
}

/// Starts `wflo ARGS` in `w` with its output piped.
pub fn spawn(w: &World, args: &[&str]) -> std::process::Child {
    w.command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wflo starts")
}

/// The Temporal dev server `cargo xtask itest` started.
pub fn temporal_address() -> String {
    std::env::var("WFLO_TEST_TEMPORAL_ADDRESS").expect(
        "WFLO_TEST_TEMPORAL_ADDRESS is not set; run `cargo xtask itest wflo-cli` (it starts the temporal dev server)",
    )
}

/// Runs a command on a blocking thread (when a fake server lives on the test's runtime).
pub async fn run_blocking(mut cmd: Command) -> Run {
    tokio::task::spawn_blocking(move || Run::from(cmd.output().expect("wflo runs")))
        .await
        .expect("the wflo process ran")
}

impl World {
    /// A fresh directory and database; no other setting.
    pub fn new() -> World {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = format!("sqlite://{}?mode=rwc", dir.path().join("wflo.db").display());
        World {
            env: vec![("DATABASE_URL".into(), db)],
            dir,
        }
    }

    /// Adds an environment variable.
    pub fn env(mut self, k: &str, v: impl Into<String>) -> World {
        self.env.push((k.into(), v.into()));
        self
    }

    /// The command, with only PATH, HOME and the world's variables set.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_wflo"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .current_dir(self.dir.path())
            .args(args)
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs `wflo ARGS` to its end.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("wflo runs"))
    }

    /// Writes a file in the world's directory and returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write a test file");
        p.display().to_string()
    }
}

/// A realistic OpenAI chat completion whose content is a ```python block.
pub fn chat_completion(
    code: &str,
    prompt_tokens: u64,
    completion_tokens: u64,
) -> serde_json::Value {
    serde_json::json!({
        "id": "chatcmpl-CXq3fT8bKz1Lw9mYp2Rn5sVd7HgJa",
        "object": "chat.completion",
        "created": 1_764_064_800,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": format!("```python\n{code}```"),
                "refusal": null,
                "annotations": []
            },
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0
            }
        },
        "service_tier": "default",
        "system_fingerprint": "fp_560af6e559"
    })
}

/// The program the quickstart's recorded plan contains.
pub const QUICKSTART_PROGRAM: &str = "# The sum of the squares of the integers from 1 to 10.\nprint(sum(n * n for n in range(1, 11)))\n";
