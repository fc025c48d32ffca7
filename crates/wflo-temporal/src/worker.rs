//! The worker: polls the task queue and runs this crate's workflows and activities.
//!
//! The SDK's worker future is not `Send`, so it cannot go to `tokio::spawn`. Either drive
//! [`WorkerBuilder::run_until`] on your main task (`select!` it with a shutdown signal), or let
//! [`WorkerBuilder::spawn`] run it on a thread of its own and stop it through the
//! [`WorkerHandle`].

use crate::activities::WfloActivities;
use crate::client::connect;
use crate::config::TemporalConfig;
use crate::error::chain;
use crate::workflows::{CodeExecutionWorkflow, NoopWorkflow, SimpleWorkflow, WfloWorkflow};
use crate::{Error, Result};
use std::collections::HashSet;
use std::future::Future;
use temporalio_sdk::runtime::WorkflowErrorType;
use temporalio_sdk::runtime::worker_tuner::{FixedSizeSlotSupplier, TunerHolder};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tokio::sync::oneshot;

/// Builds and runs a worker. Start with [`TemporalWorker::builder`].
#[derive(Debug)]
pub struct TemporalWorker;

impl TemporalWorker {
    /// A worker for `config`'s namespace and task queue.
    pub fn builder(config: TemporalConfig) -> WorkerBuilder {
        WorkerBuilder {
            config,
            engine: None,
            #[cfg(feature = "testing")]
            probes: None,
        }
    }
}

/// What a worker runs. [`run_until`](WorkerBuilder::run_until) or
/// [`spawn`](WorkerBuilder::spawn) it.
#[derive(Debug)]
pub struct WorkerBuilder {
    config: TemporalConfig,
    engine: Option<wflo_runtime::Engine>,
    #[cfg(feature = "testing")]
    probes: Option<crate::testing::Probes>,
}

impl WorkerBuilder {
    /// The wflo engine the activities of `WfloWorkflow` and `CodeExecutionWorkflow` drive (its
    /// database, cost tracker, LLM provider, sandbox with its limits, and tools). Without it
    /// those runs fail, not retried, saying so; the engine's owner shuts its sandbox down.
    pub fn engine(mut self, engine: wflo_runtime::Engine) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Registers the probe workflow and activities (feature `testing`).
    #[cfg(feature = "testing")]
    pub fn probes(mut self, probes: crate::testing::Probes) -> Self {
        self.probes = Some(probes);
        self
    }

    fn worker_error(&self, message: String) -> Error {
        Error::Worker {
            task_queue: self.config.task_queue.clone(),
            message,
        }
    }

    fn options(&self, activities: WfloActivities) -> Result<WorkerOptions> {
        let c = &self.config;
        let tuner = TunerHolder::builder()
            .workflow_task_slot_supplier(FixedSizeSlotSupplier::new(
                c.max_concurrent_workflow_tasks,
            ))
            .activity_task_slot_supplier(FixedSizeSlotSupplier::new(c.max_concurrent_activities))
            .local_activity_task_slot_supplier(FixedSizeSlotSupplier::new(
                c.max_concurrent_activities,
            ))
            .nexus_task_slot_supplier(FixedSizeSlotSupplier::new(1))
            .build();
        let reg = |e: temporalio_sdk::WorkflowRegistrationError| self.worker_error(chain(&e));
        let options = WorkerOptions::new(c.task_queue.clone())
            .tuner(tuner)
            .max_cached_workflows(c.max_cached_workflows)
            .sticky_queue_schedule_to_start_timeout(c.sticky_queue_timeout)
            .graceful_shutdown_period(c.graceful_shutdown)
            // A nondeterministic workflow fails instead of retrying its task forever.
            .workflow_failure_errors(HashSet::from([WorkflowErrorType::Nondeterminism]))
            .maybe_client_identity_override(c.identity.clone())
            .register_activities(activities)
            .register_workflow::<SimpleWorkflow>()
            .map_err(reg)?
            .register_workflow::<CodeExecutionWorkflow>()
            .map_err(reg)?
            .register_workflow::<NoopWorkflow>()
            .map_err(reg)?
            .register_workflow::<WfloWorkflow>()
            .map_err(reg)?;
        #[cfg(feature = "testing")]
        let options = match &self.probes {
            Some(p) => options
                .register_activities(crate::testing::ProbeActivities::new(p.clone()))
                .register_workflow::<crate::testing::ProbeWorkflow>()
                .map_err(reg)?,
            None => options,
        };
        Ok(options.build())
    }

    /// Connects and builds the SDK worker (inside a Tokio runtime).
    async fn prepare(&self) -> Result<(Worker, Runtime)> {
        let client = connect(&self.config).await?;
        let runtime = Runtime::from_current_tokio(Default::default())
            .map_err(|e| self.worker_error(chain(&e)))?;
        let activities = WfloActivities::new(self.engine.clone());
        let options = self.options(activities)?;
        let worker =
            Worker::new(&runtime, client, options).map_err(|e| self.worker_error(chain(&e)))?;
        // The SDK runtime is kept until the worker has ended.
        Ok((worker, runtime))
    }

