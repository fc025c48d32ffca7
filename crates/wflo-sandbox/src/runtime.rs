use crate::engine::{Engine, Launched, Profile, Raw};
use crate::result::status_of;
use crate::{Error, ExecRequest, ExecutionResult, Result, SandboxConfig};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// A container of this runtime's scope, as the engine lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManagedContainer {
    /// Docker's container id.
    pub id: String,
    /// The `wflo.sandbox-id` label.
    pub sandbox_id: Option<Uuid>,
    /// When Docker created it.
    pub created_at: DateTime<Utc>,
    /// Whether it is running.
    pub running: bool,
    /// Whether it was started for the warm pool.
    pub pooled: bool,
}

/// Runs programs in locked-down, single-use Docker containers, with a warm pool.
///
/// Cheap to clone (one shared runtime). Call [`SandboxRuntime::shutdown`] when done: it removes
/// the pooled containers and waits for pending removals.
#[derive(Debug, Clone)]
pub struct SandboxRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: Engine,
    config: SandboxConfig,
    pools: Mutex<HashMap<Profile, Arc<Pool>>>,
    cancel: CancellationToken,
    /// The pools' refill tasks.
    tasks: TaskTracker,
    closed: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Pool tasks stop; their containers' guards remove them (in the background).
        self.cancel.cancel();
    }
}

