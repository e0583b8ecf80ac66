//! The SQL layer from the library and the `om sql` command line.

mod common;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use datafusion::common::ScalarValue;
use omegastore::{GetOptions, Omega, PutOptions, SqlError};

use common::{local, om, sample_batch, total_rows};

async fn count(om: &Omega, sql: &str) -> i64 {
    let b = om.sql(sql).await.unwrap().collect().await.unwrap();
    b[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test]
async fn parameters_are_bound_never_spliced() {
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    om.sql("CREATE TABLE people AS SELECT 'x' AS name, 1 AS age WHERE false")
        .await
        .unwrap();
    let params = [
        ScalarValue::from("O'Brien; DROP TABLE people"),
        ScalarValue::from(42i64),
    ];
    om.sql_with_params("INSERT INTO people VALUES ($1, $2)", &params)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let b = om
        .sql_with_params(
            "SELECT count(*) FROM people WHERE name = $1 AND age > $2",
            &[params[0].clone(), ScalarValue::from(40i64)],
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 1);
    assert!(
        om.datasets().exists("people").await.unwrap(),
        "the table survived"
    );
}

#[tokio::test]
async fn datasets_put_elsewhere_are_visible_at_the_next_query() {
    for root in common::roots() {
        let a = Omega::open(&root.url).await.unwrap();
        let b = Omega::open(&root.url).await.unwrap();
        a.datasets()
            .put(sample_batch(0, 10), "fresh", PutOptions::default())
            .await
            .unwrap();
        assert_eq!(count(&b, "SELECT count(*) FROM fresh").await, 10);
        a.datasets()
            .put(sample_batch(10, 5), "fresh", PutOptions::default())
            .await
            .unwrap();
        assert_eq!(count(&b, "SELECT count(*) FROM fresh").await, 15);
    }
}

#[tokio::test]
async fn mixins_apply_to_get_and_explain_shows_them() {
    for root in common::roots() {
        let om = Omega::open(&root.url).await.unwrap();
        om.datasets()
            .put(sample_batch(0, 100), "scores", PutOptions::default())
            .await
            .unwrap();
        om.sql("CREATE POLICY low ON scores TO analyst USING (id < 10)")
            .await
            .unwrap();
        om.sql("GRANT read ON BUCKET default TO analyst")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let analyst = om.with_identity("ana", &["analyst"], false).unwrap();
        // the library get goes through the same rewrite as SQL
        let rows = analyst
            .datasets()
            .get_batches("scores", GetOptions::default())
            .await
            .unwrap();
        assert_eq!(total_rows(&rows), 10);
        let rows = analyst
            .datasets()
            .get_batches(
                "scores",
                GetOptions {
                    filter: Some("id >= 5".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(total_rows(&rows), 5);
        let df = analyst.datasets().getl("scores").await.unwrap();
        assert_eq!(df.count().await.unwrap(), 10);
        let plan = analyst
            .sql("EXPLAIN SELECT id FROM scores")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&plan)
            .unwrap()
            .to_string();
        assert!(
            text.contains("Filter: omega.default.scores.id < Int64(10)"),
            "{text}"
        );
        // the identity is fixed: SET cannot widen it, however it is spelt
        // (DataFusion normalises quotes, spaces and case to `omega.<key>`)
        for attempt in [
            "SET omega.roles = 'admin'",
            "SET \"omega\".roles = 'admin'",
            "SET \"omega\".\"roles\" = 'admin'",
            "SET omega . roles = 'admin'",
            "SET OMEGA.ROLES = 'admin'",
            "SET /* hidden */ omega.roles = 'admin'",
            "SET omega.roles TO 'admin'",
            "SET omega.read_only = false",
            "SET omega.locked = false",
            "SET omega.bound_bucket = ''",
            "SET omega.user = 'root'",
            "RESET omega.roles",
        ] {
            match analyst.sql(attempt).await {
                Err(e) => assert!(
                    e.to_string().contains("identity was fixed")
                        || e.to_string().contains("Expected"),
                    "{attempt}: {e}"
                ),
                Ok(df) => panic!("{attempt} was accepted: {:?}", df.collect().await),
            }
        }
        // nor may it move the process's memory limit or spill directory
        for attempt in [
            "SET datafusion.runtime.temp_directory = '/tmp/elsewhere'",
            "SET datafusion.runtime.memory_limit = '64G'",
            "RESET datafusion.runtime.memory_limit",
        ] {
            let e = analyst.sql(attempt).await.unwrap_err();
            assert!(
                e.to_string().contains("memory limit, spill files"),
                "{attempt}: {e}"
            );
        }
        assert_eq!(count(&analyst, "SELECT count(*) FROM scores").await, 10);
    }
}

#[tokio::test]
async fn read_only_sessions_reject_writes() {
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    om.datasets()
        .put(sample_batch(0, 3), "t", PutOptions::default())
        .await
        .unwrap();
    let ro = om.read_only().unwrap();
    let err = ro.sql("INSERT INTO t SELECT * FROM t").await.unwrap_err();
    assert!(matches!(err, SqlError::ReadOnly(_)), "{err}");
    assert_eq!(count(&ro, "SELECT count(*) FROM t").await, 3);
}

#[test]
fn om_sql_sees_what_om_datasets_put_stored() {
    let root = local();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("trips.csv");
    std::fs::write(&csv, "vendor,fare\nA,10\nB,20\nA,5\n").unwrap();
    let put = om(&root)
        .args(["datasets", "put", csv.to_str().unwrap(), "trips"])
        .output()
        .unwrap();
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let out = om(&root)
        .args([
            "sql",
            "SELECT vendor, sum(fare) AS total FROM trips GROUP BY vendor ORDER BY vendor",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "vendor,total\nA,15\nB,20\n"
    );
    // a script file, parameters and JSON output
    let script = dir.path().join("q.sql");
    std::fs::write(&script, "CREATE TABLE big AS SELECT * FROM trips WHERE fare > $1;\nSELECT count(*) AS n FROM big;\n").unwrap();
    let out = om(&root)
        .args([
            "sql",
            "-f",
            script.to_str().unwrap(),
            "--param",
            "7",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#"[{"n":2}]"#);
    // errors: one line, exit 1
    let out = om(&root)
        .args(["sql", "SELECT * FROM nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("nope") && e.contains("not found"), "{e}");
    let out = om(&root)
        .args(["sql", "--read-only", "DROP TABLE trips"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("read-only"));
}

/// Unqualified names resolve in the bucket the `Omega` (or `om --bucket`)
/// was opened on, for reads and writes alike.
#[tokio::test]
async fn unqualified_names_resolve_in_the_chosen_bucket() {
    let root = local();
    let store = Omega::open(&root.url).await.unwrap();
    let team = store.bucket("team_a").unwrap();
    team.sql("CREATE TABLE t AS VALUES (1), (2)").await.unwrap();
    store.sql("CREATE TABLE t AS VALUES (1)").await.unwrap();
    assert_eq!(count(&team, "SELECT count(*) FROM t").await, 2);
    assert_eq!(count(&store, "SELECT count(*) FROM t").await, 1);
    assert_eq!(count(&store, "SELECT count(*) FROM team_a.t").await, 2);
    // the command line's --bucket means the same
    let out = om(&root)
        .args(["--bucket", "team_a", "sql", "SELECT count(*) AS n FROM t"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "n\n2");
}

/// Tables are read by DataFusion's Parquet scan; a registered table backend
/// with `TableScan::DeltaRs` reads them with delta-rs's provider instead
/// (what the SQL suite's second pass runs on), with the same answers.
#[tokio::test]
async fn the_table_scan_is_chosen_by_the_registered_backend() {
    use omegastore::backends::table::{DeltaTableBackend, TableScan};
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    om.datasets()
        .put(sample_batch(0, 100), "t", PutOptions::default())
        .await
        .unwrap();
    let explain = |om: Omega| async move {
        let b = om
            .sql("EXPLAIN SELECT name FROM t WHERE id > 10")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        arrow::util::pretty::pretty_format_batches(&b)
            .unwrap()
            .to_string()
    };
    let plain = explain(om.clone()).await;
    assert!(
        plain.contains("DataSourceExec") && !plain.contains("DeltaScan"),
        "{plain}"
    );
    let expected = count(&om, "SELECT sum(id) FROM t WHERE id > 10").await;
    let other = Omega::open(&root.url).await.unwrap();
    other.register_backend(std::sync::Arc::new(DeltaTableBackend::with_scan(
        TableScan::DeltaRs,
    )));
    let delta_rs = explain(other.clone()).await;
    assert!(delta_rs.contains("DeltaScan"), "{delta_rs}");
    assert_eq!(
        count(&other, "SELECT sum(id) FROM t WHERE id > 10").await,
        expected
    );
}
