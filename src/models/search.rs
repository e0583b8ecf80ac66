//! Grid search with k-fold cross-validation.
//!
//! The grid is a JSON object of parameter → list of values; every
//! combination (merged over the spec's own parameters) is validated before
//! anything is fitted. Rows are shuffled once with a fixed seed and cut into
//! `k` folds, so a search is repeatable; each grid point is fitted `k` times
//! and scored on the held-out fold with the task's primary metric (R² for
//! regressors, accuracy for classifiers, −inertia for k-means).

use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use serde_json::{Map, Value};
use std::sync::Arc;

use super::error::{ModelError, Result};
use super::estimator::Estimator;
use super::metrics;
use super::model::SearchRow;
use super::spec::{ModelSpec, Params, resolve};
use super::{Prepared, evaluate};
use crate::store::Metadata;

/// Grid points above this are refused (a typo in a grid should not start
/// a week-long search).
pub const MAX_GRID: usize = 10_000;

/// The outcome of a search.
#[derive(Debug, Clone)]
pub struct SearchReport {
    /// The stored version holding the best model.
    pub meta: Metadata,
    /// The metric every grid point was scored with.
    pub metric: String,
    pub folds: usize,
    pub rows: Vec<SearchRow>,
    /// Index of the best row.
    pub best: usize,
}

impl SearchReport {
    /// The results as a table: rank, params (JSON), mean and std of the
    /// score, seconds per fit; best first.
    pub fn to_batch(&self) -> Result<RecordBatch> {
        to_batch(&self.rows)
    }
}

/// The results table of a search (best first).
pub fn to_batch(rows: &[SearchRow]) -> Result<RecordBatch> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| rows[b].mean_score.total_cmp(&rows[a].mean_score));
    let schema = Arc::new(Schema::new(vec![
        Field::new("rank", DataType::UInt32, false),
        Field::new("params", DataType::Utf8, false),
        Field::new("mean_score", DataType::Float64, false),
        Field::new("std_score", DataType::Float64, false),
        Field::new("fit_seconds", DataType::Float64, false),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(1..=order.len() as u32)),
        Arc::new(StringArray::from_iter_values(
            order
                .iter()
                .map(|&i| Value::Object(rows[i].params.clone()).to_string()),
        )),
        Arc::new(Float64Array::from_iter_values(
            order.iter().map(|&i| rows[i].mean_score),
        )),
        Arc::new(Float64Array::from_iter_values(
            order.iter().map(|&i| rows[i].std_score),
        )),
        Arc::new(Float64Array::from_iter_values(
            order.iter().map(|&i| rows[i].fit_seconds),
        )),
    ];
    Ok(RecordBatch::try_new(schema, cols)?)
}

/// Every combination of the grid over the spec's parameters, validated.
/// Each entry is (the user-facing params, the resolved params).
pub fn expand_grid(
    spec: &ModelSpec,
    grid: &Map<String, Value>,
) -> Result<Vec<(Map<String, Value>, Params)>> {
    let algo = spec.algorithm()?;
    let mut combos: Vec<Map<String, Value>> = vec![spec.params.clone()];
    for (key, values) in grid {
        let values = match values {
            Value::Array(v) if !v.is_empty() => v.clone(),
            Value::Array(_) => {
                return Err(ModelError::Usage(format!(
                    "grid entry '{key}' has no values"
                )));
            }
            single => vec![single.clone()],
        };
        let mut next = Vec::with_capacity(combos.len() * values.len());
        for c in &combos {
            for v in &values {
                let mut m = c.clone();
                m.insert(key.clone(), v.clone());
                next.push(m);
            }
        }
        combos = next;
        if combos.len() > MAX_GRID {
            return Err(ModelError::Usage(format!(
                "the grid has more than {MAX_GRID} combinations; narrow it"
            )));
        }
    }
    combos
        .into_iter()
        .map(|c| {
            let r = resolve(algo, &c)?;
            Ok((c, r))
        })
        .collect()
}

/// Fold assignment: a seeded shuffle of row indices, cut into `k` parts.
pub fn folds(n: usize, k: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..n).collect();
    // xorshift64*: small, fixed, repeatable across platforms
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..n).rev() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
        idx.swap(i, (r % (i as u64 + 1)) as usize);
    }
    (0..k)
        .map(|f| idx[f * n / k..(f + 1) * n / k].to_vec())
        .collect()
}

/// Runs the search; returns the metric name, one row per grid point, and
/// the index of the best.
pub(crate) fn run(
    combos: &[(Map<String, Value>, Params)],
    data: &Prepared,
    k: usize,
    progress: Option<&indicatif::ProgressBar>,
) -> std::result::Result<(String, Vec<SearchRow>, usize), String> {
    let n = data.x.rows;
    let parts = folds(n, k, 0);
    let mut rows = Vec::with_capacity(combos.len());
    let mut metric = String::new();
    for (user, params) in combos {
        let mut scores = Vec::with_capacity(k);
        let start = Instant::now();
        for test in &parts {
            let mut in_test = vec![false; n];
            test.iter().for_each(|&i| in_test[i] = true);
            let train: Vec<usize> = (0..n).filter(|&i| !in_test[i]).collect();
            let xt = data.x.take_rows(&train);
            let yt = data.y.as_ref().map(|y| y.take(&train));
            let est = Estimator::fit(params, &xt, yt.as_ref(), data.n_classes)?;
            let xv = data.x.take_rows(test);
            let yv = data.y.as_ref().map(|y| y.take(test));
            let m = evaluate(&est, &xv, yv.as_ref(), data.n_classes, params.algorithm)?;
            if metric.is_empty() {
                metric = m.first().map(|(n, _)| n.clone()).unwrap_or_default();
            }
            scores.push(metrics::primary(&m));
            if let Some(p) = progress {
                p.inc(1);
            }
        }
        let mean = scores.iter().sum::<f64>() / k as f64;
        let var = scores.iter().map(|s| (s - mean) * (s - mean)).sum::<f64>() / k as f64;
        rows.push(SearchRow {
            params: user.clone(),
            mean_score: mean,
            std_score: var.sqrt(),
            fold_scores: scores,
            fit_seconds: start.elapsed().as_secs_f64() / k as f64,
        });
    }
    let best = (0..rows.len())
        .max_by(|&a, &b| {
            rows[a]
                .mean_score
                .total_cmp(&rows[b].mean_score)
                .then(b.cmp(&a))
        })
        .ok_or("the grid is empty")?;
    if metric == "inertia" {
        metric = "neg_inertia".into();
    }
    Ok((metric, rows, best))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn folds_partition_rows_repeatably() {
        let f = folds(10, 3, 0);
        let mut all: Vec<usize> = f.concat();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(f, folds(10, 3, 0));
        assert_eq!(f.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 4]);
    }

    #[test]
    fn grid_expands_and_validates() {
        let spec = ModelSpec::new("ridge_regression", Map::new()).unwrap();
        let grid = json!({"alpha": [0.1, 1.0, 10.0], "normalize": [true, false]});
        let combos = expand_grid(&spec, grid.as_object().unwrap()).unwrap();
        assert_eq!(combos.len(), 6);
        let bad = json!({"alpah": [1.0]});
        assert!(expand_grid(&spec, bad.as_object().unwrap()).is_err());
    }
}