#[derive(Debug)]
struct Pool {
    profile: Profile,
    warm: Mutex<VecDeque<Launched>>,
    notify: Notify,
    last_used: Mutex<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SandboxRuntime {
    /// Connects to the engine (negotiating the API version), checks the image, sweeps this
    /// scope's orphans (if configured) and starts filling the warm pool of the default limits.
    ///
    /// Errors: [`Error::DaemonUnreachable`] naming the socket tried, [`Error::ImageMissing`]
    /// naming `cargo xtask sandbox-image`.
    pub async fn new(config: SandboxConfig) -> Result<SandboxRuntime> {
        let engine = Engine::connect(&config).await?;
        if config.sweep_on_start {
            let removed = engine.sweep(config.orphan_age()).await?;
            if removed > 0 {
                tracing::info!(removed, scope = %config.scope, "swept orphaned sandbox containers");
            }
        }
        let rt = SandboxRuntime {
            inner: Arc::new(Inner {
                engine,
                config,
                pools: Mutex::default(),
                cancel: CancellationToken::new(),
                tasks: TaskTracker::new(),
                closed: AtomicBool::new(false),
            }),
        };
        if rt.inner.config.prewarm && rt.inner.config.pool_size > 0 {
            let profile = Profile::new(&rt.inner.config.limits, crate::NetworkPolicy::None);
            if let Some(pool) = rt.pool(&profile) {
                *lock(&pool.last_used) = Instant::now();
                pool.notify.notify_one();
            }
        }
        Ok(rt)
    }

    /// The configuration this runtime runs with.
    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    /// Runs one program in a fresh container (a warm one when the pool of its limit profile
    /// has one, else a cold start) and removes the container afterwards, whatever happens —
    /// also when this future is dropped.
    ///
    /// A timeout kills the container and returns a result with `timed_out` set (or
    /// [`Error::TimedOut`] with `timeout_is_error`), at most about 5 s after the timeout
    /// whatever the program prints: output keeps being read (and dropped over the output limit)
    /// while the container is killed, and the attach streams are closed if the engine has not
    /// confirmed the kill within 3 s.
    ///
    /// Requests are validated when built (input caps: see [`ExecRequest`]); the timeout is
    /// checked against the configured maximum here, before any container starts.
    pub async fn execute(&self, req: ExecRequest) -> Result<ExecutionResult> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::ShutDown);
        }
        let config = &inner.config;
        let timeout = req.timeout.unwrap_or(config.default_timeout);
        if timeout > config.max_timeout {
            return Err(Error::TimeoutTooLong {
                requested: timeout,
                max: config.max_timeout,
            });
        }
        let mut limits = config.limits.clone();
        if let Some(m) = req.memory_bytes {
            limits.memory_bytes = m;
        }
        if let Some(c) = req.cpus {
            limits.cpus = c;
        }
        if let Some(p) = req.pids {
            limits.pids = p;
        }
        if let Some(o) = req.output_bytes {
            limits.output_bytes = o;
        }
        let profile = Profile::new(&limits, req.network);
        let nonce = Uuid::new_v4().simple().to_string();
        let frame = crate::frame::encode(&req, &nonce);

        let mut raw = None;
        let mut used = None;
        if let Some(mut warm) = self.take_warm(&profile) {
            let r = inner
                .engine
                .run(&mut warm, &frame, &nonce, timeout, limits.output_bytes)
                .await;
            match r {
                Ok(r) if r.not_delivered => {
                    // A warm container that died while waiting: discard it, go cold.
                    tracing::warn!(container = %warm.id, "a warm sandbox container was dead; starting a cold one");
                    warm.remove_in_background();
                }
                other => {
                    raw = Some((other, true));
                    used = Some(warm);
                }
            }
        }
        let (raw, warm_flag, launched) = match (raw, used) {
            (Some((r, w)), Some(l)) => (r, w, l),
            _ => {
                let mut cold = inner.engine.launch(&profile, false).await?;
                let r = inner
                    .engine
                    .run(&mut cold, &frame, &nonce, timeout, limits.output_bytes)
                    .await;
                (r, false, cold)
            }
        };
        let sandbox_id = launched.sandbox_id;
        if warm_flag && let Some(pool) = self.pool(&profile) {
            pool.notify.notify_one();
        }
        if config.remove_in_background {
            launched.remove_in_background();
        } else {
            launched.remove().await;
        }
        let raw: Raw = raw?;
        let result = build_result(raw, sandbox_id, req.language, warm_flag);
        if result.timed_out && config.timeout_is_error {
            return Err(Error::TimedOut(Box::new(result)));
        }
        Ok(result)
    }

    /// Removes containers of this runtime's scope created at least `older_than` ago that this
    /// runtime does not own (left behind by a crashed process). Returns how many were removed.
    pub async fn sweep_orphans(&self, older_than: Duration) -> Result<usize> {
        self.inner.engine.sweep(older_than).await
    }

    /// Containers of this runtime's scope that exist right now (pooled, running or stopping).
    pub async fn list_managed(&self) -> Result<Vec<ManagedContainer>> {
        self.inner.engine.list().await
    }

    /// Warm containers ready right now, over all pools.
    pub fn warm_count(&self) -> usize {
        lock(&self.inner.pools)
            .values()
            .map(|p| lock(&p.warm).len())
            .sum()
    }

    /// Waits until the pool of the given limits (default network) holds `n` warm containers, or
    /// `within` passes; returns whether it did. Useful before measuring, and in tests.
    pub async fn wait_warm(&self, n: usize, within: Duration) -> bool {
        let profile = Profile::new(&self.inner.config.limits, crate::NetworkPolicy::None);
        let deadline = Instant::now() + within;
        loop {
            let have = lock(&self.inner.pools)
                .get(&profile)
                .map(|p| lock(&p.warm).len())
                .unwrap_or(0);
            if have >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for background removals (dropped executions, `remove_in_background`).
    pub async fn flush(&self) {
        let tracker = &self.inner.engine.tracker;
        tracker.close();
        tracker.wait().await;
        tracker.reopen();
    }

    /// Stops refilling, removes every pooled container and waits for pending removals. Later
    /// `execute` calls fail with [`Error::ShutDown`].
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        inner.cancel.cancel();
        let pools: Vec<Arc<Pool>> = lock(&inner.pools).drain().map(|(_, p)| p).collect();
        // Wait for the refill tasks (they empty their pools), then empty what is left.
        inner.tasks.close();
        inner.tasks.wait().await;
        let tracker = &inner.engine.tracker;
        let mut removals = Vec::new();
        for pool in pools {
            let warm: Vec<Launched> = lock(&pool.warm).drain(..).collect();
            removals.extend(warm.into_iter().map(Launched::remove));
        }
        futures::future::join_all(removals).await;
        tracker.close();
        tracker.wait().await;
        tracker.reopen();
    }

    fn take_warm(&self, profile: &Profile) -> Option<Launched> {
        let pool = self.pool(profile)?;
        *lock(&pool.last_used) = Instant::now();
        let idle = self.inner.config.pool_idle_timeout;
        let mut stale = Vec::new();
        let taken = {
            let mut warm = lock(&pool.warm);
            loop {
                match warm.pop_front() {
                    Some(c) if c.created.elapsed() >= idle => stale.push(c),
                    other => break other,
                }
            }
        };
        stale.into_iter().for_each(Launched::remove_in_background);
        if lock(&pool.warm).is_empty() {
            // Nothing left for the next caller: start refilling now. Otherwise the refill
            // waits until this execution ends, so it does not compete with it for the CPU.
            pool.notify.notify_one();
        }
        taken
    }

    /// The pool of `profile`, created (with its refill task) on first use; `None` when pools
    /// are off, the runtime is closed, or `max_pools` is reached.
    fn pool(&self, profile: &Profile) -> Option<Arc<Pool>> {
        let inner = &self.inner;
        if inner.config.pool_size == 0 || inner.closed.load(Ordering::Acquire) {
            return None;
        }
        let mut pools = lock(&inner.pools);
        if let Some(p) = pools.get(profile) {
            return Some(p.clone());
        }
        if pools.len() >= inner.config.max_pools {
            return None;
        }
        let pool = Arc::new(Pool {
            profile: profile.clone(),
            warm: Mutex::default(),
            notify: Notify::new(),
            last_used: Mutex::new(Instant::now()),
        });
        pools.insert(profile.clone(), pool.clone());
        let task = refill(
            inner.engine.clone(),
            pool.clone(),
            inner.config.pool_size,
            inner.config.pool_idle_timeout,
            inner.cancel.clone(),
        );
        inner.tasks.spawn(task);
        Some(pool)
    }
}

