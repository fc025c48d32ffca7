//! What a budgeted LLM step asks of the database, counted statement by statement (hermetic:
//! SQLite in memory with its statements logged, a fake provider): the execution row is read
//! at most once per step, and the step's statements stay few.

mod common;

use common::FakeLlm;
use rust_decimal_macros::dec;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use wflo_db::{Db, DbConfig};
use wflo_runtime::{Engine, EngineConfig, LlmCall, RunOptions};

/// Every statement the database ran, as its SQL text.
#[derive(Clone, Default)]
struct Statements(Arc<Mutex<Vec<String>>>);

impl Statements {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[derive(Default)]
struct Sql(String);

impl Visit for Sql {
    fn record_str(&mut self, field: &Field, value: &str) {
        if matches!(field.name(), "summary" | "db.statement") {
            self.0.push_str(value);
            self.0.push(' ');
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if matches!(field.name(), "summary" | "db.statement") {
            self.0.push_str(&format!("{value:?} "));
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Statements {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            let mut sql = Sql::default();
            event.record(&mut sql);
            self.0.lock().unwrap().push(sql.0.to_lowercase());
        }
    }
}

fn reads_of_the_execution(statements: &[String]) -> usize {
    statements
        .iter()
        .filter(|s| s.contains("select") && s.contains("from \"workflow_executions\""))
        .count()
}

#[tokio::test]
async fn a_budgeted_llm_step_reads_its_execution_at_most_once() {
    let statements = Statements::default();
    // Global: SQLite runs each connection's statements on a thread of its own. This binary
    // holds this one test.
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(statements.clone()),
    )
    .expect("the only subscriber of this test binary");
    let db = Db::connect(
        &DbConfig::builder("sqlite::memory:")
            .log_statements(true)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let llm = FakeLlm::answering("hi");
    let engine = Engine::builder(db)
        .llm(llm.clone())
        .config(
            EngineConfig::builder()
                .approval_poll(Duration::from_millis(10))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let seen = statements.clone();
    let per_step: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let record = per_step.clone();
    let out = engine
        .run_fn(
            "counted",
            RunOptions {
                budget_usd: Some(dec!(1)),
                ..Default::default()
            },
            |ctx| async move {
                for key in ["first", "second"] {
                    seen.take();
                    ctx.llm(key, LlmCall::new("gpt-4o-mini", "say hi").max_tokens(20))
                        .await?;
                    record.lock().unwrap().push(seen.take());
                }
                Ok(json!(null))
            },
        )
        .await
        .unwrap();
    assert_eq!(llm.calls(), 2);
    assert_eq!(out.cost_usd, dec!(0.000042), "both calls were charged");
    let per_step = per_step.lock().unwrap();
    for (key, statements) in ["first", "second"].iter().zip(per_step.iter()) {
        assert!(
            !statements.is_empty(),
            "statement logging is on: step {key} ran statements"
        );
        assert!(
            reads_of_the_execution(statements) <= 1,
            "step {key} read its execution {} times in {} statements:\n{}",
            reads_of_the_execution(statements),
            statements.len(),
            statements.join("\n")
        );
    }
}
