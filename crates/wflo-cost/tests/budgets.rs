//! wflo-cost against real databases: every case runs on PostgreSQL and on SQLite.
//!
//! Run with `cargo xtask itest wflo-cost` (starts PostgreSQL, exports WFLO_TEST_DATABASE_URL).
//! Each case gets its own fresh database (`TestDb`), so cases run in parallel.
#![cfg(feature = "integration")]

use chrono::{Duration as ChronoDuration, Utc};
use futures::future::join_all;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rstest::rstest;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;
use wflo_cost::{
    BudgetPolicy, CostConfig, CostQuery, CostTracker, Error, ModelPrice, Period, PriceCatalog,
    ReserveRequest, Scope, TokenUsage,
};
use wflo_db::testing::TestDb;
use wflo_db::{
    Backend, Db, ExecutionId, Executor, NewDefinition, NewExecution, NewStep, ReservationId,
    ReservationStatus, StepId,
};

/// A model priced at exactly $1 per 1M tokens in and out: n tokens cost n µUSD.
const TEST_MODEL: &str = "test-micro";

fn catalog() -> PriceCatalog {
    PriceCatalog::builder()
        .price(TEST_MODEL, ModelPrice::new(dec!(1), dec!(1)))
        .build()
        .unwrap()
}

fn tracker(db: &Db) -> CostTracker {
    CostTracker::new(
        db.clone(),
        catalog(),
        CostConfig::builder().build().unwrap(),
    )
}

async fn execution(db: &Db, workflow: &str) -> ExecutionId {
    let def = match db.definitions().latest(workflow).await {
        Ok(d) => d,
        Err(_) => db
            .definitions()
            .create(NewDefinition::new(workflow, json!({"steps": []})))
            .await
            .unwrap(),
    };
    db.executions()
        .create(NewExecution::new(def.id, json!({})))
        .await
        .unwrap()
        .id
}

async fn step(db: &Db, execution: ExecutionId, key: &str) -> StepId {
    db.steps()
        .create(NewStep {
            execution_id: execution,
            step_key: key.into(),
            step_type: "llm".into(),
            inputs: None,
        })
        .await
        .unwrap()
        .id
}

fn usd_micro(n: u64) -> TokenUsage {
    TokenUsage::new(TEST_MODEL, n, 0)
}

fn request(
    id: &str,
    scopes: Vec<Scope>,
    amount: Decimal,
    exec: Option<ExecutionId>,
) -> ReserveRequest {
    ReserveRequest {
        request_id: id.into(),
        scopes,
        amount_usd: amount,
        execution_id: exec,
        labels: None,
    }
}

// ------------------------------------------------------------------ test_cost_tracking cases

#[rstest]
#[tokio::test]
async fn tracks_gpt4_calls_and_accumulates_exactly(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let tracker = tracker(&t);
    let exec = execution(&t, "gpt4-flow").await;
    let s = step(&t, exec, "plan").await;
    let first = tracker
        .track(exec, Some(s), &TokenUsage::new("gpt-4", 100, 50))
        .await
        .unwrap();
    assert_eq!(first.cost.total_usd, dec!(0.006));
    assert_eq!(
        t.executions().get(exec).await.unwrap().cost_usd,
        dec!(0.006)
    );
    tracker
        .track(exec, Some(s), &TokenUsage::new("gpt-4", 200, 100))
        .await
        .unwrap();
    let e = t.executions().get(exec).await.unwrap();
    assert_eq!(e.cost_usd, dec!(0.018));
    assert_eq!((e.tokens.prompt, e.tokens.completion), (300, 150));
    let st = t.steps().get(s).await.unwrap();
    assert_eq!(st.cost_usd, dec!(0.018));
    assert_eq!((st.tokens.prompt, st.tokens.completion), (300, 150));
    let rows = t.costs().list_for_execution(exec).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].model, "gpt-4");
    assert_eq!(rows[0].workflow_name.as_deref(), Some("gpt4-flow"));
    assert_eq!(rows[1].cost_usd, dec!(0.012));
}

