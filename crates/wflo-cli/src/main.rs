//! `wflo`: run agent workflows with budgets, a sandbox, approvals and rollback; inspect what
//! they did.
//!
//! Every setting comes from `wflo_core::Config::from_env()` (DATABASE_URL, REDIS_URL,
//! KAFKA_BOOTSTRAP_SERVERS, TEMPORAL_ADDRESS, WFLO_SANDBOX_IMAGE, OPENAI_API_KEY,
//! WFLO_LLM_CASSETTE, ...); the command line only says what to do.

mod commands;
mod exit;
mod format;
mod progress;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use wflo_core::types::{ApprovalId, ExecutionId};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the run failed (a step failed, an approval was rejected) or the operation was refused
  2  usage or configuration error (bad arguments, invalid workflow file, unknown id, missing setting)
  3  budget exceeded: a call was stopped before it was made
  4  a service is unreachable (database, Redis, Kafka, Temporal, Docker)

Settings come from the environment: DATABASE_URL (default sqlite://wflo.db?mode=rwc), REDIS_URL,
REDIS_CA_FILE, KAFKA_BOOTSTRAP_SERVERS, TEMPORAL_ADDRESS, WFLO_SANDBOX_IMAGE, DOCKER_HOST, OPENAI_API_KEY,
ANTHROPIC_API_KEY, WFLO_LLM_CASSETTE (offline replay), WFLO_LLM_PROVIDER, WFLO_PRICES_FILE.
`wflo doctor` checks them.";

/// Wflo: a secure runtime for AI-agent workflows.
#[derive(Debug, Parser)]
#[command(name = "wflo", version, after_long_help = EXIT_CODES, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a workflow file (or continue an execution with --resume), showing steps, spend and
    /// approval waits; prints the cost breakdown at the end.
    Run(RunArgs),
    /// List and inspect executions.
    Executions {
        #[command(subcommand)]
        action: ExecutionsAction,
    },
    /// List and decide approval requests.
    Approvals {
        #[command(subcommand)]
        action: ApprovalsAction,
    },
    /// Roll an execution back to one of its snapshots (then continue it with
    /// `wflo run --resume EXECUTION`).
    Rollback(RollbackArgs),
    /// Cost reports from the ledger.
    Cost {
        #[command(subcommand)]
        action: CostAction,
    },
    /// Publish the outbox to Kafka (KAFKA_BOOTSTRAP_SERVERS).
    Relay {
        /// Publish what is waiting now, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Apply the database migrations and print the schema status.
    Migrate,
    /// Run a Temporal worker (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_TASK_QUEUE) for
    /// `wflo run --engine temporal`; stops gracefully on Ctrl-C or SIGTERM.
    Worker,
    /// Check every configured service and say what to do about each problem.
    Doctor,
    /// Serve the HTTP API (/api/v1), live events and the web page (/ui/runs) on this
    /// database; every endpoint but /healthz needs a token (`wflo tokens create`).
    Serve {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: std::net::SocketAddr,
        /// An origin allowed to call the API from a browser (repeatable; none: no CORS).
        #[arg(long = "cors-origin", value_name = "ORIGIN")]
        cors: Vec<String>,
        /// Mark the session cookie Secure (when served behind TLS).
        #[arg(long)]
        secure_cookies: bool,
        /// The address users reach the server at (https://wflo.example.com): webhook messages
        /// link to its pages.
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
    },
    /// Create, list and revoke the API tokens of `wflo serve`.
    Tokens {
        #[command(subcommand)]
        action: TokensAction,
    },
    /// Notify other systems: `wflo serve` POSTs the chosen events (approval requests and
    /// decisions, finished runs, budget alerts) to each webhook's URL, signed, retried until
    /// delivered.
    Webhooks {
        #[command(subcommand)]
        action: WebhooksAction,
    },
}

#[derive(Debug, Subcommand)]
enum WebhooksAction {
    /// Add a webhook; its signing secret is printed this once (unless you give one).
    Add {
        /// A unique name (letters, digits, `-`, `_`, `.`).
        #[arg(long)]
        name: String,
        /// Where to POST: an http or https URL (a Slack incoming webhook with --format slack).
        #[arg(long)]
        url: String,
        /// An event to send (repeatable): approval.requested, approval.decided,
        /// execution.finished (a run completed, failed or was cancelled), cost.budget_alert.
        #[arg(long = "event", value_name = "EVENT", required = true, value_parser = commands::webhooks::parse_event)]
        events: Vec<wflo_core::db::WebhookEvent>,
        /// json (the event with a summary) or slack (`{"text": "..."}`).
        #[arg(long, default_value = "json", value_parser = commands::webhooks::parse_format)]
        format: wflo_core::db::WebhookFormat,
        /// The signing secret the receiver already has (16 to 200 characters); default: a
        /// new random one, printed once.
        #[arg(long)]
        secret: Option<String>,
    },
    /// Every webhook (never its secret).
    List,
    /// Remove a webhook with its deliveries (pending ones are not sent).
    Remove {
        /// The webhook's name.
        name: String,
    },
    /// A webhook's deliveries, newest event first: status, attempts, the receiver's last
    /// answer.
    Deliveries {
        /// The webhook's name.
        name: String,
        /// Only pending, delivered or failed ones.
        #[arg(long, value_parser = commands::webhooks::parse_status)]
        status: Option<wflo_core::db::DeliveryStatus>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
}

#[derive(Debug, Subcommand)]
enum TokensAction {
    /// Create a token; its secret is printed this once (only its hash is stored).
    Create {
        /// Who holds it (recorded as the actor of what it does).
        #[arg(long)]
        name: String,
        /// viewer (read), approver (+ decide approvals), operator (+ start, cancel, resume,
        /// roll back), admin (+ tokens).
        #[arg(long, value_parser = commands::tokens::parse_role)]
        role: wflo_core::types::Role,
    },
    /// Every token, revoked ones included (never their secrets).
    List,
    /// Revoke the active token with this name: refused from its next request.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// Which engine runs the workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum EngineKind {
    /// The in-process engine (durable memoization in the database).
    Local,
    /// Temporal (TEMPORAL_ADDRESS): the run is a `WfloWorkflow` executed by `wflo worker`.
    Temporal,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The workflow file (YAML). Not needed with --resume.
    #[arg(required_unless_present = "resume")]
    pub(crate) file: Option<PathBuf>,
    /// An input, NAME=VALUE (repeatable). VALUE is JSON when it parses as a number, boolean,
    /// array or object, else text.
    #[arg(long = "input", short = 'i', value_name = "NAME=VALUE", value_parser = commands::run::parse_input)]
    pub(crate) inputs: Vec<(String, serde_json::Value)>,
    /// The execution's budget in USD (overrides the file's policies.budget_usd).
    #[arg(long, value_name = "USD", value_parser = commands::run::parse_budget, allow_negative_numbers = true)]
    pub(crate) budget: Option<rust_decimal::Decimal>,
    /// The engine.
    #[arg(long, value_enum, default_value = "local")]
    pub(crate) engine: EngineKind,
    /// Continue this execution (after a failure, an interruption or a rollback): completed
    /// steps are not run again.
    #[arg(long, value_name = "EXECUTION_ID", conflicts_with_all = ["inputs", "budget"])]
    pub(crate) resume: Option<ExecutionId>,
    /// Record the live provider's answers into this replay cassette (JSON Lines), for offline
    /// reruns with WFLO_LLM_CASSETTE. Needs OPENAI_API_KEY or ANTHROPIC_API_KEY.
    #[arg(long, value_name = "PATH")]
    pub(crate) record_cassette: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ExecutionsAction {
    /// The newest executions.
    List {
        /// Only this status (PENDING, RUNNING, WAITING_APPROVAL, COMPLETED, FAILED, CANCELLED).
        #[arg(long, value_parser = commands::executions::parse_status)]
        status: Option<wflo_core::db::ExecutionStatus>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// One execution: steps, snapshots, approvals, rollbacks and costs.
    Show {
        /// The execution id.
        id: ExecutionId,
    },
}

#[derive(Debug, Subcommand)]
enum ApprovalsAction {
    /// Pending approval requests.
    List,
    /// Approve a pending request.
    Approve {
        /// The approval id (see `wflo approvals list`).
        id: ApprovalId,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
        /// Who decides (default: the OS user).
        #[arg(long = "as", value_name = "NAME", env = "USER", default_value = "cli")]
        approver: String,
    },
    /// Reject a pending request.
    Reject {
        /// The approval id.
        id: ApprovalId,
        /// Why (required).
        #[arg(long)]
        reason: String,
        /// Who decides (default: the OS user).
        #[arg(long = "as", value_name = "NAME", env = "USER", default_value = "cli")]
        approver: String,
    },
}

#[derive(Debug, Args)]
struct RollbackArgs {
    /// The execution.
    execution: ExecutionId,
    /// The snapshot version to restore (see `wflo executions show`).
    #[arg(long = "to", value_name = "SNAPSHOT_VERSION")]
    to: i32,
    /// Why (recorded).
    #[arg(long)]
    reason: String,
    /// Who rolls back (default: the OS user).
    #[arg(long = "as", value_name = "NAME", env = "USER", default_value = "cli")]
    by: String,
}

/// How a cost report groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum GroupBy {
    /// Per model.
    Model,
    /// Per workflow name.
    Workflow,
    /// Per UTC day.
    Day,
}

#[derive(Debug, Subcommand)]
enum CostAction {
    /// Totals from the cost ledger.
    Report {
        /// Grouping.
        #[arg(long, value_enum, default_value = "model")]
        by: GroupBy,
        /// From this date (YYYY-MM-DD, UTC) or time (RFC 3339). Default: everything (the last
        /// 30 days for --by day).
        #[arg(long, value_parser = commands::cost::parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Warnings (a lease that could not be released, a webhook receiver refusing) reach the
    // terminal unless WFLO_LOG says otherwise.
    if let Err(e) = wflo_core::LogConfig::from_env("warn").and_then(|l| l.init()) {
        eprintln!("error: {e}");
        return ExitCode::from(exit::USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let result = runtime.block_on(dispatch(cli));
    // Do not wait for background tasks (progress ticks, pools) past the command.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            exit::report(&e);
            ExitCode::from(exit::classify(&e))
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    use commands::remote;
    // With WFLO_SERVER_URL and WFLO_TOKEN set, these commands talk to `wflo serve`.
    let server = match &cli.command {
        Command::Run(_)
        | Command::Executions { .. }
        | Command::Approvals { .. }
        | Command::Cost { .. } => remote::client()?,
        _ => None,
    };
    if let Some(c) = &server {
        return match cli.command {
            Command::Run(args) => remote::run(c, args).await,
            Command::Executions {
                action: ExecutionsAction::List { status, limit },
            } => remote::executions_list(c, status, limit).await,
            Command::Executions {
                action: ExecutionsAction::Show { id },
            } => remote::executions_show(c, id).await,
            Command::Approvals {
                action: ApprovalsAction::List,
            } => remote::approvals_list(c).await,
            Command::Approvals {
                action: ApprovalsAction::Approve { id, reason, .. },
            } => remote::decide(c, id, true, reason).await,
            Command::Approvals {
                action: ApprovalsAction::Reject { id, reason, .. },
            } => remote::decide(c, id, false, Some(reason)).await,
            Command::Cost {
                action: CostAction::Report { by, since },
            } => remote::cost_report(c, by, since).await,
            _ => unreachable!("only the commands above take a server"),
        };
    }
    match cli.command {
        Command::Run(args) => commands::run::run(args).await,
        Command::Executions { action } => match action {
            ExecutionsAction::List { status, limit } => {
                commands::executions::list(status, limit).await
            }
            ExecutionsAction::Show { id } => commands::executions::show(id).await,
        },
        Command::Approvals { action } => match action {
            ApprovalsAction::List => commands::approvals::list().await,
            ApprovalsAction::Approve {
                id,
                reason,
                approver,
            } => commands::approvals::decide(id, true, reason, approver).await,
            ApprovalsAction::Reject {
                id,
                reason,
                approver,
            } => commands::approvals::decide(id, false, Some(reason), approver).await,
        },
        Command::Rollback(a) => {
            commands::rollback::rollback(a.execution, a.to, a.reason, a.by).await
        }
        Command::Cost {
            action: CostAction::Report { by, since },
        } => commands::cost::report(by, since).await,
        Command::Relay { once } => commands::relay::relay(once).await,
        Command::Migrate => commands::migrate::migrate().await,
        Command::Worker => commands::worker::worker().await,
        Command::Doctor => commands::doctor::doctor().await,
        Command::Serve {
            bind,
            cors,
            secure_cookies,
            public_url,
        } => commands::serve::serve(bind, cors, secure_cookies, public_url).await,
        Command::Tokens { action } => match action {
            TokensAction::Create { name, role } => commands::tokens::create(name, role).await,
            TokensAction::List => commands::tokens::list().await,
            TokensAction::Revoke { name } => commands::tokens::revoke(name).await,
        },
        Command::Webhooks { action } => match action {
            WebhooksAction::Add {
                name,
                url,
                events,
                format,
                secret,
            } => commands::webhooks::add(name, url, events, format, secret).await,
            WebhooksAction::List => commands::webhooks::list().await,
            WebhooksAction::Remove { name } => commands::webhooks::remove(name).await,
            WebhooksAction::Deliveries {
                name,
                status,
                limit,
            } => commands::webhooks::deliveries(name, status, limit).await,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_documents_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        for line in [
            "0  success",
            "3  budget exceeded",
            "4  a service is unreachable",
        ] {
            assert!(help.contains(line), "{help}");
        }
    }

    #[test]
    fn resume_needs_no_file_and_refuses_a_new_budget() {
        let id = uuid::Uuid::nil().to_string();
        assert!(Cli::try_parse_from(["wflo", "run", "--resume", &id]).is_ok());
        assert!(Cli::try_parse_from(["wflo", "run", "--resume", &id, "--budget", "1"]).is_err());
        assert!(Cli::try_parse_from(["wflo", "run"]).is_err());
    }

    #[test]
    fn a_webhook_needs_an_event_it_can_send() {
        let add = |extra: &[&str]| {
            let mut args = vec![
                "wflo",
                "webhooks",
                "add",
                "--name",
                "n",
                "--url",
                "https://e.com",
            ];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args)
        };
        assert!(add(&[]).is_err(), "at least one --event");
        assert!(add(&["--event", "workflow.status"]).is_err());
        assert!(add(&["--event", "approval.requested", "--format", "xml"]).is_err());
        match add(&[
            "--event",
            "approval.requested",
            "--event",
            "cost.budget_alert",
            "--format",
            "slack",
        ])
        .unwrap()
        .command
        {
            Command::Webhooks {
                action: WebhooksAction::Add { events, format, .. },
            } => {
                assert_eq!(
                    events,
                    [
                        wflo_core::db::WebhookEvent::ApprovalRequested,
                        wflo_core::db::WebhookEvent::BudgetAlert
                    ]
                );
                assert_eq!(format, wflo_core::db::WebhookFormat::Slack);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn reject_needs_a_reason() {
        let id = uuid::Uuid::nil().to_string();
        assert!(Cli::try_parse_from(["wflo", "approvals", "reject", &id]).is_err());
        assert!(
            Cli::try_parse_from(["wflo", "approvals", "reject", &id, "--reason", "no"]).is_ok()
        );
    }
}
