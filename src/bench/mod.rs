//! `om bench`: benchmarks users run on their own machine.
//!
//! | file | what |
//! | --- | --- |
//! | `tpch.rs` | TPC-H: generated tables put into the store, the 22 queries of `sql/tpch/` |
//! | `ops.rs` | the store's own work on a generated table: puts, gets, queries, models |
//! | `catalog.rs` | opening a store with many objects and listing it |
//! | `serve.rs` | `om serve` under load on loopback: Flight SQL and HTTP clients |
//!
//! Every measurement is a [`Timing`]: the runs after a warm-up, with the
//! row count and an answer (a count or a rounded sum) that peers must match.
//! Build with `--release` for numbers that mean anything.

pub mod catalog;
pub mod ops;
pub mod serve;
pub mod tpch;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::store::request_count::RequestCounts;

/// One measured operation.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    pub name: String,
    /// Rows the operation returned or processed.
    pub rows: u64,
    /// Seconds of each timed run.
    pub runs: Vec<f64>,
    pub min: f64,
    pub median: f64,
    pub max: f64,
    /// What the operation computed (for cross-engine checks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Store requests of one more run, counted by kind (see
    /// [`crate::store::request_count`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<RequestCounts>,
}

impl Timing {
    pub fn new(name: &str, rows: u64, runs: Vec<Duration>, answer: Option<String>) -> Self {
        let mut s: Vec<f64> = runs.iter().map(Duration::as_secs_f64).collect();
        let runs = s.clone();
        s.sort_by(f64::total_cmp);
        let median = if s.is_empty() {
            f64::NAN
        } else if s.len() % 2 == 1 {
            s[s.len() / 2]
        } else {
            (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
        };
        Timing {
            name: name.to_string(),
            rows,
            min: s.first().copied().unwrap_or(f64::NAN),
            max: s.last().copied().unwrap_or(f64::NAN),
            median,
            runs,
            answer,
            requests: None,
        }
    }
}

/// Runs `f` once to warm up (when `warmup`), then `runs` times; returns the
/// last run's output and the durations.
pub async fn measure<T, F, Fut, E>(
    runs: usize,
    warmup: bool,
    mut f: F,
) -> Result<(T, Vec<Duration>), E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    if warmup {
        f().await?;
    }
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let out = f().await?;
        times.push(start.elapsed());
        last = Some(out);
    }
    Ok((last.expect("at least one run"), times))
}

/// The report as an aligned text table.
pub fn table(title: &str, timings: &[Timing]) -> String {
    let mut out = format!(
        "{title}\n{:<22} {:>12} {:>10} {:>10} {:>10}  answer\n",
        "operation", "rows", "min ms", "median ms", "max ms"
    );
    for t in timings {
        out.push_str(&format!(
            "{:<22} {:>12} {:>10.1} {:>10.1} {:>10.1}  {}\n",
            t.name,
            t.rows,
            t.min * 1e3,
            t.median * 1e3,
            t.max * 1e3,
            t.answer.as_deref().unwrap_or("")
        ));
    }
    for t in timings {
        if let Some(requests) = &t.requests {
            let total: u64 = requests.values().sum();
            let kinds: Vec<String> = requests.iter().map(|(k, n)| format!("{k} {n}")).collect();
            out.push_str(&format!(
                "{}: {total} store requests in one more run ({})\n",
                t.name,
                kinds.join(", ")
            ));
        }
    }
    out
}
