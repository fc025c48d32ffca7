#![cfg(feature = "integration")]
//! A timeout holds whatever the program prints: floods on stdout, on stderr, on both, binary
//! output, output without newlines, on a cold start and from the warm pool. Each run must end
//! within its timeout plus a bounded grace, report the timeout, keep at most the output limit
//! of each stream, and leave no container behind. Run with `cargo xtask itest wflo-sandbox`.
//!
//! The cases run one at a time (they saturate a CPU each, and the wall time is what they
//! measure).

mod common;

use common::{config, finish, runtime};
use std::time::{Duration, Instant};
use wflo_sandbox::{ExecRequest, ExecStatus, ExecutionResult, Language, Limits, SandboxRuntime};

const TIMEOUT: Duration = Duration::from_secs(5);
/// What a timed-out run may take beyond its timeout (the runtime's own grace is 5 s).
const BOUND: Duration = Duration::from_secs(10);
const WARM_WITHIN: Duration = Duration::from_secs(30);

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn cap() -> usize {
    Limits::default().output_bytes
}

/// Runs `code` with the 5 s timeout from a cold start or a warm container, asserts the
/// timeout was reported in bounded time and that no container is left, and returns the result.
async fn flood(tag: &str, language: Language, code: &str, warm: bool) -> ExecutionResult {
    let _serial = ONE_AT_A_TIME.lock().await;
    let rt: SandboxRuntime = if warm {
        let rt = runtime(config(tag).pool_size(1)).await;
        assert!(rt.wait_warm(1, WARM_WITHIN).await, "the pool never filled");
        rt
    } else {
        runtime(config(tag)).await
    };
    let started = Instant::now();
    let r = rt
        .execute(
            ExecRequest::builder(code)
                .language(language)
                .timeout(TIMEOUT)
                .build()
                .unwrap(),
        )
        .await
        .expect("a timed-out run is a result, not an error");
    let took = started.elapsed();
    eprintln!(
        "{tag}: returned after {took:?} (duration {:?}), stdout {} bytes, stderr {} bytes",
        r.duration,
        r.stdout.len(),
        r.stderr.len()
    );
    assert_eq!(r.warm, warm, "served as asked (warm or cold)");
    assert!(r.timed_out, "{tag}: the timeout is reported");
    assert_eq!(r.status, ExecStatus::TimedOut);
    assert_eq!(r.exit_code, 137, "{tag}: killed with SIGKILL");
    assert!(
        took < TIMEOUT + BOUND,
        "{tag}: a {TIMEOUT:?} timeout returned after {took:?}"
    );
    assert!(r.duration >= TIMEOUT && r.duration < TIMEOUT + BOUND);
    // At most the cap of each stream: one character per byte kept (lossy UTF-8 turns a byte
    // into at most one character).
    assert!(r.stdout.chars().count() <= cap() && r.stderr.chars().count() <= cap());
    rt.flush().await;
    let left = rt.list_managed().await.unwrap();
    assert!(
        !left.iter().any(|c| c.sandbox_id == Some(r.sandbox_id)),
        "{tag}: the flooding container is left behind: {left:?}"
    );
    finish(rt).await;
    r
}

/// `unit` repeated and cut at the output cap.
fn capped(unit: &str) -> String {
    unit.repeat(cap() / unit.len() + 1)[..cap()].to_string()
}

const STDOUT_LINES: &str = "while True: print('y' * 1000)";
const STDERR_LINES: &str = "import sys\nwhile True: print('e' * 1000, file=sys.stderr)";
const BOTH_LINES: &str = "import sys\nwhile True:\n    sys.stdout.write('o' * 1000 + '\\n')\n    sys.stderr.write('e' * 1000 + '\\n')";
const NO_NEWLINES: &str = "import sys\nwhile True: sys.stdout.write('n' * 65536)";
/// Every byte value but the newline, on both streams: not UTF-8, no line ends.
const BINARY: &str = "import os\nb = bytes(i for i in range(256) if i != 10) * 256\nwhile True:\n    os.write(1, b)\n    os.write(2, b)";
const BASH_ZEROS: &str = "cat /dev/zero >&2 &\ncat /dev/zero";

