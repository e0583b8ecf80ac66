//! Model quality against scikit-learn: fits every algorithm on the same
//! generated train/test splits, scores it on the held-out rows, and — when
//! Python with scikit-learn is available — runs `scripts/sklearn_quality.py`
//! on the very same CSV files and prints both side by side.
//!
//! ```text
//! cargo run --release --example model_quality            # omegastore only, or both
//! OMEGA_PYTHON=/path/to/python cargo run --release --example model_quality
//! ```
//! The Python side looks for `$OMEGA_PYTHON`, then the venv that
//! `scripts/bench-venv.sh` creates, then `python3`.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use arrow::array::AsArray;
use arrow::datatypes::Float64Type;
use arrow::record_batch::RecordBatch;
use omegastore::models::{Input, TrainingData};
use omegastore::{ModelSpec, Omega, PutMode, PutOptions, sample};
use serde_json::{Value, json};

struct Case {
    dataset: &'static str,
    algorithm: &'static str,
    params: Value,
    features: &'static [&'static str],
    label: Option<&'static str>,
    metric: &'static str,
}

const REG: &[&str] = &["x1", "x2", "x3", "x4", "x5"];
const LIN: &[&str] = &["x1", "x2", "x3"];
const CLF: &[&str] = &["f1", "f2", "f3", "f4", "segment", "member"];
const NUM: &[&str] = &["f1", "f2", "f3", "f4"];

fn cases() -> Vec<Case> {
    let c = |dataset, algorithm, params, features, label, metric| Case {
        dataset,
        algorithm,
        params,
        features,
        label,
        metric,
    };
    vec![
        c(
            "linear",
            "linear_regression",
            json!({}),
            LIN,
            Some("y"),
            "r2",
        ),
        c(
            "linear",
            "ridge_regression",
            json!({"alpha": 1.0}),
            LIN,
            Some("y"),
            "r2",
        ),
        c(
            "linear",
            "lasso",
            json!({"alpha": 0.1}),
            LIN,
            Some("y"),
            "r2",
        ),
        c(
            "linear",
            "elastic_net",
            json!({"alpha": 0.1, "l1_ratio": 0.5}),
            LIN,
            Some("y"),
            "r2",
        ),
        c(
            "friedman",
            "linear_regression",
            json!({}),
            REG,
            Some("y"),
            "r2",
        ),
        c(
            "friedman",
            "decision_tree_regressor",
            json!({"max_depth": 8, "seed": 1}),
            REG,
            Some("y"),
            "r2",
        ),
        c(
            "friedman",
            "random_forest_regressor",
            json!({"n_trees": 100, "seed": 1}),
            REG,
            Some("y"),
            "r2",
        ),
        c(
            "friedman",
            "knn_regressor",
            json!({"k": 5}),
            REG,
            Some("y"),
            "r2",
        ),
        c(
            "blobs",
            "logistic_regression",
            json!({}),
            CLF,
            Some("label"),
            "accuracy",
        ),
        c(
            "blobs",
            "decision_tree_classifier",
            json!({"max_depth": 6, "seed": 1}),
            CLF,
            Some("label"),
            "accuracy",
        ),
        c(
            "blobs",
            "random_forest_classifier",
            json!({"n_trees": 100, "seed": 1}),
            CLF,
            Some("label"),
            "accuracy",
        ),
        c(
            "blobs",
            "knn_classifier",
            json!({"k": 5}),
            NUM,
            Some("label"),
            "accuracy",
        ),
        c(
            "blobs",
            "gaussian_nb",
            json!({}),
            NUM,
            Some("label"),
            "accuracy",
        ),
        c(
            "blobs",
            "svc",
            json!({"kernel": "linear", "c": 1.0, "seed": 1}),
            NUM,
            Some("label"),
            "accuracy",
        ),
        c(
            "blobs",
            "kmeans",
            json!({"k": 3, "seed": 1}),
            NUM,
            None,
            "inertia",
        ),
        c(
            "blobs",
            "pca",
            json!({"n_components": 2}),
            NUM,
            None,
            "explained_variance",
        ),
    ]
}

fn write_csv(path: &Path, batch: &RecordBatch) -> Result<(), Box<dyn Error>> {
    let file = std::fs::File::create(path)?;
    let mut w = arrow::csv::Writer::new(file);
    w.write(batch)?;
    Ok(())
}

/// Share of the test rows' total variance that the components keep.
fn explained_variance(test: &RecordBatch, components: &[RecordBatch], features: &[&str]) -> f64 {
    let var = |v: &[f64]| {
        let n = v.len().max(1) as f64;
        let m = v.iter().sum::<f64>() / n;
        v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n
    };
    let column = |b: &[RecordBatch], name: &str| -> Vec<f64> {
        b.iter()
            .flat_map(|b| {
                b.column_by_name(name)
                    .map(|c| c.as_primitive::<Float64Type>().values().to_vec())
                    .unwrap_or_default()
            })
            .collect()
    };
    let total: f64 = features
        .iter()
        .map(|f| var(&column(std::slice::from_ref(test), f)))
        .sum();
    let kept: f64 = ["pc1", "pc2"]
        .iter()
        .map(|c| var(&column(components, c)))
        .sum();
    kept / total
}