/// Keeps one pool at `size` warm containers while it is in use, and lets it drain (removing
/// containers older than `idle`) when it is not.
async fn refill(
    engine: Engine,
    pool: Arc<Pool>,
    size: usize,
    idle: Duration,
    cancel: CancellationToken,
) {
    let tick = (idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = pool.notify.notified() => {}
            _ = tokio::time::sleep(tick) => {}
        }
        // Expire idle containers.
        let stale: Vec<Launched> = {
            let mut warm = lock(&pool.warm);
            let (keep, stale): (Vec<_>, Vec<_>) =
                warm.drain(..).partition(|c| c.created.elapsed() < idle);
            warm.extend(keep);
            stale
        };
        for c in stale {
            c.remove().await;
        }
        let in_use = lock(&pool.last_used).elapsed() < idle;
        while in_use && !cancel.is_cancelled() && lock(&pool.warm).len() < size {
            match engine.launch(&pool.profile, true).await {
                Ok(c) => {
                    if cancel.is_cancelled() {
                        c.remove().await;
                        break;
                    }
                    lock(&pool.warm).push_back(c);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not start a warm sandbox container; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    break;
                }
            }
        }
    }
    let rest: Vec<Launched> = lock(&pool.warm).drain(..).collect();
    for c in rest {
        c.remove().await;
    }
}

fn utf8(mut bytes: Vec<u8>, truncated: bool) -> String {
    if truncated {
        // Do not end on half a character the cap cut through.
        if let Err(e) = std::str::from_utf8(&bytes)
            && e.error_len().is_none()
        {
            bytes.truncate(e.valid_up_to());
        }
    }
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn build_result(
    raw: Raw,
    sandbox_id: Uuid,
    language: crate::Language,
    warm: bool,
) -> ExecutionResult {
    let status = status_of(raw.exit_code, raw.timed_out, raw.oom_killed);
    ExecutionResult {
        sandbox_id,
        language,
        status,
        exit_code: raw.exit_code,
        stdout: utf8(raw.stdout, raw.stdout_truncated),
        stderr: utf8(raw.stderr, raw.stderr_truncated),
        stdout_truncated: raw.stdout_truncated,
        stderr_truncated: raw.stderr_truncated,
        timed_out: raw.timed_out,
        oom_killed: raw.oom_killed,
        duration: raw.duration,
        started_at: raw.started_at,
        finished_at: raw.finished_at,
        warm,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_never_splits_a_character() {
        let s = "é".repeat(3).into_bytes(); // 6 bytes
        assert_eq!(utf8(s[..5].to_vec(), true), "éé");
        assert_eq!(utf8(s.clone(), false), "ééé");
    }
}
