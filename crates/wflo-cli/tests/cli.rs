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
        (
            "self.yaml",
            "name: s\nsteps:\n  - id: loop\n    kind: code\n    code: \"{{ steps.loop.output.stdout }}\"\n",
            "step `loop` (line 3)",
            "own output",
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
        if file == "self.yaml" {
            assert!(!run.stderr.contains("cycle"), "{}", run.stderr);
            assert!(
                !run.stderr.contains("add it to depends_on"),
                "{}",
                run.stderr
            );
        }
    }
}

#[test]
fn a_template_naming_an_undeclared_input_is_refused_before_anything_is_written() {
    for inputs in ["", "inputs:\n  topic: {default: rust}\n"] {
        let world = World::new().env("WFLO_LLM_CASSETTE", cassette());
        let path = world.file(
            "nope.yaml",
            &format!(
                "name: n\n{inputs}steps:\n  - id: ask\n    kind: llm\n    model: gpt-4o-mini\n    prompt: \"About {{{{ inputs.nope }}}}\"\n"
            ),
        );
        let run = world.run(&["run", &path, "--input", "nope=x"]);
        run.expect_code(2);
        assert!(run.stderr.contains("step `ask`"), "{}", run.stderr);
        assert!(
            run.stderr.contains("undeclared input `nope`"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("undefined value"), "{}", run.stderr);
        assert!(
            !world.dir.path().join("wflo.db").exists(),
            "the refused run created the database (inputs block: {inputs:?})"
        );
    }
}

#[test]
fn a_missing_llm_provider_is_refused_before_the_execution_is_written() {
    let world = World::new();
    let path = world.file(
        "ask.yaml",
        "name: ask\nsteps:\n  - id: first\n    kind: checkpoint\n  - id: ask\n    kind: llm\n    depends_on: [first]\n    model: gpt-4o-mini\n    prompt: hi\n",
    );
    let run = world.run(&["run", &path]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("step `ask` calls an LLM but no provider is configured"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("OPENAI_API_KEY"), "{}", run.stderr);
    assert!(
        !run.stdout.contains("running") && !run.stderr.contains("running ask"),
        "the run started: {}\n{}",
        run.stdout,
        run.stderr
    );
    let list = world.run(&["executions", "list"]);
    list.expect_code(0);
    assert!(
        list.stdout.contains("no executions"),
        "an execution row was written: {}",
        list.stdout
    );
}

#[test]
fn a_negative_budget_is_refused_as_not_greater_than_zero() {
    let world = World::new().env("WFLO_LLM_CASSETTE", cassette());
    for budget in ["-1", "-0.5", "0"] {
        let run = world.run(&["run", &quickstart(), "--budget", budget]);
        run.expect_code(2);
        assert!(
            run.stderr.contains("must be greater than zero"),
            "{budget}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("-- "), "{budget}: {}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_answered_from_the_response_cache_shows_cached_and_the_amount_saved() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(chat_completion(
            "print(1)\n",
            1000,
            100,
        )))
        .expect(1)
        .mount(&server)
        .await;
    let world = World::new()
        .env("OPENAI_API_KEY", "sk-test-cache")
        .env("OPENAI_BASE_URL", format!("{}/v1", server.uri()));
    let path = world.file(
        "twice.yaml",
        "name: twice\nsteps:\n  - id: first\n    kind: llm\n    model: gpt-4o-mini\n    prompt: Say hi\n    max_tokens: 50\n  - id: again\n    kind: llm\n    depends_on: [first]\n    model: gpt-4o-mini\n    prompt: Say hi\n    max_tokens: 50\n",
    );
    let run = common::run_blocking(world.command(&["run", &path])).await;
    run.expect_code(0);
    let row = |step: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(step))
            .unwrap_or_else(|| panic!("no {step} row in:\n{}", run.stdout))
            .to_string()
    };
    let paid = row("first")
        .split_whitespace()
        .last()
        .expect("a cost cell")
        .to_string();
    assert_ne!(paid, "0.00", "{}", run.stdout);
    assert!(!row("first").contains("cached"), "{}", run.stdout);
    assert!(
        row("again").ends_with(&format!("0.00 cached (saved {paid})")),
        "{}",
        run.stdout
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
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
    // No database yet: doctor says how one is made, and does not make it.
    let fresh = world.run(&["doctor"]);
    assert!(
        fresh.stdout.contains("does not exist yet") && fresh.stdout.contains("wflo migrate"),
        "{}",
        fresh.stdout
    );
    assert!(!fresh.stdout.contains("behind"), "{}", fresh.stdout);
    assert!(
        !world.dir.path().join("wflo.db").exists(),
        "doctor created the database"
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
    assert!(
        line("redis").contains("connection refused at 127.0.0.1:1;"),
        "{}",
        run.stdout
    );
    assert!(line("kafka").contains("not set"), "{}", run.stdout);
    assert!(line("temporal").contains("not set"), "{}", run.stdout);
    assert!(line("llm").contains("1 recorded answer"), "{}", run.stdout);
    assert!(run.stderr.contains("redis"), "{}", run.stderr);
}

#[test]
fn doctor_puts_connection_failures_in_words_and_gives_the_cli_fix_for_docker_once() {
    let world = World::new()
        .env("REDIS_URL", "redis://127.0.0.1:6390")
        .env("TEMPORAL_ADDRESS", "http://127.0.0.1:1")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    let run = world.run(&["doctor"]);
    run.expect_code(4);
    let line = |name: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} line in:\n{}", run.stdout))
            .to_string()
    };
    assert!(
        line("redis").contains("connection refused at 127.0.0.1:6390"),
        "{}",
        run.stdout
    );
    assert!(
        line("temporal").contains("connection refused at 127.0.0.1:1"),
        "{}",
        run.stdout
    );
    for text in ["Os {", "os error", "code: 111"] {
        assert!(!run.stdout.contains(text), "{text}: {}", run.stdout);
    }
    assert!(!run.stdout.contains("local engine"), "{}", run.stdout);
    let docker = line("docker");
    assert!(docker.contains("FAIL"), "{docker}");
    assert!(docker.contains("/nonexistent/docker.sock"), "{docker}");
    assert_eq!(docker.matches("DOCKER_HOST").count(), 1, "{docker}");
    assert_eq!(docker.matches("services up docker").count(), 1, "{docker}");
    assert!(
        !docker.contains("SandboxConfig"),
        "a Rust API is no CLI fix: {docker}"
    );
    assert!(
        !world.dir.path().join("wflo.db").exists(),
        "doctor created the database"
    );
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
fn webhooks_are_added_with_a_secret_shown_once_listed_and_removed() {
    let world = World::new();
    let add = world.run(&[
        "webhooks",
        "add",
        "--name",
        "ops",
        "--url",
        "https://hooks.example.com/services/x",
        "--event",
        "approval.requested",
        "--event",
        "execution.finished",
        "--format",
        "slack",
    ]);
    add.expect_code(0);
    let secret = add.stdout.trim();
    assert!(
        secret.starts_with("whsec_") && secret.len() == 70,
        "the secret alone on stdout: {}",
        add.stdout
    );
    assert!(add.stderr.contains("Wflo-Signature"), "{}", add.stderr);

    let list = world.run(&["webhooks", "list"]);
    list.expect_code(0);
    for want in [
        "ops",
        "hooks.example.com",
        "approval.requested, execution.finished",
        "slack",
        "enabled",
    ] {
        assert!(list.stdout.contains(want), "{want} in {}", list.stdout);
    }
    assert!(
        !list.stdout.contains(secret),
        "never the secret: {}",
        list.stdout
    );

    let again = world.run(&[
        "webhooks",
        "add",
        "--name",
        "ops",
        "--url",
        "https://e.com",
        "--event",
        "cost.budget_alert",
    ]);
    again.expect_code(1);
    assert!(again.stderr.contains("remove it first"), "{}", again.stderr);
    let bad_url = world.run(&[
        "webhooks",
        "add",
        "--name",
        "b",
        "--url",
        "ftp://e.com",
        "--event",
        "cost.budget_alert",
    ]);
    bad_url.expect_code(2);
    assert!(bad_url.stderr.contains("http"), "{}", bad_url.stderr);
    let bad_event = world.run(&[
        "webhooks",
        "add",
        "--name",
        "b",
        "--url",
        "https://e.com",
        "--event",
        "workflow.status",
    ]);
    bad_event.expect_code(2);
    assert!(
        bad_event.stderr.contains("execution.finished"),
        "{}",
        bad_event.stderr
    );
    let given = world.run(&[
        "webhooks",
        "add",
        "--name",
        "mine",
        "--url",
        "http://127.0.0.1:9/in",
        "--event",
        "approval.decided",
        "--secret",
        "the-receivers-own-secret",
    ]);
    given.expect_code(0);
    assert_eq!(given.stdout, "", "a given secret is not printed");

    let none = world.run(&["webhooks", "deliveries", "ops"]);
    none.expect_code(0);
    assert!(none.stdout.contains("no deliveries"), "{}", none.stdout);
    world.run(&["webhooks", "remove", "ops"]).expect_code(0);
    world.run(&["webhooks", "remove", "ops"]).expect_code(2);
    world.run(&["webhooks", "remove", "mine"]).expect_code(0);
    let empty = world.run(&["webhooks", "list"]);
    assert!(empty.stdout.contains("no webhooks"), "{}", empty.stdout);
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

#[test]
fn wflo_log_json_writes_json_lines_that_carry_the_execution_and_the_step() {
    let world = World::new()
        .env("WFLO_LOG", "info")
        .env("WFLO_LOG_FORMAT", "json");
    let flow = world.file(
        "logged.yaml",
        "name: logged\nsteps:\n  - id: first\n    kind: checkpoint\n  - id: second\n    kind: checkpoint\n    depends_on: [first]\n",
    );
    let run = world.run(&["run", &flow]);
    run.expect_code(0);
    let id = run.execution_id();
    let lines: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of = |message: &str| -> Vec<&serde_json::Value> {
        lines.iter().filter(|l| l["message"] == message).collect()
    };
    let steps = of("step completed");
    assert_eq!(
        steps.len(),
        2,
        "one line per completed step: {}",
        run.stderr
    );
    for (line, key) in steps.iter().zip(["first", "second"]) {
        assert_eq!(line["level"], "INFO");
        let spans = line["spans"].as_array().unwrap();
        assert_eq!(spans[0]["name"], "wflo.run", "{line}");
        assert_eq!(spans[0]["execution_id"], serde_json::json!(id), "{line}");
        assert_eq!(spans[0]["workflow"], "logged", "{line}");
        assert_eq!(line["span"]["name"], "wflo.step", "{line}");
        assert_eq!(line["span"]["step"], key, "{line}");
        assert_eq!(line["span"]["kind"], "checkpoint", "{line}");
        assert_eq!(line["span"]["attempt"], 1, "{line}");
        assert_eq!(line["span"]["memoized"], false, "{line}");
    }
    let finished = of("run finished");
    assert_eq!(finished.len(), 1, "{}", run.stderr);
    assert_eq!(finished[0]["status"], "COMPLETED");

    // A bad setting is a usage error that says what to write, before anything runs.
    let bad = World::new()
        .env("WFLO_LOG_FORMAT", "xml")
        .run(&["executions", "list"]);
    bad.expect_code(2);
    assert!(bad.stderr.contains("use text or json"), "{}", bad.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_key_is_in_no_log_line_even_at_trace() {
    const KEY: &str = "sk-test-must-never-be-logged-0123456789";
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(chat_completion("print(1)\n", 7, 5)))
        .expect(2)
        .mount(&server)
        .await;
    for format in ["json", "text"] {
        let world = World::new()
            .env("OPENAI_API_KEY", KEY)
            .env("OPENAI_BASE_URL", format!("{}/v1", server.uri()))
            .env("WFLO_LOG", "trace")
            .env("WFLO_LOG_FORMAT", format);
        let flow = world.file(
            "ask.yaml",
            "name: ask\nsteps:\n  - id: ask\n    kind: llm\n    model: gpt-4o-mini\n    prompt: say hi\n",
        );
        let run = common::run_blocking(world.command(&["run", &flow])).await;
        run.expect_code(0);
        assert!(
            run.stderr.contains("step completed"),
            "the trace-level log was written: {}",
            run.stderr
        );
        for (name, text) in [("stderr", &run.stderr), ("stdout", &run.stdout)] {
            assert!(
                !text.contains(KEY),
                "the key is in {name} ({format}): {text}"
            );
            assert!(
                !text.contains("must-never-be-logged"),
                "part of the key is in {name} ({format})"
            );
        }
    }
}
