//! Access control from the library and from fixed identities: every store
//! verb asks the same rules as SQL, the owner administers its store, and
//! the bypasses of issue #11 stay closed (the SQL attempts are in
//! sql/08_access.slt).

mod common;

use omegastore::store::GcOptions;
use omegastore::{Omega, PutOptions, StoreError};

use common::{exec as run, local, sample_batch, scalar as count, total_rows};

fn denied(e: &StoreError, privilege: &str, bucket: &str) {
    match e {
        StoreError::PermissionDenied {
            privilege: p,
            bucket: b,
            who,
            ..
        } => {
            assert_eq!((p.as_str(), b.as_str()), (privilege, bucket), "{e}");
            assert!(who.contains("user 'ana' (roles analyst)"), "{e}");
        }
        other => panic!("expected permission denied ({privilege} on {bucket}), got {other}"),
    }
}

/// A store with `t` (10 rows) in `default`, `p` in `hr`, a row filter for
/// analysts, and `read` on `default` granted to them.
async fn store() -> (common::TestRoot, Omega) {
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    om.datasets()
        .put(sample_batch(0, 10), "t", PutOptions::default())
        .await
        .unwrap();
    om.bucket("hr")
        .unwrap()
        .datasets()
        .put(sample_batch(0, 3), "p", PutOptions::default())
        .await
        .unwrap();
    run(&om, "CREATE POLICY low ON t TO analyst USING (id < 4)").await;
    run(&om, "GRANT read ON BUCKET default TO analyst").await;
    (root, om)
}

#[tokio::test]
async fn every_library_verb_of_a_fixed_identity_is_held_to_its_grants() {
    let (_root, om) = store().await;
    let ana = om.with_identity("ana", &["analyst"], false).unwrap();
    let ds = ana.datasets();
    // read: allowed, filtered
    let rows = ds.get_batches("t", Default::default()).await.unwrap();
    assert_eq!(total_rows(&rows), 4);
    assert_eq!(ds.list(None, &Default::default()).await.unwrap().len(), 1);
    // write verbs: refused before anything is written
    let e = ds
        .put(sample_batch(100, 1), "t", PutOptions::default())
        .await
        .unwrap_err();
    denied(&e, "write", "default");
    denied(&ds.drop("t", false).await.unwrap_err(), "write", "default");
    denied(
        &ds.tag("t", "prod", None).await.unwrap_err(),
        "write",
        "default",
    );
    let e = ds
        .set_attributes("t", serde_json::Map::new())
        .await
        .unwrap_err();
    denied(&e, "write", "default");
    denied(
        &ds.vacuum("t", 1, false, std::time::Duration::ZERO)
            .await
            .unwrap_err(),
        "write",
        "default",
    );
    denied(
        &ds.gc(&GcOptions::default()).await.unwrap_err(),
        "admin",
        "default",
    );
    // policies and settings are documents an admin changes
    let e = ana
        .policies()
        .set("t", &Default::default())
        .await
        .unwrap_err();
    denied(&e, "admin", "default");
    let e = ana
        .store("settings")
        .unwrap()
        .put(
            serde_json::json!({"grants": {"analyst": "admin"}}),
            "bucket",
            PutOptions::default(),
        )
        .await
        .unwrap_err();
    denied(&e, "admin", "default");
    // another bucket: nothing, not even its names
    let hr = ana.bucket("hr").unwrap().datasets();
    denied(
        &hr.list(None, &Default::default()).await.unwrap_err(),
        "read",
        "hr",
    );
    denied(&hr.metadata("p").await.unwrap_err(), "read", "hr");
    denied(&hr.history("p").await.unwrap_err(), "read", "hr");
    denied(
        &hr.get_batches("p", Default::default()).await.unwrap_err(),
        "read",
        "hr",
    );
    // nothing changed
    assert_eq!(count(&om, "SELECT count(*) FROM t").await, 10);
    assert_eq!(om.datasets().metadata("t").await.unwrap().version, 1);
}

#[tokio::test]
async fn the_owner_administers_its_store_and_sees_every_row() {
    let (_root, om) = store().await;
    // a filter for analysts does not hide rows from the owner (it used to: 0)
    assert_eq!(count(&om, "SELECT count(*) FROM t").await, 10);
    // a read-only or bucket-bound session of the owner is still the owner
    assert_eq!(
        count(&om.read_only().unwrap(), "SELECT count(*) FROM t").await,
        10
    );
    // an identity without roles is nobody
    let nobody = om.with_identity("x", &[], false).unwrap();
    let e = nobody.sql("SELECT count(*) FROM t").await.unwrap_err();
    assert!(
        e.to_string().contains("lacks read on bucket 'default'"),
        "{e}"
    );
}

