//! Circuit breaker per (provider, model).

use crate::config::BreakerConfig;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// State of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through; consecutive failures are counted.
    Closed,
    /// Calls are refused until the recovery timeout has passed.
    Open,
    /// A few trial calls go through; successes close it, a failure opens it again.
    HalfOpen,
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { successes: u32, in_flight: u32 },
}

#[derive(Debug)]
struct Breaker {
    inner: Inner,
    generation: u64,
}

fn lock(m: &Mutex<Breaker>) -> MutexGuard<'_, Breaker> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The breakers of one provider, one per model.
#[derive(Debug)]
pub(crate) struct Breakers {
    config: BreakerConfig,
    by_model: Mutex<HashMap<String, Arc<Mutex<Breaker>>>>,
}

/// The outcome of a call, as the breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Failure,
    /// Neither (the caller's own error, or a cancelled call).
    Neutral,
}

/// Permission to make one call; reports its outcome (a dropped permit counts as neutral).
#[derive(Debug)]
pub(crate) struct Permit {
    breaker: Arc<Mutex<Breaker>>,
    config: BreakerConfig,
    trial: Option<u64>,
    done: bool,
}

impl Breakers {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            by_model: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, model: &str) -> Arc<Mutex<Breaker>> {
        let mut map = self.by_model.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = map.get(model) {
            return b.clone();
        }
        let b = Arc::new(Mutex::new(Breaker {
            inner: Inner::Closed { failures: 0 },
            generation: 0,
        }));
        map.insert(model.to_string(), b.clone());
        b
    }

    pub(crate) fn state(&self, model: &str) -> CircuitState {
        let b = self.get(model);
        let mut g = lock(&b);
        Self::refresh(&mut g, Instant::now());
        match g.inner {
            Inner::Closed { .. } => CircuitState::Closed,
            Inner::Open { .. } => CircuitState::Open,
            Inner::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    fn refresh(g: &mut Breaker, now: Instant) {
        if let Inner::Open { until } = g.inner
            && now >= until
        {
            g.inner = Inner::HalfOpen {
                successes: 0,
                in_flight: 0,
            };
            g.generation += 1;
        }
    }

    /// A permit, or the time until the breaker lets a trial call through.
    pub(crate) fn acquire(&self, model: &str) -> Result<Permit, Duration> {
        let b = self.get(model);
        let trial = {
            let mut g = lock(&b);
            let now = Instant::now();
            Self::refresh(&mut g, now);
            let generation = g.generation;
            match &mut g.inner {
                Inner::Closed { .. } => None,
                Inner::Open { until } => return Err(*until - now),
                Inner::HalfOpen {
                    successes,
                    in_flight,
                } => {
                    if *successes + *in_flight >= self.config.success_threshold {
                        // Enough trial calls are out; wait for their outcome.
                        return Err(Duration::ZERO);
                    }
                    *in_flight += 1;
                    Some(generation)
                }
            }
        };
        Ok(Permit {
            breaker: b,
            config: self.config.clone(),
            trial,
            done: false,
        })
    }
}

impl Permit {
    pub(crate) fn record(mut self, outcome: Outcome) {
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        let mut g = lock(&self.breaker);
        let now = Instant::now();
        let generation = g.generation;
        let recovery = self.config.recovery_timeout;
        let is_current_trial = self.trial == Some(generation);
        match (&mut g.inner, outcome) {
            (Inner::Closed { failures }, Outcome::Success) => *failures = 0,
            (Inner::Closed { failures }, Outcome::Failure) => {
                *failures += 1;
                if *failures >= self.config.failure_threshold {
                    tracing::warn!(failures = *failures, "circuit breaker opened");
                    g.inner = Inner::Open {
                        until: now + recovery,
                    };
                    g.generation += 1;
                }
            }
            (
                Inner::HalfOpen {
                    successes,
                    in_flight,
                },
                outcome,
            ) if is_current_trial => {
                *in_flight = in_flight.saturating_sub(1);
                match outcome {
                    Outcome::Success => {
                        *successes += 1;
                        if *successes >= self.config.success_threshold {
                            tracing::info!("circuit breaker closed");
                            g.inner = Inner::Closed { failures: 0 };
                            g.generation += 1;
                        }
                    }
                    Outcome::Failure => {
                        tracing::warn!("circuit breaker re-opened after a failed trial call");
                        g.inner = Inner::Open {
                            until: now + recovery,
                        };
                        g.generation += 1;
                    }
                    Outcome::Neutral => {}
                }
            }
            (Inner::HalfOpen { .. }, Outcome::Failure) => {
                // A call admitted before the breaker opened failed late: the provider is still
                // failing, so open again.
                g.inner = Inner::Open {
                    until: now + recovery,
                };
                g.generation += 1;
            }
            _ => {}
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.finish(Outcome::Neutral);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers() -> Breakers {
        Breakers::new(
            BreakerConfig::builder()
                .failure_threshold(3)
                .recovery_timeout(Duration::from_secs(10))
                .success_threshold(2)
                .build()
                .unwrap(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn opens_refuses_half_opens_and_closes() {
        let b = breakers();
        for _ in 0..2 {
            b.acquire("m").unwrap().record(Outcome::Failure);
        }
        assert_eq!(b.state("m"), CircuitState::Closed);
        // A success resets the count of consecutive failures.
        b.acquire("m").unwrap().record(Outcome::Success);
        for _ in 0..3 {
            b.acquire("m").unwrap().record(Outcome::Failure);
        }
        assert_eq!(b.state("m"), CircuitState::Open);
        let wait = b.acquire("m").unwrap_err();
        assert_eq!(wait, Duration::from_secs(10));
        // Other models have their own breaker.
        assert_eq!(b.state("other"), CircuitState::Closed);
        assert!(b.acquire("other").is_ok());

        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(b.acquire("m").unwrap_err(), Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.state("m"), CircuitState::HalfOpen);
        // Two trial calls may be out at once (success_threshold); a third waits.
        let p1 = b.acquire("m").unwrap();
        let p2 = b.acquire("m").unwrap();
        assert_eq!(b.acquire("m").unwrap_err(), Duration::ZERO);
        p1.record(Outcome::Success);
        assert_eq!(b.state("m"), CircuitState::HalfOpen);
        p2.record(Outcome::Success);
        assert_eq!(b.state("m"), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_reopens_and_a_dropped_one_frees_its_slot() {
        let b = breakers();
        for _ in 0..3 {
            b.acquire("m").unwrap().record(Outcome::Failure);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        let p = b.acquire("m").unwrap();
        let q = b.acquire("m").unwrap();
        drop(q); // cancelled call: neutral, frees its slot
        let r = b.acquire("m").unwrap();
        drop(r);
        p.record(Outcome::Failure);
        assert_eq!(b.state("m"), CircuitState::Open);
        assert_eq!(b.acquire("m").unwrap_err(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn neutral_outcomes_do_not_count() {
        let b = breakers();
        for _ in 0..10 {
            b.acquire("m").unwrap().record(Outcome::Neutral);
        }
        assert_eq!(b.state("m"), CircuitState::Closed);
    }
}
