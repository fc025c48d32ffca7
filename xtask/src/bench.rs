//! `cargo xtask bench [CRATE...]`: runs criterion benches and prints one table of each figure
//! beside the baseline measured in the same run.
//!
//! Conventions a bench follows to appear in the table:
//! * criterion benchmark ids `FIGURE/ours` and `FIGURE/baseline` (a group per figure); the
//!   table compares their medians (and throughput when the group sets one);
//! * or a JSON line appended to `target/wflo-bench/rows.jsonl`:
//!   `{"figure": "...", "ours": 1.0, "baseline": 2.0, "unit": "ms", "better": "lower"}`
//!   for figures criterion cannot express (percentiles, an external tool as baseline).

use crate::itest;
use crate::util;
use anyhow::{Context, Result};
use serde_json::Value;
use std::path::Path;
use std::time::SystemTime;

pub(crate) fn run(names: &[String]) -> Result<()> {
    let started = SystemTime::now();
    let rows_file = util::root().join("target/wflo-bench/rows.jsonl");
    std::fs::create_dir_all(rows_file.parent().expect("has parent"))?;
    let _ = std::fs::remove_file(&rows_file);

    let crates: Vec<String> = names
        .iter()
        .map(|n| {
            if n.starts_with("wflo-") {
                n.clone()
            } else {
                format!("wflo-{n}")
            }
        })
        .collect();
    // Benches that need services get them, as for the integration suites.
    let suites = itest::suite_crates()?;
    let mut needed = Vec::new();
    for s in suites
        .iter()
        .filter(|s| crates.is_empty() || crates.contains(&s.name))
    {
        for svc in &s.services {
            if !needed.contains(svc) {
                needed.push(*svc);
            }
        }
    }
    if !needed.is_empty() {
        crate::services::up(&needed, false)?;
        if needed.contains(&crate::services::Service::Postgres) {
            crate::db::setup()?;
        }
    }
    let mut cmd = util::cargo();
    cmd.envs(itest::test_env(&needed));
    cmd.arg("bench");
    if crates.is_empty() {
        cmd.arg("--workspace");
    }
    for c in &crates {
        cmd.args(["-p", c]);
    }
    let features = itest::features(
        &suites
            .into_iter()
            .filter(|s| crates.is_empty() || crates.contains(&s.name))
            .collect::<Vec<_>>(),
    );
    if !features.is_empty() {
        cmd.args(["--features", &features]);
    }
    util::run(&mut cmd)?;

    println!(
        "\n{:<48} {:>16} {:>16} {:>9}",
        "figure", "ours", "baseline", "ratio"
    );
    let criterion = util::root().join("target/criterion");
    for (figure, ours, base, unit) in criterion_rows(&criterion, started)? {
        println!(
            "{:<48} {:>16} {:>16} {:>8.2}x",
            figure,
            format!("{ours:.3} {unit}"),
            format!("{base:.3} {unit}"),
            ours / base
        );
    }
    if let Ok(text) = std::fs::read_to_string(&rows_file) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let row: Value = serde_json::from_str(line).context("parse a bench row")?;
            let ours = row["ours"].as_f64().unwrap_or(f64::NAN);
            let base = row["baseline"].as_f64().unwrap_or(f64::NAN);
            let unit = row["unit"].as_str().unwrap_or("");
            println!(
                "{:<48} {:>16} {:>16} {:>8.2}x",
                row["figure"].as_str().unwrap_or("?"),
                format!("{ours:.3} {unit}"),
                format!("{base:.3} {unit}"),
                ours / base
            );
        }
    }
    Ok(())
}

/// `(figure, ours, baseline, unit)` for every criterion group with `ours` and `baseline`
/// measured after `since`. Figures are medians per iteration (µs), or elements per second when
/// the group declares a throughput.
fn criterion_rows(dir: &Path, since: SystemTime) -> Result<Vec<(String, f64, f64, String)>> {
    let mut rows = Vec::new();
    let Ok(groups) = std::fs::read_dir(dir) else {
        return Ok(rows);
    };
    for group in groups.filter_map(|e| e.ok()) {
        let ours = group.path().join("ours/new");
        let base = group.path().join("baseline/new");
        let (Some(o), Some(b)) = (median(&ours, since), median(&base, since)) else {
            continue;
        };
        let name = group.file_name().to_string_lossy().into_owned();
        match (throughput(&ours), throughput(&base)) {
            (Some(no), Some(nb)) => rows.push((
                format!("{name} (per s)"),
                no / (o * 1e-9),
                nb / (b * 1e-9),
                "/s".into(),
            )),
            _ => rows.push((format!("{name} (median)"), o / 1e3, b / 1e3, "µs".into())),
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(rows)
}

fn median(dir: &Path, since: SystemTime) -> Option<f64> {
    let file = dir.join("estimates.json");
    let modified = std::fs::metadata(&file).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let v: Value = serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn throughput(dir: &Path) -> Option<f64> {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("benchmark.json")).ok()?).ok()?;
    let t = &v["throughput"];
    t["Elements"].as_f64().or_else(|| t["Bytes"].as_f64())
}
