//! # wflo-sandbox — run agent-written code in locked-down Docker containers
//!
//! *Inner crate of Wflo: its API may change in any release. Use it through `wflo-core`, the one
//! public, semver'd facade.*
//!
//! [`SandboxRuntime::execute`] runs one [`ExecRequest`] (Python or bash, with stdin, explicit
//! env, files for /workspace, limits and a timeout) in a single-use container and returns an
//! [`ExecutionResult`] with stdout and stderr kept apart, truncation flags, `timed_out` and
//! `oom_killed`.
//!
//! Every container runs with: no network (the default bridge only when a request asks), user
//! 1000:1000, a read-only root filesystem, size-capped tmpfs for /tmp and /workspace, all
//! capabilities dropped, no-new-privileges, memory = memory + swap, `NanoCpus`, `PidsLimit`,
//! `nofile`/`fsize` ulimits, no log driver, an init process, and labels (`wflo.managed`,
//! `wflo.scope`, `wflo.sandbox-id`, `wflo.created`). The program reaches the container on its
//! stdin, never in its command line or environment, so `docker inspect` does not show it.
//!
//! A request's inputs are capped before any container starts ([`Error::InputTooLarge`]): at
//! most [`MAX_ENV_VARS`] environment variables, each `NAME=VALUE` at most [`MAX_ENV_VAR_BYTES`]
//! and [`MAX_ENV_BYTES`] in total, at most [`MAX_FILES`] /workspace files and
//! [`MAX_FILES_BYTES`] in total, at most [`MAX_STDIN_BYTES`] of stdin. A timeout holds whatever
//! the program prints: the run ends within its timeout plus a few seconds, with stdout and stderr
//! cut at the output limit.
//!
//! Containers are removed after use on every path (success, error, timeout, a dropped future),
//! by default in the background right after the result is known ([`SandboxRuntime::flush`] and
//! [`SandboxRuntime::shutdown`] wait for those removals); [`SandboxRuntime::sweep_orphans`]
//! removes those a crashed process left behind, and runs when a runtime starts. A warm pool per
//! limit profile keeps interpreters already waiting on stdin, each used once; an empty pool
//! falls back to a cold start. A bootstrap supervises the program and reports its end in-band
//! (see the `frame` module), so a result does not wait for Docker to tear the container down.
//!
//! ```no_run
//! # async fn demo() -> wflo_sandbox::Result<()> {
//! use wflo_sandbox::{ExecRequest, SandboxConfig, SandboxRuntime};
//! let rt = SandboxRuntime::new(SandboxConfig::builder().build()?).await?;
//! let out = rt
//!     .execute(ExecRequest::builder("import sys; print(sys.stdin.read().upper())").stdin("hi").build()?)
//!     .await?;
//! assert_eq!(out.stdout, "HI\n");
//! rt.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! No bollard type appears in this crate's public API.

mod config;
mod engine;
mod error;
mod frame;
mod request;
mod result;
mod runtime;

pub use config::{
    DEFAULT_DOCKER_SOCKET, DEFAULT_IMAGE, Limits, SandboxConfig, SandboxConfigBuilder,
};
pub use error::{Error, Result};
pub use request::{
    ExecRequest, ExecRequestBuilder, Language, MAX_ENV_BYTES, MAX_ENV_VAR_BYTES, MAX_ENV_VARS,
    MAX_FILES, MAX_FILES_BYTES, MAX_STDIN_BYTES, NetworkPolicy,
};
pub use result::{ExecStatus, ExecutionResult};
pub use runtime::{ManagedContainer, SandboxRuntime};