#[rstest]
#[tokio::test]
async fn tracks_gpt35_and_claude_sonnet(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let tracker = tracker(&t);
    let exec = execution(&t, "mixed").await;
    let a = tracker
        .track(
            exec,
            None,
            &TokenUsage::new("gpt-3.5-turbo-0613", 1000, 500),
        )
        .await
        .unwrap();
    assert_eq!(a.cost.total_usd, dec!(0.0025));
    let b = tracker
        .track(exec, None, &TokenUsage::new("gpt-3.5-turbo", 1000, 500))
        .await
        .unwrap();
    assert_eq!(b.cost.total_usd, dec!(0.00125));
    let c = tracker
        .track(
            exec,
            None,
            &TokenUsage::new("anthropic/claude-3-5-sonnet-20241022", 1000, 500),
        )
        .await
        .unwrap();
    assert_eq!(c.cost.total_usd, dec!(0.0105));
    assert_eq!(c.cost.model, "claude-3-5-sonnet-20241022");
    assert_eq!(
        t.executions().get(exec).await.unwrap().cost_usd,
        dec!(0.01425)
    );
    // Unknown model: a typed error, nothing written.
    let err = tracker
        .track(exec, None, &TokenUsage::new("gpt-4o-mni", 1, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownModel { suggestions, .. } if suggestions[0] == "gpt-4o-mini"),
        "{err}"
    );
    assert_eq!(t.costs().list_for_execution(exec).await.unwrap().len(), 3);
}

#[rstest]
#[tokio::test]
async fn aggregates_by_model_workflow_and_time_window(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let tracker = tracker(&t);
    let a = execution(&t, "alpha").await;
    let b = execution(&t, "beta").await;
    let before = Utc::now() - ChronoDuration::seconds(1);
    for _ in 0..3 {
        tracker
            .track(a, None, &TokenUsage::new("gpt-4", 100, 50))
            .await
            .unwrap();
    }
    tracker
        .track(
            a,
            None,
            &TokenUsage::new("gpt-4o", 1000, 0).cached_prompt(400),
        )
        .await
        .unwrap();
    tracker
        .track(b, None, &TokenUsage::new("gpt-4o", 1000, 1000))
        .await
        .unwrap();
    let after = Utc::now() + ChronoDuration::seconds(1);

    let all = tracker.totals(&CostQuery::default()).await.unwrap();
    // 3 × 0.006 + (600 × 2.5 + 400 × 1.25)/1M + (1000 × 2.5 + 1000 × 10)/1M
    assert_eq!(all.calls, 5);
    assert_eq!(all.cost_usd, dec!(0.018) + dec!(0.002) + dec!(0.0125));
    assert_eq!(all.prompt_tokens, 2300);
    assert_eq!(all.cached_prompt_tokens, 400);

    let by_model = tracker
        .totals_by_model(&CostQuery::default())
        .await
        .unwrap();
    assert_eq!(by_model["gpt-4"].calls, 3);
    assert_eq!(by_model["gpt-4"].cost_usd, dec!(0.018));
    assert_eq!(by_model["gpt-4o"].cost_usd, dec!(0.0145));

    let by_wf = tracker
        .totals_by_workflow(&CostQuery::default())
        .await
        .unwrap();
    assert_eq!(by_wf["alpha"].cost_usd, dec!(0.020));
    assert_eq!(by_wf["beta"].cost_usd, dec!(0.0125));

    let window = CostQuery {
        since: Some(before),
        until: Some(after),
        workflow: Some("alpha".into()),
        ..Default::default()
    };
    assert_eq!(tracker.totals(&window).await.unwrap().calls, 4);
    let empty = CostQuery {
        since: Some(after),
        ..Default::default()
    };
    assert_eq!(tracker.totals(&empty).await.unwrap().calls, 0);
    assert_eq!(
        tracker
            .totals(&CostQuery {
                execution_id: Some(b),
                ..Default::default()
            })
            .await
            .unwrap()
            .cost_usd,
        t.executions().get(b).await.unwrap().cost_usd
    );
}

