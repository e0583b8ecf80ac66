//! Every `om datasets` verb, on a local root and on S3 (moto), as a user runs them.

mod common;

use common::{om, roots};

fn run(root: &common::TestRoot, args: &[&str]) -> String {
    let out = om(root).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "om {args:?} on {} failed: {}",
        root.kind,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_datasets_verb_works_on_every_root() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("trips.csv");
    std::fs::write(&csv, "vendor,fare\nA,10.5\nB,20\nA,5\n").unwrap();
    let more = dir.path().join("more.csv");
    std::fs::write(&more, "vendor,fare\nC,1\n").unwrap();
    let csv = csv.to_str().unwrap();
    for root in roots() {
        assert!(
            run(&root, &["datasets", "put", csv, "rides/2024"])
                .contains("version 1 (table.delta, 3 rows)")
        );
        assert!(
            run(
                &root,
                &["datasets", "put", more.to_str().unwrap(), "rides/2024"]
            )
            .contains("version 2")
        );
        let got = run(
            &root,
            &[
                "datasets",
                "get",
                "rides/2024",
                "--format",
                "csv",
                "--where",
                "fare > 4",
                "--columns",
                "vendor",
            ],
        );
        let mut lines: Vec<&str> = got.lines().collect();
        lines.sort();
        assert_eq!(lines, vec!["A", "A", "B", "vendor"]);
        let got = run(
            &root,
            &[
                "datasets",
                "get",
                "rides/2024@1",
                "--format",
                "jsonl",
                "--limit",
                "1",
            ],
        );
        assert_eq!(got.lines().count(), 1);
        let out = dir.path().join(format!("{}.parquet", root.kind));
        run(
            &root,
            &["datasets", "get", "rides/2024", "-o", out.to_str().unwrap()],
        );
        assert!(std::fs::metadata(&out).unwrap().len() > 0);
        let list = run(&root, &["datasets", "list", "--long"]);
        assert!(
            list.contains("rides/2024") && list.contains("table.delta") && list.contains(" 4 "),
            "{list}"
        );
        let info: serde_json::Value =
            serde_json::from_str(&run(&root, &["datasets", "info", "rides/2024@1"])).unwrap();
        assert_eq!(info["version"], 1);
        assert_eq!(info["kind_meta"]["rows"], 3);
        run(
            &root,
            &["datasets", "tag", "rides/2024", "prod", "--version", "1"],
        );
        let history = run(&root, &["datasets", "history", "rides/2024"]);
        assert_eq!(history.lines().count(), 3, "{history}");
        assert!(
            history.lines().nth(1).unwrap().ends_with("prod"),
            "{history}"
        );
        assert!(
            run(
                &root,
                &["datasets", "get", "rides/2024@prod", "--format", "csv"]
            )
            .lines()
            .count()
                == 4
        );
        assert!(run(&root, &["datasets", "drop", "rides/*"]).contains("dropped rides/2024"));
        assert_eq!(run(&root, &["datasets", "list"]), "");
        let e = om(&root)
            .args(["datasets", "get", "rides/2024"])
            .output()
            .unwrap();
        assert_eq!(e.status.code(), Some(1));
    }
}

