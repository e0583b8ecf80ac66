//! Models from the library: learned behaviour (coefficients recovered,
//! classifiers beat the majority class, seeds repeat), versions and tags,
//! typed errors for mismatched data, corrupt state and unknown kinds.

mod common;

use arrow::array::{ArrayRef, AsArray, Float64Array, StringArray};
use arrow::datatypes::Float64Type;
use arrow::record_batch::RecordBatch;
use omegastore::models::{Input, ModelError, Models, TrainingData};
use omegastore::sample;
use omegastore::{ModelSpec, Omega, PutMode, PutOptions, StoreError};
use serde_json::{Map, Value, json};

fn params(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

async fn put(om: &Omega, name: &str, batch: RecordBatch) {
    om.datasets()
        .put(
            batch,
            name,
            PutOptions {
                mode: PutMode::Overwrite,
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

/// A string column as owned strings (tables read back as Utf8View).
fn strings(col: &ArrayRef) -> Vec<String> {
    let c = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).unwrap();
    c.as_string::<i32>()
        .iter()
        .map(|v| v.unwrap_or_default().to_string())
        .collect()
}

fn metric(m: &[(String, f64)], name: &str) -> f64 {
    m.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no metric {name} in {m:?}"))
        .1
}

async fn setup() -> (common::TestRoot, Omega, Models) {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let models = om.models();
    (root, om, models)
}

#[tokio::test]
async fn linear_regression_recovers_known_coefficients() {
    let (_root, om, models) = setup().await;
    put(&om, "lin", sample::linear(2_000, 0.1, 7)).await;
    models
        .put(
            "lr",
            ModelSpec::new("linear_regression", Map::new()).unwrap(),
        )
        .await
        .unwrap();
    let report = models
        .fit(
            "lr",
            TrainingData::dataset("lin")
                .features(&["x1", "x2", "x3"])
                .label("y"),
            None,
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(report.meta.version, 2, "the spec is v1, the fit v2");
    assert_eq!(report.rows, 2_000);
    let coef = &report.meta.kind_meta["coefficients"];
    for (name, want) in ["x1", "x2", "x3"].iter().zip(sample::LINEAR_COEFS) {
        let got = coef[name].as_f64().unwrap();
        assert!((got - want).abs() < 0.01, "{name}: {got} vs {want}");
    }
    let intercept = report.meta.kind_meta["intercept"].as_f64().unwrap();
    assert!(
        (intercept - sample::LINEAR_INTERCEPT).abs() < 0.02,
        "{intercept}"
    );
    assert!(metric(&report.metrics, "r2") > 0.999);
    assert_eq!(report.meta.kind_meta["trained_on"]["dataset"], "lin");
    assert_eq!(report.meta.kind_meta["trained_on"]["version"], 1);

    // predictions on new rows are the linear function
    let fresh = sample::linear(10, 0.0, 99);
    let out = models
        .predict("lr", Input::Batches(fresh.schema(), vec![fresh.clone()]))
        .await
        .unwrap();
    let pred = out[0]
        .column_by_name("prediction")
        .unwrap()
        .as_primitive::<Float64Type>();
    let y = fresh
        .column_by_name("y")
        .unwrap()
        .as_primitive::<Float64Type>();
    for i in 0..10 {
        assert!((pred.value(i) - y.value(i)).abs() < 0.05);
    }
    // the input's columns are kept beside the prediction
    assert!(out[0].column_by_name("id").is_some());
}

/// Every classifier beats the majority class by a wide margin on held-out
/// rows of nearly separable data, and gives labels of the label's type.
#[tokio::test]
async fn classifiers_beat_the_majority_class() {
    let (_root, om, models) = setup().await;
    let data = sample::blobs(900, 4.0, 3);
    put(&om, "train", sample::rows(&data, 0, 600)).await;
    put(&om, "test", sample::rows(&data, 600, 900)).await;
    let test_labels = sample::rows(&data, 600, 900);
    let labels = strings(test_labels.column_by_name("label").unwrap());
    let majority = sample::BLOB_CLASSES
        .iter()
        .map(|c| labels.iter().filter(|l| l.as_str() == *c).count())
        .max()
        .unwrap() as f64
        / 300.0;
    for (algo, p) in [
        ("logistic_regression", json!({})),
        (
            "decision_tree_classifier",
            json!({"max_depth": 6, "seed": 1}),
        ),
        (
            "random_forest_classifier",
            json!({"n_trees": 20, "seed": 1}),
        ),
        ("knn_classifier", json!({"k": 5})),
        ("gaussian_nb", json!({})),
        ("svc", json!({"kernel": "linear", "c": 1.0, "seed": 1})),
    ] {
        let name = format!("m_{algo}");
        let spec = ModelSpec::new(algo, params(p)).unwrap();
        models
            .fit(
                &name,
                TrainingData::dataset("train")
                    .features(&["f1", "f2", "f3", "f4", "segment", "member"])
                    .label("label"),
                Some(spec),
                Default::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{algo}: {e}"));
        let scores = models
            .score(&name, Input::Dataset("test".into()))
            .await
            .unwrap();
        let acc = metric(&scores, "accuracy");
        assert!(
            acc > majority + 0.4,
            "{algo}: accuracy {acc} vs majority {majority}"
        );
        assert!(metric(&scores, "f1") > 0.7, "{algo}: {scores:?}");
        let out = models
            .predict(&name, Input::Dataset("test".into()))
            .await
            .unwrap();
        let pred = strings(out[0].column_by_name("prediction").unwrap());
        assert!(sample::BLOB_CLASSES.contains(&pred[0].as_str()));
    }
}

#[tokio::test]
async fn probabilities_sum_to_one_and_agree_with_predictions() {
    let (_root, om, models) = setup().await;
    put(&om, "train", sample::blobs(300, 3.0, 5)).await;
    for algo in [
        "logistic_regression",
        "random_forest_classifier",
        "gaussian_nb",
        "decision_tree_classifier",
        "knn_classifier",
    ] {
        let spec = ModelSpec::new(algo, Map::new()).unwrap();
        let data = TrainingData::dataset("train")
            .features(&["f1", "f2", "f3", "f4"])
            .label("label");
        models
            .fit(algo, data, Some(spec), Default::default())
            .await
            .unwrap();
        let p = models
            .predict_proba(algo, Input::Dataset("train".into()))
            .await
            .unwrap();
        let pred = models
            .predict(algo, Input::Dataset("train".into()))
            .await
            .unwrap();
        let cols: Vec<&Float64Array> = sample::BLOB_CLASSES
            .iter()
            .map(|c| {
                p[0].column_by_name(&format!("proba_{c}"))
                    .unwrap_or_else(|| panic!("{algo}: no proba_{c}"))
                    .as_primitive::<Float64Type>()
            })
            .collect();
        let labels = strings(pred[0].column_by_name("prediction").unwrap());
        for (i, label) in labels.iter().enumerate() {
            let row: Vec<f64> = cols.iter().map(|c| c.value(i)).collect();
            assert!(
                (row.iter().sum::<f64>() - 1.0).abs() < 1e-9,
                "{algo} row {i}: {row:?}"
            );
            let best = (0..3).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            if row[best] > 0.5 {
                assert_eq!(label, sample::BLOB_CLASSES[best], "{algo} row {i}");
            }
        }
    }
    // an algorithm without probabilities says so
    let spec = ModelSpec::new("svc", Map::new()).unwrap();
    let data = TrainingData::dataset("train")
        .features(&["f1", "f2"])
        .label("label");
    models
        .fit("svm", data, Some(spec), Default::default())
        .await
        .unwrap();
    let e = models
        .predict_proba("svm", Input::Dataset("train".into()))
        .await
        .unwrap_err();
    assert!(matches!(e, ModelError::Unsupported { .. }), "{e}");
}

#[tokio::test]
async fn regressors_fit_nonlinear_data_and_the_same_seed_gives_the_same_model() {
    let (_root, om, models) = setup().await;
    let data = sample::friedman(800, 0.5, 11);
    put(&om, "train", sample::rows(&data, 0, 600)).await;
    put(&om, "test", sample::rows(&data, 600, 800)).await;
    let features = ["x1", "x2", "x3", "x4", "x5"];
    let mut r2 = std::collections::BTreeMap::new();
    for (algo, p) in [
        ("linear_regression", json!({})),
        ("ridge_regression", json!({"alpha": 0.1})),
        ("lasso", json!({"alpha": 0.01})),
        ("elastic_net", json!({"alpha": 0.01})),
        (
            "decision_tree_regressor",
            json!({"max_depth": 8, "seed": 1}),
        ),
        ("random_forest_regressor", json!({"n_trees": 30, "seed": 3})),
        ("knn_regressor", json!({"k": 5})),
    ] {
        let spec = ModelSpec::new(algo, params(p)).unwrap();
        let data = TrainingData::dataset("train")
            .features(&features)
            .label("y");
        models
            .fit(algo, data, Some(spec), Default::default())
            .await
            .unwrap();
        let s = models
            .score(algo, Input::Dataset("test".into()))
            .await
            .unwrap();
        r2.insert(algo, metric(&s, "r2"));
    }
    // linear models explain most of Friedman #1; the forest explains more
    for algo in [
        "linear_regression",
        "ridge_regression",
        "lasso",
        "elastic_net",
    ] {
        assert!(r2[algo] > 0.6, "{algo}: {r2:?}");
    }
    assert!(r2["random_forest_regressor"] > 0.8, "{r2:?}");
    assert!(r2["knn_regressor"] > 0.5, "{r2:?}");

    // refit the forest with the same seed: identical predictions
    let spec = ModelSpec::new(
        "random_forest_regressor",
        params(json!({"n_trees": 30, "seed": 3})),
    )
    .unwrap();
    let data = TrainingData::dataset("train")
        .features(&features)
        .label("y");
    models
        .fit("rf2", data, Some(spec), Default::default())
        .await
        .unwrap();
    let a = models
        .predict("random_forest_regressor", Input::Dataset("test".into()))
        .await
        .unwrap();
    let b = models
        .predict("rf2", Input::Dataset("test".into()))
        .await
        .unwrap();
    assert_eq!(
        a[0].column_by_name("prediction"),
        b[0].column_by_name("prediction")
    );
}

#[tokio::test]
async fn kmeans_and_pca_transform() {
    let (_root, om, models) = setup().await;
    put(&om, "blobs", sample::blobs(300, 6.0, 2)).await;
    let feats = ["f1", "f2", "f3", "f4"];
    let spec = ModelSpec::new("kmeans", params(json!({"k": 3, "seed": 1}))).unwrap();
    let r = models
        .fit(
            "km",
            TrainingData::dataset("blobs").features(&feats),
            Some(spec),
            Default::default(),
        )
        .await
        .unwrap();
    assert!(metric(&r.metrics, "inertia") > 0.0);
    let t = models
        .transform("km", Input::Dataset("blobs".into()))
        .await
        .unwrap();
    assert!(t[0].column_by_name("distance_2").is_some());
    // clusters recover the classes: each cluster is dominated by one label
    let p = models
        .predict("km", Input::Dataset("blobs".into()))
        .await
        .unwrap();
    let cl = p[0]
        .column_by_name("prediction")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int32Type>();
    let lab = strings(p[0].column_by_name("label").unwrap());
    let mut agree = 0;
    for c in 0..3 {
        let mut counts = std::collections::HashMap::new();
        for (i, l) in lab.iter().enumerate() {
            if cl.value(i) == c {
                *counts.entry(l.as_str()).or_insert(0) += 1;
            }
        }
        agree += counts.values().max().copied().unwrap_or(0);
    }
    assert!(agree as f64 / 300.0 > 0.9, "purity {agree}/300");

    let spec = ModelSpec::new("pca", params(json!({"n_components": 2}))).unwrap();
    models
        .fit(
            "pca",
            TrainingData::dataset("blobs").features(&feats),
            Some(spec),
            Default::default(),
        )
        .await
        .unwrap();
    let t = models
        .transform("pca", Input::Dataset("blobs".into()))
        .await
        .unwrap();
    assert!(t[0].column_by_name("pc1").is_some() && t[0].column_by_name("pc2").is_some());
    assert!(t[0].column_by_name("pc3").is_none());
    let e = models
        .score("pca", Input::Dataset("blobs".into()))
        .await
        .unwrap_err();
    assert!(matches!(e, ModelError::Unsupported { .. }), "{e}");
}

#[tokio::test]
async fn versions_tags_and_name_refs() {
    let (_root, om, models) = setup().await;
    put(&om, "lin", sample::linear(200, 0.1, 1)).await;
    models
        .put("m", ModelSpec::new("ridge_regression", Map::new()).unwrap())
        .await
        .unwrap();
    // an unfitted model refuses to predict
    let e = models
        .predict("m", Input::Dataset("lin".into()))
        .await
        .unwrap_err();
    assert!(matches!(e, ModelError::NotFitted { version: 1, .. }), "{e}");
    let data = || {
        TrainingData::dataset("lin")
            .features(&["x1", "x2"])
            .label("y")
    };
    let v2 = models
        .fit("m", data(), None, Default::default())
        .await
        .unwrap();
    models.store().tag("m", "prod", Some(2)).await.unwrap();
    let v3 = models
        .fit(
            "m",
            TrainingData::dataset("lin").features(&["x1"]).label("y"),
            None,
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!((v2.meta.version, v3.meta.version), (2, 3));
    // @prod still takes two features; latest takes one
    let prod = models.load("m@prod").await.unwrap();
    assert_eq!(prod.meta.version, 2);
    assert_eq!(prod.fitted().unwrap().features.names(), ["x1", "x2"]);
    assert_eq!(
        models
            .load("m")
            .await
            .unwrap()
            .fitted()
            .unwrap()
            .features
            .names(),
        ["x1"]
    );
    assert_eq!(models.load("m@2").await.unwrap().meta.version, 2);
    let history = models.store().history("m").await.unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[0].kind, "smartcore.ridge_regression");
    // dataset versions are recorded: refit after the data changed
    put(&om, "lin", sample::linear(50, 0.1, 2)).await;
    let v4 = models
        .fit("m", data(), None, Default::default())
        .await
        .unwrap();
    assert_eq!(v4.meta.kind_meta["trained_on"]["version"], 2);
    assert_eq!(v4.rows, 50);
}

#[tokio::test]
async fn mismatched_data_is_a_typed_error_listing_the_mismatch() {
    let (_root, om, models) = setup().await;
    put(&om, "blobs", sample::blobs(100, 3.0, 1)).await;
    let spec = ModelSpec::new("logistic_regression", Map::new()).unwrap();
    models
        .fit(
            "clf",
            TrainingData::dataset("blobs")
                .features(&["f1", "segment"])
                .label("label"),
            Some(spec),
            Default::default(),
        )
        .await
        .unwrap();
    // f1 missing, segment has the wrong type
    let wrong = RecordBatch::try_from_iter(vec![
        (
            "segment",
            std::sync::Arc::new(Float64Array::from(vec![1.0])) as _,
        ),
        (
            "other",
            std::sync::Arc::new(StringArray::from(vec!["x"])) as _,
        ),
    ])
    .unwrap();
    let e = models
        .predict("clf", Input::Batches(wrong.schema(), vec![wrong]))
        .await
        .unwrap_err();
    let ModelError::SchemaMismatch { mismatches, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(mismatches.len(), 2, "{mismatches:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("missing column 'f1'") && msg.contains("'segment' is Float64"),
        "{msg}"
    );

    // bad specs are refused before anything is stored
    let e = ModelSpec::new("random_forest_classifier", params(json!({"trees": 3}))).unwrap_err();
    assert!(matches!(e, ModelError::UnknownParameter { .. }));
    // a supervised fit without a label says which option is missing
    let e = models
        .fit(
            "clf",
            TrainingData::dataset("blobs"),
            None,
            Default::default(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("--label"), "{e}");
    // nulls: refused, naming the column, or imputed when the spec says so
    let nulls = RecordBatch::try_from_iter(vec![
        (
            "a",
            std::sync::Arc::new(Float64Array::from(vec![
                Some(1.0),
                None,
                Some(3.0),
                Some(4.0),
            ])) as _,
        ),
        (
            "y",
            std::sync::Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0])) as _,
        ),
    ])
    .unwrap();
    put(&om, "nulls", nulls).await;
    let spec = ModelSpec::new("linear_regression", Map::new()).unwrap();
    let e = models
        .fit(
            "n",
            TrainingData::dataset("nulls").label("y"),
            Some(spec.clone()),
            Default::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ModelError::NullValues { column, count: 1 } if column == "a"),
        "{e}"
    );
    let spec = spec.with_preprocessing(omegastore::models::Preprocessing {
        nulls: omegastore::models::NullStrategy::Mean,
        ..Default::default()
    });
    models
        .fit(
            "n",
            TrainingData::dataset("nulls").label("y"),
            Some(spec),
            Default::default(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn corrupt_state_and_unknown_kinds_are_typed_errors() {
    let (root, om, models) = setup().await;
    put(&om, "lin", sample::linear(50, 0.1, 1)).await;
    let spec = ModelSpec::new("linear_regression", Map::new()).unwrap();
    let r = models
        .fit(
            "m",
            TrainingData::dataset("lin").label("y"),
            Some(spec),
            Default::default(),
        )
        .await
        .unwrap();
    let rel = r.meta.kind_meta["path"].as_str().unwrap();
    let base = std::path::Path::new(&root.url);
    std::fs::write(base.join(rel), b"not a model").unwrap();
    let e = models.load("m").await.unwrap_err();
    assert!(
        matches!(&e, ModelError::Store(StoreError::CorruptData { name, .. }) if name == "m"),
        "{e}"
    );
    // a version of a kind no backend knows (written by a newer omegastore)
    let meta_dir = base.join("default/models/meta/m");
    let v1 = std::fs::read_to_string(meta_dir.join("00000000000000000001.json")).unwrap();
    let v2 = v1
        .replace("smartcore.linear_regression", "smartcore.gradient_boosting")
        .replace("\"version\":1", "\"version\":2");
    std::fs::write(meta_dir.join("00000000000000000002.json"), v2).unwrap();
    let e = models.load("m").await.unwrap_err();
    assert!(
        matches!(&e, ModelError::Store(StoreError::UnknownKind { kind, .. }) if kind == "smartcore.gradient_boosting"),
        "{e}"
    );
    // the earlier version still loads (and is still corrupt, as written above)
    assert!(matches!(
        models.load("m@1").await.unwrap_err(),
        ModelError::Store(StoreError::CorruptData { .. })
    ));
    // a dataset is not a model
    let e = om.models().store().metadata("lin").await;
    assert!(e.is_err());
    let ds_as_model = omegastore::models::Models::load(&models, "lin")
        .await
        .unwrap_err();
    assert!(matches!(
        ds_as_model,
        ModelError::Store(StoreError::NotFound { .. })
    ));
}

#[tokio::test]
async fn grid_search_keeps_the_best_and_its_results() {
    let (_root, om, models) = setup().await;
    put(&om, "fr", sample::friedman(400, 0.5, 4)).await;
    models
        .put(
            "tree",
            ModelSpec::new("decision_tree_regressor", params(json!({"seed": 1}))).unwrap(),
        )
        .await
        .unwrap();
    let grid = json!({"max_depth": [1, 2, 6], "min_samples_leaf": [1, 5]});
    let report = models
        .search(
            "tree",
            TrainingData::dataset("fr")
                .features(&["x1", "x2", "x3", "x4", "x5"])
                .label("y"),
            grid.as_object().unwrap(),
            4,
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(report.metric, "r2");
    assert_eq!(report.rows.len(), 6);
    assert!(report.rows.iter().all(|r| r.fold_scores.len() == 4));
    // depth 1 underfits Friedman #1: the best is deeper
    let best = &report.rows[report.best];
    assert_ne!(best.params["max_depth"], json!(1), "{:?}", report.rows);
    assert!(report.rows.iter().all(|r| r.mean_score <= best.mean_score));
    // the best is stored as a new version with those parameters and the table
    assert_eq!(report.meta.version, 2);
    assert_eq!(
        report.meta.kind_meta["params"]["max_depth"],
        best.params["max_depth"]
    );
    assert_eq!(
        report.meta.kind_meta["search"]["results"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    let table = report.to_batch().unwrap();
    assert_eq!(table.num_rows(), 6);
    // a bad grid is refused before fitting
    let e = models
        .search(
            "tree",
            TrainingData::dataset("fr").label("y"),
            json!({"depth": [1]}).as_object().unwrap(),
            3,
            Default::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ModelError::UnknownParameter { .. }), "{e}");
}

/// omegastore's fast solvers give smartcore's estimates: least squares by
/// Cholesky equals SVD's, Newton's logistic fit scores like L-BFGS's.
#[tokio::test]
async fn fast_solvers_agree_with_smartcore() {
    let (_root, om, models) = setup().await;
    put(&om, "lin", sample::linear(3_000, 1.0, 9)).await;
    let fit = |name: &'static str,
               algo: &'static str,
               p: Value,
               label: &'static str,
               data: &'static str,
               f: &'static [&'static str]| {
        let models = models.clone();
        async move {
            let spec = ModelSpec::new(algo, params(p)).unwrap();
            models
                .fit(
                    name,
                    TrainingData::dataset(data).features(f).label(label),
                    Some(spec),
                    Default::default(),
                )
                .await
                .unwrap()
        }
    };
    let x = &["x1", "x2", "x3"];
    let svd = fit(
        "svd",
        "linear_regression",
        json!({"solver": "svd"}),
        "y",
        "lin",
        x,
    )
    .await;
    let chol = fit(
        "chol",
        "linear_regression",
        json!({"solver": "cholesky"}),
        "y",
        "lin",
        x,
    )
    .await;
    for f in x {
        let (a, b) = (
            svd.meta.kind_meta["coefficients"][f].as_f64().unwrap(),
            chol.meta.kind_meta["coefficients"][f].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-9, "{f}: {a} vs {b}");
    }
    // binary labels: is y above its median?
    om.sql("CREATE TABLE bin AS SELECT x1, x2, x3, y > 3.0 AS high FROM lin")
        .await
        .unwrap();
    let lbfgs = fit("lbfgs", "logistic_regression", json!({}), "high", "bin", x).await;
    let newton = fit(
        "newton",
        "logistic_regression",
        json!({"solver": "newton"}),
        "high",
        "bin",
        x,
    )
    .await;
    let (a, b) = (
        metric(&lbfgs.metrics, "accuracy"),
        metric(&newton.metrics, "accuracy"),
    );
    assert!(b > 0.9 && (a - b).abs() < 0.01, "lbfgs {a} vs newton {b}");
    assert!(metric(&newton.metrics, "log_loss") <= metric(&lbfgs.metrics, "log_loss") + 1e-3);
}

/// Statements running at once on one `Omega` each see the models they name.
#[tokio::test]
async fn concurrent_queries_use_their_own_models() {
    let (_root, om, models) = setup().await;
    put(&om, "lin", sample::linear(200, 0.1, 3)).await;
    for (name, feature) in [("ma", "x1"), ("mb", "x2")] {
        let spec = ModelSpec::new("linear_regression", Map::new()).unwrap();
        models
            .fit(
                name,
                TrainingData::dataset("lin").features(&[feature]).label("y"),
                Some(spec),
                Default::default(),
            )
            .await
            .unwrap();
    }
    let run = |q: &'static str| {
        let om = om.clone();
        tokio::spawn(async move {
            om.sql(q)
                .await?
                .collect()
                .await
                .map_err(omegastore::SqlError::from)
        })
    };
    let mut handles = Vec::new();
    for _ in 0..10 {
        handles.push(run("SELECT sum(predict('ma', x1)) FROM lin"));
        handles.push(run("SELECT sum(predict('mb', x2)) FROM lin"));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn one_hot_and_class_counts_are_bounded_with_typed_errors() {
    let (_root, om, models) = setup().await;
    let n = 1_001;
    let ids: Vec<String> = (0..n).map(|i| format!("user-{i}")).collect();
    let x: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let y: Vec<f64> = (0..n).map(|i| (i % 2) as f64).collect();
    let batch = RecordBatch::try_from_iter(vec![
        (
            "user",
            std::sync::Arc::new(StringArray::from(ids.clone())) as ArrayRef,
        ),
        ("x", std::sync::Arc::new(Float64Array::from(x)) as ArrayRef),
        ("y", std::sync::Arc::new(Float64Array::from(y)) as ArrayRef),
    ])
    .unwrap();
    put(&om, "wide", batch).await;
    let spec = ModelSpec::new("linear_regression", Map::new()).unwrap();
    let err = models
        .fit(
            "m",
            TrainingData::dataset("wide").label("y"),
            Some(spec),
            Default::default(),
        )
        .await
        .unwrap_err();
    match &err {
        ModelError::UnsupportedColumn { column, hint, .. } => {
            assert_eq!(column, "user");
            assert!(
                hint.contains("1001 distinct values") && hint.contains("ordinal"),
                "{hint}"
            );
        }
        e => panic!("expected UnsupportedColumn, got {e}"),
    }
    // ordinal encoding of the same column fits
    let spec = ModelSpec::new("linear_regression", Map::new())
        .unwrap()
        .with_preprocessing(omegastore::models::Preprocessing {
            categorical: omegastore::models::CategoricalEncoding::Ordinal,
            ..Default::default()
        });
    models
        .fit(
            "m",
            TrainingData::dataset("wide").label("y"),
            Some(spec),
            Default::default(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn stored_state_that_does_not_fit_the_model_is_refused_at_load() {
    use omegastore::models::Model;
    use omegastore::models::estimator::Estimator;
    let (root, om, models) = setup().await;
    put(&om, "lin", sample::linear(200, 0.1, 3)).await;
    let spec = ModelSpec::new("linear_regression", Map::new()).unwrap();
    let r = models
        .fit(
            "m",
            TrainingData::dataset("lin").label("y"),
            Some(spec),
            Default::default(),
        )
        .await
        .unwrap();
    let file = std::path::Path::new(&root.url).join(r.meta.kind_meta["path"].as_str().unwrap());
    // a well-formed file whose coefficients no longer match the features
    let mut model = Model::from_bytes(&std::fs::read(&file).unwrap()).unwrap();
    match &mut model.fitted.as_mut().unwrap().estimator {
        Estimator::Linear { coef, .. } => {
            coef.pop();
        }
        other => panic!("expected a linear estimator, got {other:?}"),
    }
    std::fs::write(&file, model.to_bytes().unwrap()).unwrap();
    let e = models.load("m").await.unwrap_err();
    match &e {
        ModelError::Store(StoreError::CorruptData { name, reason, .. }) => {
            assert_eq!(name, "m");
            assert!(reason.contains("coefficients for"), "{reason}");
        }
        e => panic!("expected CorruptData, got {e}"),
    }
    // and in SQL it is the same typed error, not a dead process
    let e = om
        .sql("SELECT predict('m', x1, x2, x3) FROM lin")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("coefficients for"), "{e}");
}

/// The first array under `key` anywhere in a decoded model.
fn array_under<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Vec<Value>> {
    match v {
        Value::Object(m) => {
            if m.get(key).is_some_and(Value::is_array) {
                return m.get_mut(key).and_then(Value::as_array_mut);
            }
            m.values_mut().find_map(|c| array_under(c, key))
        }
        Value::Array(a) => a.iter_mut().find_map(|c| array_under(c, key)),
        _ => None,
    }
}

#[tokio::test]
async fn a_naive_bayes_model_whose_widths_do_not_fit_is_refused_at_load() {
    let (root, om, models) = setup().await;
    put(&om, "train", sample::blobs(300, 3.0, 5)).await;
    let spec = ModelSpec::new("gaussian_nb", Map::new()).unwrap();
    let data = TrainingData::dataset("train")
        .features(&["f1", "f2", "f3", "f4"])
        .label("label");
    let r = models
        .fit("nb", data, Some(spec), Default::default())
        .await
        .unwrap();
    let file = std::path::Path::new(&root.url).join(r.meta.kind_meta["path"].as_str().unwrap());
    // a well-formed file whose per-class means lost a feature
    let mut v: Value = rmp_serde::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let theta = array_under(&mut v, "theta").expect("naive Bayes means");
    theta[0].as_array_mut().unwrap().pop();
    std::fs::write(&file, rmp_serde::to_vec_named(&v).unwrap()).unwrap();
    match models.load("nb").await.unwrap_err() {
        ModelError::Store(StoreError::CorruptData { name, reason, .. }) => {
            assert_eq!(name, "nb");
            assert!(
                reason.contains("3 values per class for 4 features"),
                "{reason}"
            );
        }
        e => panic!("expected CorruptData, got {e}"),
    }
}
