//! Token counting throughput (MB/s): ours (tiktoken-rs singletons through `Tokenizer`) against
//! the `bpe-openai` crate counting the same text in the same run.
//!
//! Samples (~1 MB each): deterministic English prose generated from a fixed word list and
//! seed, and this repository's own `.rs` sources concatenated (repeated up to 1 MB).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;
use wflo_cost::Tokenizer;

const TARGET: usize = 1 << 20;

fn prose() -> String {
    const WORDS: &[&str] = &[
        "the",
        "budget",
        "agent",
        "workflow",
        "reserves",
        "a",
        "worst-case",
        "cost",
        "before",
        "every",
        "call",
        "and",
        "settles",
        "it",
        "with",
        "what",
        "provider",
        "reported",
        "while",
        "sixty-four",
        "tasks",
        "race",
        "for",
        "same",
        "dollar",
        "nobody",
        "overspends",
        "human",
        "approves",
        "risky",
        "steps",
        "sandbox",
        "holds",
        "tokens",
        "are",
        "counted",
        "exactly",
        "in",
        "of",
        "to",
        "is",
        "that",
        "on",
        "runtime",
        "durable",
        "snapshot",
        "rollback",
        "compensation",
        "ledger",
        "threshold",
        "alert",
        "fires",
        "once",
        "per",
        "period",
    ];
    let mut s = String::with_capacity(TARGET + 100);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut words_in_sentence = 0;
    while s.len() < TARGET {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let w = WORDS[(x % WORDS.len() as u64) as usize];
        if words_in_sentence == 0 {
            let mut c = w.chars();
            if let Some(f) = c.next() {
                s.extend(f.to_uppercase());
                s.push_str(c.as_str());
            }
        } else {
            s.push_str(w);
        }
        words_in_sentence += 1;
        if words_in_sentence > 8 + (x % 12) as usize {
            s.push_str(if x.is_multiple_of(5) { ".\n\n" } else { ". " });
            words_in_sentence = 0;
        } else {
            s.push(if x.is_multiple_of(9) { ',' } else { ' ' });
            if x.is_multiple_of(9) {
                s.push(' ');
            }
        }
    }
    s
}

fn collect_rs(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() && name != "target" && !name.starts_with('.') {
            collect_rs(&p, out);
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

fn source_code() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    collect_rs(&root.join("crates"), &mut files);
    collect_rs(&root.join("xtask"), &mut files);
    files.sort();
    let mut s = String::new();
    for f in &files {
        s.push_str(&std::fs::read_to_string(f).unwrap_or_default());
    }
    assert!(
        !s.is_empty(),
        "no .rs sources found under {}",
        root.display()
    );
    let once = s.clone();
    while s.len() < TARGET {
        s.push_str(&once);
    }
    s.truncate(s.floor_char_boundary(TARGET));
    s
}

fn bench(c: &mut Criterion) {
    let samples = [("prose", prose()), ("source", source_code())];
    for (name, text) in &samples {
        for (enc, ours, theirs) in [
            ("o200k", Tokenizer::O200kBase, bpe_openai::o200k_base()),
            ("cl100k", Tokenizer::Cl100kBase, bpe_openai::cl100k_base()),
        ] {
            // Both count the same text; they agree on the token count.
            let a = ours.count(text).tokens;
            let b = theirs.count(text.as_str()) as u64;
            eprintln!(
                "{name}/{enc}: {} bytes, ours {a} tokens, bpe-openai {b} tokens",
                text.len()
            );
            let mut g = c.benchmark_group(format!("token_count_{enc}_{name}_mb_per_s"));
            g.throughput(Throughput::Bytes(text.len() as u64));
            g.sample_size(10);
            g.warm_up_time(Duration::from_secs(1));
            g.measurement_time(Duration::from_secs(4));
            g.bench_with_input(BenchmarkId::from_parameter("ours"), text, |bn, t| {
                bn.iter(|| black_box(ours.count(black_box(t))))
            });
            g.bench_with_input(BenchmarkId::from_parameter("baseline"), text, |bn, t| {
                bn.iter(|| black_box(theirs.count(black_box(t.as_str()))))
            });
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