fn assert_stdout_lines(r: &ExecutionResult) {
    assert_eq!(r.stdout, capped(&format!("{}\n", "y".repeat(1000))));
    assert!(r.stdout_truncated);
    assert_eq!((r.stderr.as_str(), r.stderr_truncated), ("", false));
}

fn assert_binary(r: &ExecutionResult) {
    let ascii: String = (0u8..128).filter(|&b| b != b'\n').map(char::from).collect();
    for (name, out, truncated) in [
        ("stdout", &r.stdout, r.stdout_truncated),
        ("stderr", &r.stderr, r.stderr_truncated),
    ] {
        assert!(truncated, "{name} over the cap is flagged");
        assert!(out.starts_with(&ascii), "{name} kept from its start");
        assert!(!out.contains('\n'));
        assert!(
            out.contains('\u{fffd}'),
            "{name}: invalid UTF-8 is replaced"
        );
    }
}

// ---------- cold start ----------

#[tokio::test]
async fn cold_stdout_flood_times_out_on_time() {
    let r = flood("fl-out", Language::Python, STDOUT_LINES, false).await;
    assert_stdout_lines(&r);
}

#[tokio::test]
async fn cold_stderr_flood_times_out_on_time() {
    let r = flood("fl-err", Language::Python, STDERR_LINES, false).await;
    assert_eq!(r.stderr, capped(&format!("{}\n", "e".repeat(1000))));
    assert!(r.stderr_truncated);
    assert_eq!((r.stdout.as_str(), r.stdout_truncated), ("", false));
}

#[tokio::test]
async fn cold_flood_on_both_streams_times_out_on_time() {
    let r = flood("fl-both", Language::Python, BOTH_LINES, false).await;
    assert_eq!(r.stdout, capped(&format!("{}\n", "o".repeat(1000))));
    assert_eq!(r.stderr, capped(&format!("{}\n", "e".repeat(1000))));
    assert!(r.stdout_truncated && r.stderr_truncated);
}

#[tokio::test]
async fn cold_flood_without_newlines_times_out_on_time() {
    let r = flood("fl-nonl", Language::Python, NO_NEWLINES, false).await;
    assert_eq!(r.stdout, "n".repeat(cap()));
    assert!(r.stdout_truncated);
}

#[tokio::test]
async fn cold_binary_flood_times_out_on_time() {
    let r = flood("fl-bin", Language::Python, BINARY, false).await;
    assert_binary(&r);
}

#[tokio::test]
async fn cold_bash_flood_of_zero_bytes_on_both_streams_times_out_on_time() {
    let r = flood("fl-zero", Language::Bash, BASH_ZEROS, false).await;
    assert_eq!(r.stdout, "\0".repeat(cap()));
    assert_eq!(r.stderr, "\0".repeat(cap()));
    assert!(r.stdout_truncated && r.stderr_truncated);
}

// ---------- warm pool ----------

#[tokio::test]
async fn warm_stdout_flood_times_out_on_time() {
    let r = flood("fl-w-out", Language::Python, STDOUT_LINES, true).await;
    assert_stdout_lines(&r);
}

#[tokio::test]
async fn warm_binary_flood_times_out_on_time() {
    let r = flood("fl-w-bin", Language::Python, BINARY, true).await;
    assert_binary(&r);
}

#[tokio::test]
async fn warm_bash_flood_of_zero_bytes_on_both_streams_times_out_on_time() {
    let r = flood("fl-w-zero", Language::Bash, BASH_ZEROS, true).await;
    assert_eq!(r.stdout, "\0".repeat(cap()));
    assert_eq!(r.stderr, "\0".repeat(cap()));
}