#[rstest]
#[tokio::test]
async fn budget_within_exceeded_and_exactly_at_limit(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let tracker = tracker(&t);
    let exec = execution(&t, "budgeted").await;
    let scope = Scope::Execution(exec);
    tracker
        .set_budget(&scope, Period::Total, Utc::now(), dec!(0.001))
        .await
        .unwrap();
    // Within: 400 µUSD.
    let r = tracker
        .reserve(&request("a", vec![scope.clone()], dec!(0.0004), Some(exec)))
        .await
        .unwrap();
    tracker.settle(&r, None, &usd_micro(400)).await.unwrap();
    let checks = tracker
        .check(std::slice::from_ref(&scope), dec!(0.0006))
        .await
        .unwrap();
    assert!(checks[0].1, "600 more fits exactly");
    assert!(checks[0].0.within_budget());
    // Exactly at the limit: 600 more makes spent == limit, which is within budget.
    let r = tracker
        .reserve(&request("b", vec![scope.clone()], dec!(0.0006), Some(exec)))
        .await
        .unwrap();
    let s = tracker.settle(&r, None, &usd_micro(600)).await.unwrap();
    assert_eq!(s.budgets[0].spent_usd, dec!(0.001));
    assert!(s.budgets[0].within_budget());
    // Exceeded: one nano-USD more is refused, typed, and nothing is held.
    let err = tracker
        .reserve(&request(
            "c",
            vec![scope.clone()],
            dec!(0.000000001),
            Some(exec),
        ))
        .await
        .unwrap_err();
    match err {
        Error::BudgetExceeded {
            scope: s,
            limit,
            spent,
            reserved,
            requested,
        } => {
            assert_eq!(s, scope.key());
            assert_eq!(
                (limit, spent, reserved, requested),
                (dec!(0.001), dec!(0.001), dec!(0), dec!(0.000000001))
            );
        }
        other => panic!("expected BudgetExceeded, got {other}"),
    }
    assert!(
        t.budgets()
            .reservation_by_request("c")
            .await
            .unwrap()
            .is_none()
    );
    let (state, room) = &tracker.check(&[scope], dec!(0.000000001)).await.unwrap()[0];
    assert!(!room);
    assert_eq!(state.reserved_usd, dec!(0));
}

#[rstest]
#[tokio::test]
async fn estimates_a_prompt_and_orders_models(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let tracker = tracker(&t);
    let prompt = "Explain, in two sentences, why budgets must be reserved before a call.";
    let e = tracker
        .catalog()
        .estimate_prompt("gpt-4", prompt, 200)
        .unwrap();
    assert!(e.prompt_tokens.tokens > 10 && !e.prompt_tokens.estimate);
    assert_eq!(
        e.cost_usd,
        (Decimal::from(e.prompt_tokens.tokens) * dec!(0.00003) + dec!(200) * dec!(0.00006))
            .normalize()
    );
    let cost = |m| {
        tracker
            .catalog()
            .estimate_prompt(m, prompt, 200)
            .unwrap()
            .cost_usd
    };
    let mut order = vec![
        "gpt-4o-mini",
        "gpt-4",
        "claude-3-haiku",
        "gpt-4o",
        "gpt-3.5-turbo",
    ];
    order.sort_by_key(|m| std::cmp::Reverse(cost(m)));
    assert_eq!(
        order,
        [
            "gpt-4",
            "gpt-4o",
            "gpt-3.5-turbo",
            "claude-3-haiku",
            "gpt-4o-mini"
        ]
    );
    // The estimate is what a reservation holds; a budget just below it refuses.
    let exec = execution(&t, "est").await;
    let scope = Scope::Execution(exec);
    tracker
        .set_budget(
            &scope,
            Period::Total,
            Utc::now(),
            e.cost_usd - dec!(0.000000001),
        )
        .await
        .unwrap();
    assert!(matches!(
        tracker
            .reserve(&request("x", vec![scope], e.cost_usd, Some(exec)))
            .await,
        Err(Error::BudgetExceeded { .. })
    ));
}