#[tokio::test]
async fn a_session_used_directly_applies_the_policies_before_any_statement() {
    let (root, _om) = store().await;
    // another client: its policy cache was never loaded by a statement
    let other = Omega::open(&root.url).await.unwrap();
    let ana = other.with_identity("ana", &["analyst"], false).unwrap();
    let rows = ana
        .session()
        .sql("SELECT * FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        total_rows(&rows),
        4,
        "fail open: the row filter was not applied"
    );
}

#[tokio::test]
async fn concurrent_policy_edits_all_land() {
    let (_root, om) = store().await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let om = om.clone();
        tasks.push(tokio::spawn(async move {
            run(
                &om,
                &format!("CREATE POLICY p{i} ON t TO r{i} USING (id = {i})"),
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let p = om.policies().get("t").await.unwrap();
    // the analyst filter and the eight new ones: no edit lost
    assert_eq!(p.row_filters.len(), 9, "{:?}", p.row_filters);
}

#[tokio::test]
async fn a_fixed_identity_cannot_widen_itself_or_administer() {
    let (_root, om) = store().await;
    let ana = om.with_identity("ana", &["analyst"], false).unwrap();
    for sql in [
        "SET omega.owner = true",
        "SET \"omega\".owner = true",
        "SET omega.roles = ''",
        "DROP POLICY low ON t",
        "GRANT admin ON BUCKET default TO analyst",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/tmp'",
    ] {
        let e = match ana.sql(sql).await {
            Err(e) => e.to_string(),
            Ok(df) => match df.collect().await {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{sql} was accepted"),
            },
        };
        // (the external table is refused at its first check: analysts may
        // not even write to the bucket)
        assert!(
            e.contains("identity was fixed")
                || e.contains("lacks admin on bucket 'default'")
                || e.contains("lacks write on bucket 'default'"),
            "{sql}: {e}"
        );
    }
    assert_eq!(count(&ana, "SELECT count(*) FROM t").await, 4);
}

#[tokio::test]
async fn evaluate_and_fit_accept_exactly_one_select() {
    let (_root, om) = store().await;
    run(
        &om,
        "CREATE MODEL m OPTIONS (type = 'linear_regression', label = 'score') AS SELECT id, score FROM t",
    )
    .await;
    for (sql, why) in [
        (
            "SELECT * FROM evaluate('m', 'SELECT id, score FROM t; DROP TABLE t')",
            "exactly one SELECT",
        ),
        (
            "SELECT * FROM evaluate('m', 'SELECT id, score FROM t; CREATE TABLE u AS SELECT 1')",
            "exactly one SELECT",
        ),
        // not a query: taken as a dataset name, which does not exist
        ("SELECT * FROM evaluate('m', 'DROP TABLE t')", "not found"),
    ] {
        let e = match om.sql(sql).await {
            Err(e) => e.to_string(),
            Ok(df) => df.collect().await.unwrap_err().to_string(),
        };
        assert!(e.contains(why), "{sql}: {e}");
    }
    // nothing ran
    assert!(om.datasets().exists("t").await.unwrap());
    assert!(!om.datasets().exists("u").await.unwrap());
    // one SELECT is fine
    run(
        &om,
        "SELECT * FROM evaluate('m', 'SELECT id, score FROM t')",
    )
    .await;
}

#[tokio::test]
async fn an_external_table_cannot_point_into_the_store() {
    let (root, om) = store().await;
    let meta = om.datasets().metadata("t").await.unwrap();
    let location = meta.kind_meta["location"].as_str().unwrap().to_string();
    let dir = std::path::Path::new(&root.url).join(&location);
    let dotted = format!("{}/default/../{}", root.url, location);
    for loc in [dir.display().to_string(), dotted, root.url.clone()] {
        let sql = format!("CREATE EXTERNAL TABLE leak STORED AS DELTA LOCATION '{loc}'");
        let e = om.sql(&sql).await.unwrap_err().to_string();
        assert!(e.contains("inside the store's own root"), "{loc}: {e}");
    }
    assert!(!om.datasets().exists("leak").await.unwrap());
}

#[tokio::test]
async fn a_view_reads_the_bucket_it_is_stored_in() {
    let (_root, om) = store().await;
    // `t` exists in default (10 rows) and, with 2 rows, in bucket b
    om.bucket("b")
        .unwrap()
        .datasets()
        .put(sample_batch(0, 2), "t", PutOptions::default())
        .await
        .unwrap();
    run(&om, "CREATE VIEW omega.b.v AS SELECT count(*) AS n FROM t").await;
    // read from a session on default: the view still means b's t
    assert_eq!(count(&om, "SELECT n FROM omega.b.v").await, 2);
    // and the policies judge the scan as b's t: the analyst filter on
    // default's t does not apply, b grants the analyst nothing
    run(&om, "GRANT read ON BUCKET b TO analyst").await;
    let ana = om.with_identity("ana", &["analyst"], false).unwrap();
    assert_eq!(count(&ana, "SELECT n FROM omega.b.v").await, 2);
}

#[tokio::test]
async fn a_contract_holds_for_every_kind_of_write() {
    let (_root, om) = store().await;
    run(
        &om,
        "CREATE TABLE events (id BIGINT, kind VARCHAR) AS VALUES (1, 'click')",
    )
    .await;
    run(
        &om,
        r#"CREATE CONTRACT ON events AS '{"columns": [{"name": "kind", "allowed": ["click", "view"]}]}'"#,
    )
    .await;
    // a document, a view or a raw file over the name would bypass the contract
    let e = om
        .datasets()
        .put(
            serde_json::json!({"kind": "buy"}),
            "events",
            PutOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("takes only table writes"), "{e}");
    let e = om
        .sql("CREATE OR REPLACE VIEW events AS SELECT 1 AS id, 'buy' AS kind")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("takes only table writes"), "{e}");
    // an UPDATE goes through the contract like an INSERT
    let e = om
        .sql("UPDATE events SET kind = 'buy'")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("violated by 1 row(s)"), "{e}");
    run(&om, "UPDATE events SET kind = 'view'").await;
    assert_eq!(
        count(&om, "SELECT count(*) FROM events WHERE kind = 'view'").await,
        1
    );
}

#[tokio::test]
async fn isolation_covers_writes_and_information_schema() {
    let (_root, om) = store().await;
    run(&om, "CREATE TABLE omega.team_a.x AS VALUES (1)").await;
    run(&om, "ALTER BUCKET default SET ISOLATED = TRUE").await;
    let e = om
        .sql("CREATE TABLE omega.team_a.y AS VALUES (1)")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("bound to bucket 'default'"), "{e}");
    let e = om
        .bucket("team_a")
        .unwrap()
        .datasets()
        .put(sample_batch(0, 1), "z", PutOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("bound to bucket 'default'"), "{e}");
    // information_schema shows only the bound bucket (filtered, not refused)
    assert_eq!(
        count(
            &om,
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'team_a'"
        )
        .await,
        0
    );
    assert!(
        count(
            &om,
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'default'"
        )
        .await
            > 0
    );
}

async fn float(df: datafusion::dataframe::DataFrame) -> f64 {
    let b = df.collect().await.unwrap();
    arrow::compute::cast(b[0].column(0), &arrow::datatypes::DataType::Float64)
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::Float64Array>()
        .unwrap()
        .value(0)
}

#[tokio::test]
async fn models_of_two_buckets_do_not_mix_and_a_query_keeps_its_version() {
    let root = local();
    let a = Omega::open(&root.url).await.unwrap();
    let b = a.bucket("b").unwrap();
    for (om, k) in [(&a, 2), (&b, 3)] {
        run(
            om,
            &format!(
                "CREATE TABLE pts AS SELECT CAST(v AS DOUBLE) AS x, CAST({k} * v AS DOUBLE) AS y FROM generate_series(1, 20) t(v)"
            ),
        )
        .await;
        run(
            om,
            "CREATE MODEL m OPTIONS (type = 'linear_regression', label = 'y') AS SELECT x, y FROM pts",
        )
        .await;
    }
    // a query of bucket a, planned, not yet run
    let in_a = a
        .sql("SELECT round(predict('m', x)) FROM pts WHERE x = 10")
        .await
        .unwrap();
    // meanwhile a statement of bucket b (same session) loads b's `m`,
    // and a's `m` gets a new version
    let in_b = b
        .sql("SELECT round(predict('m', x)) FROM pts WHERE x = 10")
        .await
        .unwrap();
    assert_eq!(float(in_b).await, 30.0);
    // a's query still predicts with a's model (it used to take b's)
    assert_eq!(float(in_a).await, 20.0);
    let again = a
        .sql("SELECT round(predict('m', x)) FROM pts WHERE x = 10")
        .await
        .unwrap();
    assert_eq!(float(again).await, 20.0);
}

#[tokio::test]
async fn a_statement_in_an_isolated_bucket_writes_only_there() {
    let (_root, om) = store().await;
    let team = om.bucket("team_a").unwrap();
    run(&team, "CREATE TABLE x AS VALUES (1)").await;
    run(&om, "ALTER BUCKET team_a SET ISOLATED = TRUE").await;
    for sql in [
        "CREATE TABLE omega.default.y AS VALUES (1)",
        "INSERT INTO omega.default.t SELECT * FROM omega.default.t",
        "DROP TABLE omega.default.t",
    ] {
        let e = team.sql(sql).await.unwrap_err().to_string();
        assert!(e.contains("bound to bucket 'team_a'"), "{sql}: {e}");
    }
    // its own bucket is fine
    run(&team, "CREATE TABLE y AS VALUES (2)").await;
    assert_eq!(count(&om, "SELECT count(*) FROM t").await, 10);
}

/// A second client of the root, as user `ana` playing `analyst`.
async fn analyst_client(root: &common::TestRoot) -> Omega {
    Omega::open(&root.url)
        .await
        .unwrap()
        .with_identity("ana", &["analyst"], false)
        .unwrap()
}

/// An analyst session whose store calls the returned decorator sees, after
/// its first statement (which loads the policies: 4 rows of `t`).
async fn watched_analyst(root: &common::TestRoot) -> (Omega, common::faults::FaultStore) {
    let (om, faults) = common::faults::faulty(&root.url).await;
    let ana = om.with_identity("ana", &["analyst"], false).unwrap();
    assert_eq!(count(&ana, "SELECT count(*) FROM t").await, 4);
    (ana, faults)
}

/// Policies are cached per process and validated by one read of the access
/// mark per statement: what another client changes applies to this client's next
/// statement, and what nobody changed is not read again.
#[tokio::test]
async fn a_policy_another_client_changes_applies_to_the_next_statement() {
    let (root, _om) = store().await;
    let ana = analyst_client(&root).await;
    let admin = Omega::open(&root.url).await.unwrap();
    let rows = |om: Omega| async move { count(&om, "SELECT count(*) FROM t").await };
    assert_eq!(rows(ana.clone()).await, 4);
    assert_eq!(rows(ana.clone()).await, 4, "unchanged policy, cached");
    run(&admin, "DROP POLICY low ON t").await;
    run(&admin, "CREATE POLICY lower ON t TO analyst USING (id < 2)").await;
    assert_eq!(rows(ana.clone()).await, 2, "the new filter applies");
    run(&admin, "REVOKE read ON BUCKET default FROM analyst").await;
    let e = match ana.sql("SELECT count(*) FROM t").await {
        Err(e) => e.to_string(),
        Ok(df) => match df.collect().await {
            Err(e) => e.to_string(),
            Ok(_) => "read the table".into(),
        },
    };
    assert!(e.contains("permission denied"), "the revoke applies: {e}");
}

/// Statements share policy reloads, but never one that began before they
/// asked: a policy another client changes while a reload is under way
/// applies to every statement that starts after the change, even one that
/// waited for that reload to finish.
#[tokio::test]
async fn a_statement_never_takes_a_policy_reload_older_than_itself() {
    use common::faults::Op;
    let (root, admin) = store().await;
    let (ana, faults) = watched_analyst(&root).await;
    let rows = |om: Omega| async move { count(&om, "SELECT count(*) FROM t").await };
    // a new grant makes the next reload read the settings document again
    run(&admin, "GRANT read ON BUCKET default TO auditor").await;
    // reload A has listed and read the policies; it waits at the settings
    let (reached, release) =
        faults.hold_next(|op, p| op == Op::Get && p.as_ref().contains("/settings/"));
    let a = tokio::spawn(rows(ana.clone()));
    reached.notified().await;
    run(&admin, "DROP POLICY low ON t").await;
    run(&admin, "CREATE POLICY lower ON t TO analyst USING (id < 7)").await;
    // B asks after the change, while A's reload is still under way
    let b = tokio::spawn(rows(ana.clone()));
    release.notify_one();
    // A may plan with its own reload (the old filter) or with B's, if B's
    // finished first (the cache is shared): never anything older
    let a = a.await.unwrap();
    assert!(a == 4 || a == 7, "{a}");
    assert_eq!(b.await.unwrap(), 7, "B must not take A's older reload");
}

/// A reload lists the policies of the buckets the last one found while it
/// lists the buckets; a bucket made since is listed too, before the
/// statement is planned: its grants and row filters apply at once.
#[tokio::test]
async fn the_policies_of_a_bucket_made_since_the_last_statement_apply_to_the_next() {
    let (root, admin) = store().await;
    let ana = analyst_client(&root).await;
    assert_eq!(count(&ana, "SELECT count(*) FROM t").await, 4);
    let late = admin.bucket("late").unwrap();
    run(
        &late,
        "CREATE TABLE x AS SELECT v AS id FROM generate_series(1, 10) t(v)",
    )
    .await;
    run(&late, "CREATE POLICY few ON x TO analyst USING (id < 3)").await;
    run(&admin, "GRANT read ON BUCKET late TO analyst").await;
    assert_eq!(
        count(&ana, "SELECT count(*) FROM omega.late.x").await,
        2,
        "the new bucket's grant and row filter apply"
    );
}

/// While nobody changes a policy, a statement reads the root's access mark
/// and lists no bucket's policies; a policy document an admin writes
/// through the store API itself (not a policy statement) touches the mark
/// and applies to another client's next statement.
#[tokio::test]
async fn a_statement_reads_only_the_access_mark_until_a_policy_changes() {
    let (root, admin) = store().await;
    let (ana, faults) = watched_analyst(&root).await;

    let policy_records = |p: &object_store::path::Path| {
        let p = p.as_ref();
        p.contains("/policies/") || p.contains("/settings/")
    };
    faults.count(move |_, p| policy_records(p));
    assert_eq!(count(&ana, "SELECT count(*) FROM t").await, 4);
    assert_eq!(faults.calls(), 0, "an unchanged policy was listed or read");
    faults.count(|_, p| p.as_ref().ends_with("_system/marks/access"));
    assert_eq!(count(&ana, "SELECT count(*) FROM t").await, 4);
    assert!(faults.calls() >= 1, "the statement did not read the mark");

    let doc = serde_json::json!({"row_filters": [
        {"name": "lower", "role": "analyst", "predicate": "id < 2"}
    ]});
    admin
        .store("policies")
        .unwrap()
        .put(doc, "t", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        count(&ana, "SELECT count(*) FROM t").await,
        2,
        "the policy written through the store applies"
    );
}

/// A policy changed behind omegastore's back (its record written, the
/// access mark left as it was) applies once the policies are a second old;
/// that full reload runs beside statements: a statement does not wait for
/// its listings.
#[tokio::test]
async fn a_change_that_left_the_mark_applies_within_a_second_and_no_statement_waits_for_it() {
    use common::faults::Op;
    use object_store::ObjectStoreExt;
    use omegastore::sql::policies::FULL_RELOAD_AFTER;
    use std::time::{Duration, Instant};
    let (root, admin) = store().await;
    let (ana, faults) = watched_analyst(&root).await;

    let objects = omegastore::store::Root::open(&root.url)
        .unwrap()
        .object_store();
    let mark = store_path(&root.url, &["_system", "marks", "access"]);
    let before = objects.get(&mark).await.unwrap().bytes().await.unwrap();
    run(&admin, "DROP POLICY low ON t").await;
    run(&admin, "CREATE POLICY lower ON t TO analyst USING (id < 2)").await;
    objects
        .put(&mark, object_store::PutPayload::from(before))
        .await
        .unwrap();

    tokio::time::sleep(FULL_RELOAD_AFTER).await;
    let (reached, release) =
        faults.hold_next(|op, p| op == Op::List && p.as_ref().contains("/policies"));
    let planned = tokio::time::timeout(
        Duration::from_secs(20),
        count(&ana, "SELECT count(*) FROM t"),
    )
    .await
    .expect("a statement waited for the background reload");
    assert_eq!(planned, 4, "the statement ran on the policies it had");
    tokio::time::timeout(Duration::from_secs(20), reached.notified())
        .await
        .expect("no reload began once the policies were a second old");
    release.notify_one();
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(&ana, "SELECT count(*) FROM t").await != 2 {
        assert!(Instant::now() < deadline, "the change never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The object-store path of `parts` under the test root.
fn store_path(url: &str, parts: &[&str]) -> object_store::path::Path {
    let root = omegastore::store::Root::open(url).unwrap();
    let base = root.url().to_file_path().unwrap();
    let mut file = base;
    for p in parts {
        file.push(p);
    }
    object_store::path::Path::from_filesystem_path(file).unwrap()
}
