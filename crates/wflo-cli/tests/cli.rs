//! The `wflo` binary without services: temporary SQLite databases, a fake OpenAI server on
//! loopback, the shipped replay cassette. (Runs that reach a code step need Docker: see
//! `quickstart.rs`, behind the `integration` feature.)

mod common;

use common::{World, chat_completion, example};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn quickstart() -> String {
    example("quickstart.yaml").display().to_string()
}

fn cassette() -> String {
    example("quickstart.cassette.json").display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_too_small_stops_the_run_before_the_llm_call_with_exit_3() {
    // A live provider that must never be called.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(chat_completion("print(1)\n", 1, 1)))
        .expect(0)
        .mount(&server)
        .await;
    let world = World::new()
        .env("OPENAI_API_KEY", "sk-test-never-used")
        .env("OPENAI_BASE_URL", format!("{}/v1", server.uri()));
    let run =
        common::run_blocking(world.command(&["run", &quickstart(), "--budget", "0.0000001"])).await;
    run.expect_code(3);
    assert!(
        run.stderr
            .contains("step `plan` was stopped before its call"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("0.0000001"), "{}", run.stderr);
    assert!(run.stdout.contains("status FAILED"), "{}", run.stdout);
    assert!(
        run.stdout.contains("of budget 0.0000001 USD"),
        "the breakdown is printed against the budget: {}",
        run.stdout
    );
    assert!(
        server.received_requests().await.unwrap().is_empty(),
        "the provider was called despite the budget"
    );

    // The execution is recorded FAILED with the reason, and nothing was spent.
    let id = run.execution_id();
    let show = world.run(&["executions", "show", &id]);
    show.expect_code(0);
    assert!(show.stdout.contains("status    FAILED"), "{}", show.stdout);
    assert!(
        show.stdout.contains("stopped before its call"),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout.contains("cost      0.00 USD"),
        "{}",
        show.stdout
    );
    let failed = world.run(&["executions", "list", "--status", "failed"]);
    failed.expect_code(0);
    assert!(failed.stdout.contains(&id), "{}", failed.stdout);
}

#[test]
fn the_shipped_cassette_also_stops_at_a_tiny_budget_offline() {
    let world = World::new().env("WFLO_LLM_CASSETTE", cassette());
    let run = world.run(&["run", &quickstart(), "--budget", "0.0000001"]);
    run.expect_code(3);
    assert!(run.stderr.contains("raise the budget"), "{}", run.stderr);
}

#[test]
fn malformed_workflow_files_exit_2_naming_the_step() {
    let world = World::new();
    let cases = [
        (
            "cycle.yaml",
            "name: c\nsteps:\n  - id: a\n    kind: checkpoint\n    depends_on: [b]\n  - id: b\n    kind: checkpoint\n    depends_on: [a]\n",
            "step `a`",
            "cycle",
        ),
        (
            "kind.yaml",
            "name: k\nsteps:\n  - id: first\n    kind: checkpoint\n  - id: teleport\n    kind: quantum\n",
            "step `teleport` (line 5)",
            "unknown kind `quantum`",
        ),
        (
            "template.yaml",
            "name: t\nsteps:\n  - id: ask\n    kind: llm\n    model: gpt-4o-mini\n    prompt: \"{{ inputs.topic \"\n",
            "step `ask`",
            "bad template",
        ),
        (
            "dependency.yaml",
            "name: d\nsteps:\n  - id: only\n    kind: checkpoint\n    depends_on: [ghost]\n",
            "step `only`",
            "unknown step `ghost`",
        ),
    ];
    for (file, text, step, what) in cases {
        let path = world.file(file, text);
        let run = world.run(&["run", &path]);
        run.expect_code(2);
        assert!(run.stderr.contains(step), "{file}: {}", run.stderr);
        assert!(run.stderr.contains(what), "{file}: {}", run.stderr);
        assert!(
            !run.stderr.contains("stack backtrace") && !run.stderr.contains("panicked"),
            "{file}: {}",
            run.stderr
        );
    }
}

#[test]
fn a_missing_file_and_bad_arguments_are_usage_errors() {
    let world = World::new();
    let run = world.run(&["run", "no-such-file.yaml"]);
    run.expect_code(2);
    assert!(run.stderr.contains("no-such-file.yaml"), "{}", run.stderr);
    world
        .run(&["run", &quickstart(), "--budget", "-1"])
        .expect_code(2);
    world
        .run(&["run", &quickstart(), "--input", "novalue"])
        .expect_code(2);
    world
        .run(&["executions", "show", "not-a-uuid"])
        .expect_code(2);
}

#[test]
fn an_undeclared_input_is_refused_before_anything_runs() {
    let world = World::new().env("WFLO_LLM_CASSETTE", cassette());
    let run = world.run(&["run", &quickstart(), "--input", "topic=x"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("unknown input `topic`"),
        "{}",
        run.stderr
    );
}

#[test]
fn approving_an_unknown_id_fails_with_a_clear_message() {
    let world = World::new();
    let id = "0193a6c4-0000-7000-8000-000000000000";
    let run = world.run(&["approvals", "approve", id, "--as", "ana"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains(&format!("approval request {id} does not exist")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("wflo approvals list"), "{}", run.stderr);
    let run = world.run(&["approvals", "reject", id, "--reason", "no"]);
    run.expect_code(2);
    let list = world.run(&["approvals", "list"]);
    list.expect_code(0);
    assert!(
        list.stdout.contains("no pending approvals"),
        "{}",
        list.stdout
    );
}

#[test]
fn an_unknown_execution_is_a_usage_error() {
    let world = World::new();
    let id = "0193a6c4-0000-7000-8000-000000000001";
    let run = world.run(&["executions", "show", id]);
    run.expect_code(2);
    assert!(run.stderr.contains("not found"), "{}", run.stderr);
    world.run(&["run", "--resume", id]).expect_code(2);
    world
        .run(&["rollback", id, "--to", "1", "--reason", "test"])
        .expect_code(2);
}

#[test]
fn the_temporal_engine_and_the_worker_say_to_set_temporal_address() {
    let world = World::new();
    let run = world.run(&["run", &quickstart(), "--engine", "temporal"]);
    run.expect_code(2);
    assert!(run.stderr.contains("TEMPORAL_ADDRESS"), "{}", run.stderr);
    let worker = world.run(&["worker"]);
    worker.expect_code(2);
    assert!(
        worker.stderr.contains("TEMPORAL_ADDRESS"),
        "{}",
        worker.stderr
    );
    let resume = world.env("TEMPORAL_ADDRESS", "http://127.0.0.1:1").run(&[
        "run",
        "--engine",
        "temporal",
        "--resume",
        "01a212db-c461-7142-8b49-3b3c01f715ac",
    ]);
    resume.expect_code(2);
    assert!(
        resume.stderr.contains("--resume is for the local engine"),
        "{}",
        resume.stderr
    );
}

#[test]
fn relay_without_kafka_says_what_to_set() {
    let world = World::new();
    let run = world.run(&["relay", "--once"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("KAFKA_BOOTSTRAP_SERVERS"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_unreachable_database_is_exit_4() {
    let world = World::new().env("DATABASE_URL", "postgres://wflo:secret@127.0.0.1:1/wflo");
    let run = world.run(&["executions", "list"]);
    run.expect_code(4);
    assert!(
        run.stderr.contains("cannot connect to the database"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("secret"),
        "the password leaked: {}",
        run.stderr
    );
}

#[test]
fn migrate_prints_the_schema_status() {
    let world = World::new();
    let run = world.run(&["migrate"]);
    run.expect_code(0);
    assert!(run.stdout.contains("applied"), "{}", run.stdout);
    assert!(run.stdout.contains("schema up to date"), "{}", run.stdout);
}

#[test]
fn doctor_reports_each_service_and_fails_on_a_configured_one_that_is_down() {
    let world = World::new()
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .env("WFLO_LLM_CASSETTE", cassette());
    // A fresh database is behind: doctor says so without failing.
    let fresh = world.run(&["doctor"]);
    assert!(
        fresh.stdout.contains("run `wflo migrate`"),
        "{}",
        fresh.stdout
    );
    world.run(&["migrate"]).expect_code(0);
    let run = world.run(&["doctor"]);
    run.expect_code(4);
    let line = |name: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} line in:\n{}", run.stdout))
            .to_string()
    };
    assert!(line("database").contains(" ok "), "{}", run.stdout);
    assert!(
        line("database").contains("schema current"),
        "{}",
        run.stdout
    );
    assert!(line("redis").contains("FAIL"), "{}", run.stdout);
    assert!(line("redis").contains("REDIS_URL"), "{}", run.stdout);
    assert!(line("kafka").contains("not set"), "{}", run.stdout);
    assert!(line("temporal").contains("not set"), "{}", run.stdout);
    assert!(line("llm").contains("1 recorded answer"), "{}", run.stdout);
    assert!(run.stderr.contains("redis"), "{}", run.stderr);
}

#[test]
fn an_empty_ledger_reports_no_costs() {
    let world = World::new();
    for by in ["model", "workflow", "day"] {
        let run = world.run(&["cost", "report", "--by", by]);
        run.expect_code(0);
        assert!(
            run.stdout.contains("no LLM calls recorded"),
            "{}",
            run.stdout
        );
    }
    world
        .run(&["cost", "report", "--since", "last week"])
        .expect_code(2);
}

#[test]
fn help_documents_the_exit_codes() {
    let run = World::new().run(&["--help"]);
    run.expect_code(0);
    for code in [
        "0  success",
        "1  the run failed",
        "2  usage",
        "3  budget exceeded",
        "4  a service",
    ] {
        assert!(run.stdout.contains(code), "{}", run.stdout);
    }
}