fn fail(root: &common::TestRoot, args: &[&str]) -> String {
    let out = om(root).args(args).output().unwrap();
    assert!(!out.status.success(), "om {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every `om models` verb as a user runs them, on local and S3 roots:
/// model state round-trips through each store.
#[test]
fn every_models_verb_works_on_every_root() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("houses.csv");
    // price = 1000 * rooms + 50 * area + 20000 (plus a city that does not matter)
    let mut text = String::from("rooms,area,city,price\n");
    for i in 0..60 {
        let (rooms, area) = (1 + i % 5, 40 + (i * 7) % 90);
        let city = ["Bern", "Basel", "Zug"][i % 3];
        text.push_str(&format!(
            "{rooms},{area},{city},{}\n",
            1000 * rooms + 50 * area + 20000
        ));
    }
    std::fs::write(&csv, text).unwrap();
    for root in roots() {
        run(&root, &["datasets", "put", csv.to_str().unwrap(), "houses"]);
        let out = run(
            &root,
            &["models", "put", "price", "--type", "linear_regression"],
        );
        assert!(
            out.contains("version 1 (smartcore.linear_regression)"),
            "{out}"
        );
        let out = run(
            &root,
            &[
                "models",
                "fit",
                "price",
                "houses",
                "--features",
                "rooms,area,city",
                "--label",
                "price",
            ],
        );
        assert!(
            out.contains("fitted price version 2") && out.contains("on 60 rows"),
            "{out}"
        );
        assert!(out.contains("r2         1.0000"), "{out}");
        run(&root, &["models", "tag", "price", "prod"]);
        // predictions into a dataset, then read back with SQL
        let out = run(
            &root,
            &[
                "models",
                "predict",
                "price@prod",
                "houses",
                "--into",
                "priced",
            ],
        );
        assert!(out.contains("stored priced version 1 (60 rows)"), "{out}");
        let out = run(
            &root,
            &[
                "sql",
                "SELECT count(*) FROM priced WHERE abs(prediction - price) < 0.01",
            ],
        );
        assert!(out.contains("60"), "{out}");
        let out = run(
            &root,
            &[
                "models",
                "score",
                "price",
                "--sql",
                "SELECT * FROM houses",
                "--json",
            ],
        );
        let scores: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert!(scores["r2"].as_f64().unwrap() > 0.999, "{out}");
        // a search stores the best as version 3
        let out = run(
            &root,
            &[
                "models",
                "search",
                "price",
                "houses",
                "--label",
                "price",
                "--grid",
                r#"{"solver": ["qr", "svd"]}"#,
                "--folds",
                "3",
            ],
        );
        assert!(out.contains("best of 2 grid points (3-fold r2)"), "{out}");
        assert!(out.contains("stored price version 3"), "{out}");
        let out = run(&root, &["models", "history", "price"]);
        assert!(out.contains("houses@1") && out.contains("prod"), "{out}");
        let out = run(&root, &["models", "list", "-l"]);
        assert!(
            out.contains("price") && out.contains("linear_regression"),
            "{out}"
        );
        let out = run(&root, &["models", "info", "price@2"]);
        let info: serde_json::Value = serde_json::from_str(&out).unwrap();
        let coef = &info["kind_meta"]["coefficients"];
        assert!(
            (coef["rooms"].as_f64().unwrap() - 1000.0).abs() < 1e-6,
            "{coef}"
        );
        assert!(
            (coef["area"].as_f64().unwrap() - 50.0).abs() < 1e-6,
            "{coef}"
        );
        // SQL sees the CLI's model
        let out = run(
            &root,
            &[
                "sql",
                "SELECT round(predict('price', rooms, area, city)) AS p FROM houses LIMIT 1",
            ],
        );
        assert!(
            out.lines().nth(1).unwrap().parse::<f64>().unwrap() > 20000.0,
            "{out}"
        );
        // errors are one line, naming what is wrong
        let err = fail(
            &root,
            &[
                "models",
                "predict",
                "price",
                "--sql",
                "SELECT rooms FROM houses",
            ],
        );
        assert!(err.contains("missing column 'area'"), "{err}");
        let err = fail(&root, &["models", "put", "x", "--type", "boosting"]);
        assert!(
            err.starts_with("om: error: unknown algorithm 'boosting'"),
            "{err}"
        );
        let err = fail(&root, &["models", "fit", "price"]);
        assert!(err.contains("DATASET or give --sql"), "{err}");
        run(&root, &["models", "drop", "price"]);
        let err = fail(&root, &["models", "score", "price", "houses"]);
        assert!(err.contains("'price' not found in models"), "{err}");
    }
}

/// The README's first command: every step runs and shows its result,
/// the model step included.
#[test]
fn quickstart_runs_end_to_end() {
    let root = common::local();
    let out = run(&root, &["quickstart"]);
    assert!(out.contains("stored trips version 1 (10000 rows)"), "{out}");
    assert!(out.contains("stored trips version 2 (20000 rows)"), "{out}");
    assert!(out.contains("fitted fare version 1 on 20000 rows"), "{out}");
    // the sample's fare is 3 + 1.9 × distance + noise: the model finds the slope
    assert!(
        out.contains("× distance_km") && out.contains("1.90 × distance_km"),
        "{out}"
    );
    assert!(out.contains("| predicted |"), "{out}");
    // a second run fits a second version instead of failing
    let out = run(&root, &["quickstart"]);
    assert!(out.contains("fitted fare version 2"), "{out}");
}

/// `om bench tpch` and `om bench ops` run end to end (tiny sizes) and report
/// JSON with the answers peers check.
#[test]
fn bench_commands_run_and_report_json() {
    let root = common::local();
    let dir = tempfile::tempdir().unwrap();
    let answers = dir.path().join("answers");
    let out = run(
        &root,
        &[
            "bench",
            "tpch",
            "--sf",
            "0.01",
            "--runs",
            "1",
            "--queries",
            "1,6",
            "--answers",
            answers.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let timings = report["timings"].as_array().unwrap();
    let q01 = timings.iter().find(|t| t["name"] == "q01").unwrap();
    assert_eq!(
        q01["rows"], 4,
        "Q1 has four (returnflag, linestatus) groups"
    );
    assert!(timings.iter().any(|t| t["name"] == "put lineitem"));
    assert!(answers.join("q06.csv").exists());
    // a second run reuses the stored tables
    let out = run(
        &root,
        &[
            "bench",
            "tpch",
            "--sf",
            "0.01",
            "--runs",
            "1",
            "--queries",
            "6",
            "--format",
            "json",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["timings"].as_array().unwrap().len(), 1, "{report}");

    let data = dir.path().join("ops");
    let out = run(
        &root,
        &[
            "bench",
            "ops",
            "--rows",
            "20000",
            "--runs",
            "1",
            "--model-rows",
            "5000",
            "--forest-rows",
            "1000",
            "--trees",
            "2",
            "--data",
            data.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let get = |name: &str| {
        report["timings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {report}"))
            .clone()
    };
    assert_eq!(get("get")["answer"], "20000");
    assert_eq!(get("point_lookup")["rows"], 1);
    // the queries on memory-cached tables answer as those on Parquet
    // (sums of floats: equal up to the order they were added in)
    for q in [
        "filtered_count",
        "group_by",
        "join",
        "top_k",
        "point_lookup",
    ] {
        let number = |name: &str| -> f64 { get(name)["answer"].as_str().unwrap().parse().unwrap() };
        let (cached, parquet) = (number(&format!("{q}_cached")), number(q));
        assert!(
            (cached - parquet).abs() <= 1e-9 * parquet.abs(),
            "{q}: {cached} vs {parquet}"
        );
    }
    // the generated files stay for the peers
    assert!(data.join("ops.parquet").exists() && data.join("ops.csv").exists());
    let err = fail(&root, &["bench", "ops", "--rows", "10"]);
    assert!(err.contains("--rows"), "{err}");
}

/// `--memory-limit` bounds what a query may hold: a join past it fails with
/// a one-line error that names the flag, a query within it runs; a limit
/// that is not a size or a share is refused before anything runs.
#[test]
fn a_query_past_the_memory_limit_fails_with_a_message_that_names_the_flag() {
    let root = common::local();
    run(
        &root,
        &[
            "sql",
            "CREATE TABLE big AS SELECT value AS id, concat('n', CAST(value AS VARCHAR)) AS name \
             FROM generate_series(1, 300000)",
        ],
    );
    let join = "SELECT count(*) FROM big a JOIN big b ON a.id = b.id AND a.name = b.name";
    let err = fail(&root, &["--memory-limit", "1MiB", "sql", join]);
    assert!(
        err.contains("ran out of memory") && err.contains("--memory-limit"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = run(
        &root,
        &["--memory-limit", "1MiB", "sql", "SELECT count(*) FROM big"],
    );
    assert!(out.contains("300000"), "{out}");
    let out = run(&root, &["--memory-limit", "off", "sql", join]);
    assert!(out.contains("300000"), "{out}");
    for bad in ["0", "150%", "lots"] {
        let err = fail(&root, &["--memory-limit", bad, "sql", "SELECT 1"]);
        assert!(err.contains("--memory-limit"), "{bad}: {err}");
    }
}

/// `om bench catalog` lists every object it stored and counts the store
/// requests of an open and list: a few, however many objects (no record
/// read or listed per object), as the listing index and journal promise
/// (today 6: the root's access mark and the bucket listings of the first
/// policy load, the index read and the journal listed).
#[test]
fn bench_catalog_counts_the_requests_of_an_open_and_list() {
    let root = common::local();
    let out = run(
        &root,
        &[
            "bench",
            "catalog",
            "--objects",
            "60",
            "--runs",
            "1",
            "--format",
            "json",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let timing = &report["timings"][0];
    assert_eq!(timing["answer"], "60", "{report}");
    let requests = timing["requests"].as_object().unwrap();
    let total: u64 = requests.values().map(|n| n.as_u64().unwrap()).sum();
    assert!(
        (2..=6).contains(&total) && requests.contains_key("LIST"),
        "{report}"
    );
    // the table names them too
    let out = run(
        &root,
        &["bench", "catalog", "--objects", "60", "--runs", "1"],
    );
    assert!(out.contains(&format!("{total} store requests")), "{out}");
}

/// `om bench serve` runs its load on loopback (tiny and short here) and
/// reports every operation answered, the stream's rows and the memory
/// sampled across the run.
#[test]
fn bench_serve_runs_and_reports_json() {
    let root = common::local();
    let out = run(
        &root,
        &[
            "bench",
            "serve",
            "--clients",
            "2",
            "--seconds",
            "2",
            "--rows",
            "1000",
            "--stream-rows",
            "10000",
            "--format",
            "json",
        ],
    );
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["stream_rows"], 10000, "{r}");
    for op in [
        "http point lookup",
        "flight aggregate",
        "flight point lookup",
    ] {
        assert!(r["ops"][op]["count"].as_u64().unwrap() > 0, "{op}: {r}");
    }
    let samples: Vec<f64> = r["anon_samples_mib"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_f64().unwrap())
        .collect();
    assert!(samples.len() >= 2, "one sample a second: {r}");
    let max = r["anon_max_mib"].as_f64().unwrap();
    assert!(samples.iter().all(|m| *m > 0.0 && *m <= max), "{r}");
}