// ------------------------------------------------------------------ budgets under concurrency

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_never_overspend_and_never_refuse_with_room(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let tracker = Arc::new(tracker(&t));
    let exec = execution(&t, "race").await;
    let scope = Scope::Tenant(format!("race-{}", Uuid::now_v7()));
    let limit = dec!(1.00);
    let budget = tracker
        .set_budget(&scope, Period::Total, Utc::now(), limit)
        .await
        .unwrap();
    let tasks = (0..64u64).map(|i| {
        let tracker = tracker.clone();
        let scope = scope.clone();
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(i);
            let (mut charged, mut refusals) = (Decimal::ZERO, Vec::new());
            for k in 0..6 {
                // Estimate 5 000..40 000 µUSD; the actual cost is at most the estimate.
                let est: u64 = rng.random_range(5_000..40_000);
                let actual: u64 = rng.random_range(0..=est);
                let req = request(
                    &format!("t{i}-{k}"),
                    vec![scope.clone()],
                    Decimal::new(est as i64, 6),
                    Some(exec),
                );
                match tracker.reserve(&req).await {
                    Ok(r) => {
                        tokio::task::yield_now().await;
                        let s = tracker.settle(&r, None, &usd_micro(actual)).await.unwrap();
                        charged += s.charged_usd;
                    }
                    Err(Error::BudgetExceeded {
                        limit,
                        spent,
                        reserved,
                        requested,
                        ..
                    }) => refusals.push((limit, spent, reserved, requested)),
                    Err(e) => panic!("task {i}: unexpected error {e}"),
                }
            }
            (charged, refusals)
        })
    });
    let results: Vec<_> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let settled: Decimal = results.iter().map(|r| r.0).sum();
    let refusals: Vec<_> = results.iter().flat_map(|r| r.1.clone()).collect();
    // The demand (~64 × 6 × $0.0225) is far above $1: some calls must have been refused.
    assert!(!refusals.is_empty());
    // No phantom refusal: every refusal was decided on amounts that left no room.
    for (limit, spent, reserved, requested) in &refusals {
        assert!(
            spent + reserved + requested > *limit,
            "refused with room: spent {spent} + reserved {reserved} + {requested} <= {limit}"
        );
    }
    let b = t.budgets().get(budget.id).await.unwrap();
    assert!(b.spent_usd <= limit, "overspent: {}", b.spent_usd);
    assert_eq!(b.reserved_usd, dec!(0), "a reservation leaked");
    assert_eq!(t.budgets().count_pending().await.unwrap(), 0);
    assert_eq!(b.spent_usd, settled, "settled sum and stored total differ");
    assert_eq!(t.budgets().settled_total(budget.id).await.unwrap(), settled);
    assert_eq!(t.executions().get(exec).await.unwrap().cost_usd, settled);
    // The spend got close to the limit (the budget was actually used).
    assert!(b.spent_usd > dec!(0.5), "spent only {}", b.spent_usd);
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_that_fit_are_never_refused(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let tracker = Arc::new(tracker(&t));
    let scope = Scope::Agent(format!("fits-{}", Uuid::now_v7()));
    let budget = tracker
        .set_budget(&scope, Period::Total, Utc::now(), dec!(1.00))
        .await
        .unwrap();
    // 64 × $0.015 = $0.96: every reservation fits, whatever the interleaving.
    let tasks = (0..64).map(|i| {
        let tracker = tracker.clone();
        let scope = scope.clone();
        tokio::spawn(async move {
            let r = tracker
                .reserve(&request(
                    &format!("fit-{i}"),
                    vec![scope],
                    dec!(0.015),
                    None,
                ))
                .await
                .unwrap_or_else(|e| panic!("phantom refusal of task {i}: {e}"));
            tracker.settle(&r, None, &usd_micro(15_000)).await.unwrap();
        })
    });
    for r in join_all(tasks).await {
        r.unwrap();
    }
    let b = t.budgets().get(budget.id).await.unwrap();
    assert_eq!(b.spent_usd, dec!(0.96));
    assert_eq!(b.reserved_usd, dec!(0));
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn threshold_alerts_fire_once_each_under_concurrency(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let tracker = Arc::new(tracker(&t));
    let scope = Scope::Tenant(format!("alerts-{}", Uuid::now_v7()));
    let budget = tracker
        .set_budget(&scope, Period::Total, Utc::now(), dec!(1.00))
        .await
        .unwrap();
    // 64 × $0.02 = $1.28 of demand: spend reaches exactly $1.00 (50 calls) and crosses every
    // threshold while many settles race.
    let tasks = (0..64).map(|i| {
        let tracker = tracker.clone();
        let scope = scope.clone();
        tokio::spawn(async move {
            match tracker
                .reserve(&request(&format!("al-{i}"), vec![scope], dec!(0.02), None))
                .await
            {
                Ok(r) => tracker
                    .settle(&r, None, &usd_micro(20_000))
                    .await
                    .unwrap()
                    .alerts
                    .len(),
                Err(Error::BudgetExceeded { .. }) => 0,
                Err(e) => panic!("{e}"),
            }
        })
    });
    let reported: usize = join_all(tasks).await.into_iter().map(|r| r.unwrap()).sum();
    let b = t.budgets().get(budget.id).await.unwrap();
    assert_eq!(b.spent_usd, dec!(1.00));
    let alerts = t.budgets().alerts(budget.id).await.unwrap();
    let pcts: Vec<u32> = alerts.iter().map(|a| a.threshold_pct).collect();
    assert_eq!(pcts, vec![50, 75, 90, 100]);
    assert_eq!(reported, 4);
    // Exactly one outbox event per threshold, in the shared envelope.
    let events: Vec<_> = t
        .outbox()
        .unpublished(10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.payload["payload"]["scope"] == scope.key())
        .collect();
    assert_eq!(events.len(), 4);
    let mut types: Vec<String> = events
        .iter()
        .map(|e| {
            assert_eq!(e.topic, "wflo.costs");
            assert_eq!(e.payload["event_type"], "cost.budget_alert");
            assert_eq!(e.payload["event_id"], e.event_id.to_string());
            assert!(alerts.iter().any(|a| a.event_id == e.event_id));
            e.payload["payload"]["alert_type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "threshold_100",
            "threshold_50",
            "threshold_75",
            "threshold_90"
        ]
    );
    // Each alert was crossed with the spend at or above its threshold.
    for a in &alerts {
        assert!(a.spent_usd * dec!(100) >= Decimal::from(a.threshold_pct));
    }
}

// ------------------------------------------------------------------ reservation life cycle

#[rstest]
#[tokio::test]
async fn expired_reservation_frees_its_amount(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let tracker = CostTracker::new(
        t.db().clone(),
        catalog(),
        CostConfig::builder()
            .reservation_ttl(std::time::Duration::from_secs(30))
            .build()
            .unwrap(),
    );
    let exec = execution(&t, "expiry").await;
    let scope = Scope::Execution(exec);
    let budget = tracker
        .set_budget(&scope, Period::Total, Utc::now(), dec!(0.10))
        .await
        .unwrap();
    let crashed = tracker
        .reserve(&request(
            "crashed",
            vec![scope.clone()],
            dec!(0.08),
            Some(exec),
        ))
        .await
        .unwrap();
    // While it is held, another call does not fit.
    assert!(matches!(
        tracker
            .reserve(&request(
                "blocked",
                vec![scope.clone()],
                dec!(0.05),
                Some(exec)
            ))
            .await,
        Err(Error::BudgetExceeded { .. })
    ));
    // Not due yet: the sweeper leaves it.
    assert_eq!(tracker.sweep_expired(Utc::now(), 100).await.unwrap(), 0);
    // Past its expiry the sweeper frees it.
    let later = Utc::now() + ChronoDuration::seconds(31);
    assert_eq!(tracker.sweep_expired(later, 100).await.unwrap(), 1);
    let b = t.budgets().get(budget.id).await.unwrap();
    assert_eq!((b.reserved_usd, b.spent_usd), (dec!(0), dec!(0)));
    assert_eq!(
        t.budgets().reservation(crashed.id).await.unwrap().status,
        ReservationStatus::Expired
    );
    let ok = tracker
        .reserve(&request(
            "after",
            vec![scope.clone()],
            dec!(0.05),
            Some(exec),
        ))
        .await
        .unwrap();
    // A late settle of the expired one still charges the real cost, once, freeing nothing.
    let late = tracker
        .settle(&crashed, None, &usd_micro(10_000))
        .await
        .unwrap();
    assert!(late.late);
    assert_eq!(late.budgets[0].spent_usd, dec!(0.01));
    assert_eq!(late.budgets[0].reserved_usd, dec!(0.05));
    tracker.release(&ok).await.unwrap();
    assert_eq!(
        t.budgets().get(budget.id).await.unwrap().reserved_usd,
        dec!(0)
    );
}

#[rstest]
#[tokio::test]
async fn same_request_id_reserved_twice_counts_once(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let tracker = tracker(&t);
    let scope = Scope::Workflow("idem".into());
    let budget = tracker
        .set_budget(&scope, Period::Total, Utc::now(), dec!(1))
        .await
        .unwrap();
    let first = tracker
        .reserve(&request("req-1", vec![scope.clone()], dec!(0.3), None))
        .await
        .unwrap();
    let second = tracker
        .reserve(&request("req-1", vec![scope.clone()], dec!(0.3), None))
        .await
        .unwrap();
    assert!(first.created && !second.created);
    assert_eq!(first.id, second.id);
    assert_eq!(
        t.budgets().get(budget.id).await.unwrap().reserved_usd,
        dec!(0.3)
    );
    // Concurrent duplicates too.
    let tr = Arc::new(tracker);
    let dups = join_all((0..8).map(|_| {
        let tr = tr.clone();
        let scope = scope.clone();
        async move {
            tr.reserve(&request("req-2", vec![scope], dec!(0.1), None))
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(dups.iter().filter(|r| r.created).count(), 1);
    assert!(dups.iter().all(|r| r.id == dups[0].id));
    assert_eq!(
        t.budgets().get(budget.id).await.unwrap().reserved_usd,
        dec!(0.4)
    );
    // Settling twice: a typed error, never a double charge.
    tr.settle(&first, None, &usd_micro(100_000)).await.unwrap();
    let again = tr
        .settle(&second, None, &usd_micro(100_000))
        .await
        .unwrap_err();
    assert!(
        matches!(&again, Error::ReservationClosed { status, .. } if status == "settled"),
        "{again}"
    );
    let b = t.budgets().get(budget.id).await.unwrap();
    assert_eq!((b.spent_usd, b.reserved_usd), (dec!(0.1), dec!(0.1)));
    // Releasing a settled one is refused too; an unknown reservation is typed.
    assert!(matches!(
        tr.release(&first).await,
        Err(Error::ReservationClosed { .. })
    ));
    let mut ghost = first.clone();
    ghost.id = ReservationId::new();
    assert!(matches!(
        tr.settle(&ghost, None, &usd_micro(1)).await,
        Err(Error::UnknownReservation(_))
    ));
    assert_eq!(
        t.budgets().get(budget.id).await.unwrap().spent_usd,
        dec!(0.1)
    );
}

#[rstest]
#[tokio::test]
async fn reservation_across_execution_and_tenant_is_all_or_nothing(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let tracker = tracker(&t);
    let exec = execution(&t, "multi").await;
    let e_scope = Scope::Execution(exec);
    let t_scope = Scope::Tenant("acme".into());
    let eb = tracker
        .set_budget(&e_scope, Period::Total, Utc::now(), dec!(1.00))
        .await
        .unwrap();
    let tb = tracker
        .set_budget(&t_scope, Period::Total, Utc::now(), dec!(0.50))
        .await
        .unwrap();
    let both = vec![e_scope.clone(), t_scope.clone()];
    let r = tracker
        .reserve(&request("m1", both.clone(), dec!(0.40), Some(exec)))
        .await
        .unwrap();
    assert_eq!(r.budgets.len(), 2);
    // The execution has room for 0.20 more, the tenant does not: nothing is held anywhere.
    let err = tracker
        .reserve(&request("m2", both.clone(), dec!(0.20), Some(exec)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::BudgetExceeded { scope, .. } if scope == "tenant:acme"),
        "{err}"
    );
    assert_eq!(
        t.budgets().get(eb.id).await.unwrap().reserved_usd,
        dec!(0.40)
    );
    assert_eq!(
        t.budgets().get(tb.id).await.unwrap().reserved_usd,
        dec!(0.40)
    );
    assert!(
        t.budgets()
            .reservation_by_request("m2")
            .await
            .unwrap()
            .is_none()
    );
    // Settle charges both.
    let s = tracker.settle(&r, None, &usd_micro(250_000)).await.unwrap();
    assert_eq!(s.budgets.len(), 2);
    for b in [eb.id, tb.id] {
        let b = t.budgets().get(b).await.unwrap();
        assert_eq!((b.spent_usd, b.reserved_usd), (dec!(0.25), dec!(0)));
    }
    // The tenant crossed 50 % (0.25 of 0.50); the execution did not.
    assert_eq!(s.alerts.len(), 1);
    assert_eq!(s.alerts[0].budget.scope, "tenant:acme");
}

#[rstest]
#[tokio::test]
async fn periodic_budgets_are_created_on_demand_per_period(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let tenant = Scope::Tenant("globex".into());
    let tracker = CostTracker::new(
        t.db().clone(),
        catalog(),
        CostConfig::builder()
            .policy(BudgetPolicy {
                scope: tenant.clone(),
                period: Period::Monthly,
                limit_usd: dec!(0.05),
            })
            .build()
            .unwrap(),
    );
    let r = tracker
        .reserve(&request("p1", vec![tenant.clone()], dec!(0.04), None))
        .await
        .unwrap();
    assert_eq!(r.budgets.len(), 1);
    assert_eq!(r.budgets[0].period, Period::Monthly.key(Utc::now()));
    assert!(matches!(
        tracker
            .reserve(&request("p2", vec![tenant.clone()], dec!(0.02), None))
            .await,
        Err(Error::BudgetExceeded { .. })
    ));
    let b = tracker
        .budget(&tenant, Period::Monthly, Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((b.limit_usd, b.reserved_usd), (dec!(0.05), dec!(0.04)));
    // Next month is a fresh budget.
    let next = tracker
        .budget(
            &tenant,
            Period::Monthly,
            Utc::now() + ChronoDuration::days(32),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((next.spent_usd, next.reserved_usd), (dec!(0), dec!(0)));
    assert_ne!(next.period, b.period);
}

#[rstest]
#[tokio::test]
async fn zero_or_negative_limits_are_refused(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let tracker = tracker(&t);
    for limit in [dec!(0), dec!(-1)] {
        assert!(matches!(
            tracker
                .set_budget(&Scope::Tenant("z".into()), Period::Total, Utc::now(), limit)
                .await,
            Err(Error::InvalidLimit { .. })
        ));
    }
    // The repository refuses it too (and the CHECK constraint behind it).
    assert!(matches!(
        t.budgets()
            .create(wflo_db::NewBudget {
                key: wflo_db::BudgetKey::new("tenant:z", ""),
                limit_usd: dec!(0),
            })
            .await,
        Err(wflo_db::Error::Invalid { .. })
    ));
    assert!(
        t.budgets()
            .list_for_scope("tenant:z")
            .await
            .unwrap()
            .is_empty()
    );
}
