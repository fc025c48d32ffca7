//! One driver per execution: the in-process engine holds a lease on the execution it runs
//! (wflo-db's `acquire_lease`: holder, expiry, fencing counter), renews it in the background
//! while the run is driven, and checks it before every step, so a driver that lost its lease —
//! taken over by another process after an expiry, say — stops before its next step instead of
//! racing the new driver.

use crate::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;
use wflo_db::{Db, Executor, Lease};
use wflo_types::ExecutionId;

/// A lease held by this process, shared by the run's contexts and the renewal task.
#[derive(Debug)]
pub(crate) struct Held {
    execution: ExecutionId,
    lease: Mutex<Lease>,
    /// Set when a renewal found the lease gone.
    lost: AtomicBool,
    /// Until when the lease is surely ours: the start of the last successful renewal plus the
    /// lease's length (a renewal that could not reach the database does not move it).
    valid_until: Mutex<Instant>,
}

impl Held {
    /// The lease as last renewed.
    pub(crate) fn current(&self) -> Lease {
        match self.lease.lock() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Marks the lease lost (the execution was cancelled here): the run stops before its
    /// next step.
    pub(crate) fn lose(&self) {
        self.lost.store(true, Ordering::Release);
    }

    /// Refuses to go on once the lease is lost or may have expired.
    pub(crate) fn check(&self) -> Result<()> {
        let until = match self.valid_until.lock() {
            Ok(t) => *t,
            Err(poisoned) => *poisoned.into_inner(),
        };
        if self.lost.load(Ordering::Acquire) || Instant::now() >= until {
            return Err(Error::Db(wflo_db::Error::LeaseLost {
                id: self.execution.to_string(),
                holder: self.current().holder,
            }));
        }
        Ok(())
    }
}

/// A running lease: stops renewing when dropped (the lease then expires by itself unless
/// [`Driving::release`] gave it up first).
#[derive(Debug)]
pub(crate) struct Driving {
    pub(crate) held: Arc<Held>,
    renewal: tokio::task::JoinHandle<()>,
}

impl Drop for Driving {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

impl Driving {
    /// Takes the lease of `execution` for `holder` and starts renewing it every third of `ttl`.
    pub(crate) async fn acquire(
        db: &Db,
        execution: ExecutionId,
        holder: &str,
        ttl: Duration,
    ) -> Result<Driving> {
        let started = Instant::now();
        let lease = db
            .executions()
            .acquire_lease(execution, holder, ttl)
            .await?;
        let held = Arc::new(Held {
            execution,
            lease: Mutex::new(lease),
            lost: AtomicBool::new(false),
            valid_until: Mutex::new(started + ttl),
        });
        let renewal = tokio::spawn(renew(db.clone(), held.clone(), ttl));
        Ok(Driving { held, renewal })
    }

    /// Stops renewing and gives the lease up: another driver may take the execution at once.
    pub(crate) async fn release(self, db: &Db) -> Result<()> {
        self.renewal.abort();
        let lease = self.held.current();
        db.executions()
            .release_lease(self.held.execution, &lease)
            .await?;
        Ok(())
    }
}

async fn renew(db: Db, held: Arc<Held>, ttl: Duration) {
    let every = ttl / 3;
    loop {
        tokio::time::sleep(every).await;
        let started = Instant::now();
        let lease = held.current();
        match db
            .executions()
            .renew_lease(held.execution, &lease, ttl)
            .await
        {
            Ok(renewed) => {
                match held.lease.lock() {
                    Ok(mut l) => *l = renewed,
                    Err(poisoned) => *poisoned.into_inner() = renewed,
                }
                match held.valid_until.lock() {
                    Ok(mut t) => *t = started + ttl,
                    Err(poisoned) => *poisoned.into_inner() = started + ttl,
                }
            }
            Err(wflo_db::Error::LeaseLost { .. }) => {
                tracing::warn!(execution = %held.execution, holder = %lease.holder, "lease lost: this process stops driving the execution");
                held.lost.store(true, Ordering::Release);
                return;
            }
            // The database did not answer: try again; `check` stops the run once the lease
            // may have expired.
            Err(e) => {
                tracing::warn!(execution = %held.execution, error = %e, "could not renew the lease; retrying");
            }
        }
    }
}

/// The default holder name of this process: host, process id and a random token (two engines
/// in one process are two holders).
pub(crate) fn default_holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let token = Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &token[..8])
}