    /// Runs the worker on the current task until `shutdown` resolves, then shuts it down
    /// gracefully (running activities get the configured grace period). The future is not
    /// `Send`: drive it on your main task, e.g. `select!`-ed with a SIGTERM handler, or use
    /// [`spawn`](WorkerBuilder::spawn).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let (mut worker, sdk_runtime) = self.prepare().await?;
        let result = {
            let stop = worker.shutdown_handle();
            let run = worker.run();
            tokio::pin!(run);
            tokio::pin!(shutdown);
            tokio::select! {
                r = &mut run => r,
                () = &mut shutdown => {
                    stop();
                    run.await
                }
            }
        };
        // The worker goes before the SDK runtime it was built on.
        drop(worker);
        drop(sdk_runtime);
        result.map_err(|e| self.worker_error(chain(&e)))
    }

    /// Runs the worker on a thread of its own (with its own Tokio runtime) and returns once it
    /// is connected and polling; connection failures are returned here.
    pub async fn spawn(self) -> Result<WorkerHandle> {
        let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
        let (cmd_tx, cmd_rx) = oneshot::channel::<Stop>();
        let task_queue = self.config.task_queue.clone();
        let thread = std::thread::Builder::new()
            .name(format!("wflo-worker-{task_queue}"))
            .spawn(move || self.thread_main(ready_tx, cmd_rx))
            .map_err(|e| Error::Worker {
                task_queue: task_queue.clone(),
                message: format!("cannot start the worker thread: {e}"),
            })?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(WorkerHandle {
                task_queue,
                stop: Some(cmd_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Error::Worker {
                    task_queue,
                    message: "the worker thread ended before it was ready".into(),
                })
            }
        }
    }

    fn thread_main(
        self,
        ready: oneshot::Sender<Result<()>>,
        cmd: oneshot::Receiver<Stop>,
    ) -> Result<()> {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wflo-worker")
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let message = format!("cannot build a tokio runtime: {e}");
                let _ = ready.send(Err(self.worker_error(message.clone())));
                return Err(self.worker_error(message));
            }
        };
        let result = rt.block_on(async {
            let (mut worker, sdk_runtime) = match self.prepare().await {
                Ok(w) => w,
                Err(e) => {
                    let text = e.to_string();
                    let _ = ready.send(Err(e));
                    return Err(self.worker_error(text));
                }
            };
            let r = {
                let stop = worker.shutdown_handle();
                let run = worker.run();
                tokio::pin!(run);
                let _ = ready.send(Ok(()));
                tokio::select! {
                    r = &mut run => r.map_err(|e| self.worker_error(chain(&e))),
                    c = cmd => match c {
                        Ok(Stop::Kill) => Ok(()),
                        // Graceful (or the handle was dropped).
                        _ => {
                            stop();
                            run.await.map_err(|e| self.worker_error(chain(&e)))
                        }
                    },
                }
            };
            drop(worker);
            drop(sdk_runtime);
            r
        });
        // Dropping the runtime here ends every task the worker left (a kill ends them mid-way).
        rt.shutdown_background();
        result
    }
}

#[derive(Debug)]
enum Stop {
    Graceful,
    Kill,
}

/// A worker running on its own thread. Dropping the handle shuts the worker down gracefully
/// in the background.
#[derive(Debug)]
pub struct WorkerHandle {
    task_queue: String,
    stop: Option<oneshot::Sender<Stop>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl WorkerHandle {
    /// The task queue this worker polls.
    pub fn task_queue(&self) -> &str {
        &self.task_queue
    }

    /// Stops polling, lets running activities finish (within the configured grace period),
    /// and waits for the worker to end.
    pub async fn shutdown(mut self) -> Result<()> {
        self.finish(Stop::Graceful).await
    }

    /// Ends the worker at once, as a crash would: nothing running is allowed to finish and
    /// the server is not told. Its work is picked up by other workers after the timeouts.
    pub async fn kill(mut self) -> Result<()> {
        self.finish(Stop::Kill).await
    }

    /// Waits until the worker ends by itself (it was not asked to): an error it returned, or
    /// a panic of the SDK's processing thread, as [`Error::Worker`]. Cancel-safe.
    pub async fn ended(&mut self) -> Result<()> {
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        self.finish(Stop::Kill).await
    }

    async fn finish(&mut self, how: Stop) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(how);
        }
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let task_queue = self.task_queue.clone();
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| Error::Worker {
                task_queue: task_queue.clone(),
                message: format!("cannot join the worker thread: {e}"),
            })?
            .map_err(|_| Error::Worker {
                task_queue,
                message: "the worker thread panicked".into(),
            })?
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(Stop::Graceful);
        }
    }
}