fn python() -> Option<PathBuf> {
    let mut candidates = vec![];
    if let Ok(p) = std::env::var("OMEGA_PYTHON") {
        candidates.push(PathBuf::from(p));
    }
    if let Ok(home) = std::env::var("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/omegastore-bench-venv/bin/python"));
    }
    candidates.push(PathBuf::from("python3"));
    candidates.into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import sklearn, pandas"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let om = Omega::open("memory://").await?;
    let data = [
        ("linear", sample::linear(4_000, 1.0, 1)),
        ("friedman", sample::friedman(4_000, 1.0, 2)),
        ("blobs", sample::blobs(3_000, 2.0, 3)),
    ];
    let mut tests = std::collections::HashMap::new();
    for (name, batch) in &data {
        let cut = batch.num_rows() * 3 / 4;
        let (train, test) = (
            sample::rows(batch, 0, cut),
            sample::rows(batch, cut, batch.num_rows()),
        );
        let opts = || PutOptions {
            mode: PutMode::Overwrite,
            ..Default::default()
        };
        om.datasets()
            .put(train.clone(), &format!("{name}_train"), opts())
            .await?;
        om.datasets()
            .put(test.clone(), &format!("{name}_test"), opts())
            .await?;
        write_csv(&dir.path().join(format!("{name}_train.csv")), &train)?;
        write_csv(&dir.path().join(format!("{name}_test.csv")), &test)?;
        tests.insert(*name, test);
    }
    let models = om.models();
    let mut ours = Vec::new();
    for case in cases() {
        let spec = ModelSpec::new(
            case.algorithm,
            case.params.as_object().cloned().unwrap_or_default(),
        )?;
        let mut training =
            TrainingData::dataset(&format!("{}_train", case.dataset)).features(case.features);
        if let Some(l) = case.label {
            training = training.label(l);
        }
        let name = format!("{}_{}", case.dataset, case.algorithm);
        let start = Instant::now();
        models
            .fit(&name, training, Some(spec), Default::default())
            .await?;
        let fit = start.elapsed().as_secs_f64();
        let test = Input::Dataset(format!("{}_test", case.dataset));
        let value = if case.algorithm == "pca" {
            let t = models.transform(&name, test).await?;
            explained_variance(&tests[case.dataset], &t, case.features)
        } else {
            let m = models.score(&name, test).await?;
            m.iter()
                .find(|(k, _)| k == case.metric)
                .map(|(_, v)| *v)
                .unwrap_or(f64::NAN)
        };
        ours.push((value, fit));
    }

    let spec: Vec<Value> = cases()
        .iter()
        .map(|c| {
            json!({"dataset": c.dataset, "algorithm": c.algorithm, "params": c.params,
                   "features": c.features, "label": c.label, "metric": c.metric})
        })
        .collect();
    std::fs::write(
        dir.path().join("cases.json"),
        serde_json::to_vec_pretty(&spec)?,
    )?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sklearn_quality.py");
    let theirs: Option<Vec<Value>> = match python() {
        Some(py) => {
            let out = Command::new(&py).arg(&script).arg(dir.path()).output()?;
            if !out.status.success() {
                eprintln!(
                    "scikit-learn run failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                None
            } else {
                serde_json::from_slice(&out.stdout).ok()
            }
        }
        None => {
            eprintln!(
                "(Python with scikit-learn not found: run scripts/bench-venv.sh or set OMEGA_PYTHON to compare)"
            );
            None
        }
    };
    let version = theirs
        .as_ref()
        .and_then(|t| t.first())
        .and_then(|r| r["sklearn_version"].as_str())
        .unwrap_or("-")
        .to_string();
    println!(
        "| dataset | algorithm | metric (test) | omegastore | scikit-learn {version} | fit s omegastore | fit s scikit-learn |"
    );
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: |");
    for (i, (case, (value, fit))) in cases().iter().zip(&ours).enumerate() {
        let (sv, sf) = theirs
            .as_ref()
            .and_then(|t| t.get(i))
            .map(|r| {
                (
                    format!("{:.4}", r["value"].as_f64().unwrap_or(f64::NAN)),
                    format!("{:.4}", r["fit_seconds"].as_f64().unwrap_or(f64::NAN)),
                )
            })
            .unwrap_or(("-".into(), "-".into()));
        println!(
            "| {} | {} | {} | {value:.4} | {sv} | {fit:.4} | {sf} |",
            case.dataset, case.algorithm, case.metric
        );
    }
    Ok(())
}
