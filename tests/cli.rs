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
