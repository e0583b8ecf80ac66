//! The memory cache of hot tables (`ALTER TABLE t SET (cache = 'memory')`):
//! the same answers as the Parquet scan, a new version replaces the old one,
//! the budget holds, and what is held shows in `omega.system.cache` only to
//! those who may read it.

mod common;

use arrow::util::pretty::pretty_format_batches;
use common::{exec, local, scalar};
use omegastore::Omega;

const MIB: u64 = 1 << 20;

/// Every row of a query's answer, as text.
async fn answer(om: &Omega, sql: &str) -> String {
    let batches = om
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pretty_format_batches(&batches).unwrap().to_string()
}

/// The physical plan of a query, as EXPLAIN shows it.
async fn plan(om: &Omega, sql: &str) -> String {
    answer(om, &format!("EXPLAIN {sql}")).await
}

/// `(name, version, state, rows)` of each entry of `omega.system.cache`.
async fn held(om: &Omega) -> Vec<(String, i64, String, i64)> {
    let batches = om
        .sql("SELECT name, version, state, rows FROM omega.system.cache ORDER BY name")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut out = Vec::new();
    for b in batches {
        let text = |i: usize| {
            arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8).unwrap()
        };
        let (n, v, s, r) = (text(0), text(1), text(2), text(3));
        let s_ = |a: &arrow::array::ArrayRef, r: usize| {
            a.as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap()
                .value(r)
                .to_string()
        };
        for row in 0..b.num_rows() {
            out.push((
                s_(&n, row),
                s_(&v, row).parse().unwrap(),
                s_(&s, row),
                s_(&r, row).parse().unwrap(),
            ));
        }
    }
    out
}

async fn store(budget: u64) -> (common::TestRoot, Omega) {
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    om.memory_cache().set_budget(budget);
    exec(
        &om,
        "CREATE TABLE trips AS SELECT value AS id, value % 7 AS zone, \
         'driver-' || (value % 13) AS driver, CAST(value AS DOUBLE) / 8 AS fare \
         FROM generate_series(1, 20000)",
    )
    .await;
    exec(
        &om,
        "CREATE TABLE zones AS SELECT value AS zone, 'zone-' || value AS label \
         FROM generate_series(0, 6)",
    )
    .await;
    (root, om)
}

const QUERIES: &[&str] = &[
    "SELECT count(*) FROM trips WHERE fare > 100 AND driver = 'driver-3'",
    "SELECT zone, count(*) AS n, sum(fare) AS fares, min(driver) AS first FROM trips GROUP BY zone ORDER BY zone",
    "SELECT t.zone, z.label, count(*) FROM trips t JOIN zones z ON t.zone = z.zone \
     GROUP BY t.zone, z.label ORDER BY t.zone",
    "SELECT id, fare FROM trips ORDER BY fare DESC, id LIMIT 5",
    "SELECT * FROM trips WHERE id = 4242",
    "SELECT count(*) FROM trips",
    // across a batch boundary (batches hold up to 8192 rows)
    "SELECT count(*), sum(fare) FROM trips WHERE id BETWEEN 8000 AND 8400 AND zone <> 3",
    "SELECT count(*) FROM trips WHERE driver IS NULL OR id > 19990",
];

/// Batches a plan's in-memory scans read (the sums of `partition_sizes`).
fn batches_read(plan: &str) -> usize {
    plan.match_indices("partition_sizes=[")
        .map(|(i, m)| {
            let rest = &plan[i + m.len()..];
            rest[..rest.find(']').unwrap()]
                .split(',')
                .map(|n| n.trim().parse::<usize>().unwrap())
                .sum::<usize>()
        })
        .sum()
}

#[tokio::test]
async fn a_cached_table_answers_as_its_parquet_files_do() {
    let (_root, om) = store(256 * MIB).await;
    let mut from_parquet = Vec::new();
    for q in QUERIES {
        from_parquet.push(answer(&om, q).await);
    }
    assert!(held(&om).await.is_empty(), "nothing is cached unmarked");
    exec(&om, "ALTER TABLE trips SET (cache = 'memory')").await;
    exec(&om, "ALTER TABLE zones SET (cache = 'memory')").await;
    // marking loads the table at once
    let entries = held(&om).await;
    assert_eq!(
        entries,
        vec![
            ("trips".to_string(), 2, "held".to_string(), 20000),
            ("zones".to_string(), 2, "held".to_string(), 7),
        ]
    );
    for (q, expected) in QUERIES.iter().zip(&from_parquet) {
        assert_eq!(&answer(&om, q).await, expected, "{q}");
    }
    // served from memory, not from Parquet files
    let p = plan(&om, QUERIES[0]).await;
    assert!(
        !p.contains("ParquetSource") && !p.contains("file_groups"),
        "{p}"
    );
    assert!(p.contains("partition_sizes"), "{p}");
    // a lookup on the (sorted) id reads one batch of the table's several
    let all = batches_read(&plan(&om, "SELECT sum(fare) FROM trips").await);
    let lookup = plan(&om, QUERIES[4]).await;
    assert!(all > 1, "{all} batches");
    assert_eq!(batches_read(&lookup), 1, "{lookup}");
    let hits = scalar(
        &om,
        "SELECT hits FROM omega.system.cache WHERE name = 'trips'",
    )
    .await;
    assert!(hits >= QUERIES.len() as i64, "{hits}");
    // another session of the same store (a server's per-key session) shares it
    exec(&om, "GRANT read ON BUCKET default TO analyst").await;
    let other = om.with_identity("ana", &["analyst"], false).unwrap();
    assert_eq!(answer(&other, QUERIES[1]).await, from_parquet[1]);
    let after = scalar(
        &om,
        "SELECT hits FROM omega.system.cache WHERE name = 'trips'",
    )
    .await;
    assert_eq!(after, hits + 1, "ana's query was served by the same entry");
}

#[tokio::test]
async fn strings_with_few_values_are_held_as_dictionaries() {
    let (_root, om) = store(256 * MIB).await;
    // the same shape as trips, but every driver distinct (as short: a view
    // of 16 bytes a row either way)
    exec(
        &om,
        "CREATE TABLE unique_trips AS SELECT id, zone, 'd-' || id AS driver, fare FROM trips",
    )
    .await;
    let filter = "SELECT count(*) FROM TABLE WHERE driver = 'driver-3' OR driver = 'd-3'";
    let mut from_parquet = Vec::new();
    for t in ["trips", "unique_trips"] {
        from_parquet.push(answer(&om, &filter.replace("TABLE", t)).await);
        exec(&om, &format!("ALTER TABLE {t} SET (cache = 'memory')")).await;
    }
    let bytes = |name: &str| {
        let om = &om;
        let sql = format!("SELECT bytes FROM omega.system.cache WHERE name = '{name}'");
        async move { scalar(om, &sql).await }
    };
    let (few, unique) = (bytes("trips").await, bytes("unique_trips").await);
    // 8 + 8 + 16 + 8 bytes a row, against 8 + 8 + 4 + 8 with the dictionary
    assert!(
        few * 10 < unique * 8,
        "trips {few} B, unique_trips {unique} B"
    );

    // a string filter is decided on the dictionary; the column keeps its type
    let p = plan(&om, &filter.replace("TABLE", "trips")).await;
    assert!(p.contains("DictionaryFilterExec: driver@"), "{p}");
    assert!(p.contains("partition_sizes"), "{p}");
    let p = plan(&om, &filter.replace("TABLE", "unique_trips")).await;
    assert!(!p.contains("DictionaryFilterExec"), "{p}");
    for (t, expected) in ["trips", "unique_trips"].iter().zip(&from_parquet) {
        assert_eq!(&answer(&om, &filter.replace("TABLE", t)).await, expected);
        assert_eq!(
            answer(
                &om,
                &format!("SELECT arrow_typeof(driver) AS t FROM {t} LIMIT 1")
            )
            .await,
            answer(
                &om,
                &format!("SELECT arrow_typeof(driver) AS t FROM \"{t}@1\" LIMIT 1")
            )
            .await,
        );
    }
    // every row comes back as it was stored, in any query shape
    let rows = "SELECT driver, count(*) AS n, min(id) AS lo, max(id) AS hi FROM trips \
                WHERE driver IN ('driver-1', 'driver-12') OR driver LIKE '%-7' \
                GROUP BY driver ORDER BY driver";
    assert_eq!(
        answer(&om, rows).await,
        answer(&om, &rows.replace("trips", "\"trips@1\"")).await
    );

    // a GROUP BY of the held dictionary groups its 4-byte codes, the codes
    // indexing the partial aggregate's groups (no hashing); the same query
    // over the files (a pinned version is read from Parquet) reads the
    // column as the dictionary the files store and groups its codes too,
    // and both give the same answer
    let grouped = "SELECT driver, count(*) AS n, sum(fare) AS fares, max(id) AS last \
                   FROM trips GROUP BY driver ORDER BY driver";
    let from_files = grouped.replace("trips", "\"trips@1\"");
    let p = plan(&om, grouped).await;
    assert!(
        p.contains("EncodeGroupsExec")
            && p.contains("DecodeGroupsExec")
            && p.contains("DenseAggregateExec: mode=Partial, gby=[driver@1 as driver]"),
        "{p}"
    );
    let p = plan(&om, &from_files).await;
    assert!(
        p.contains("EncodeGroupsExec") && p.contains("DataSourceExec"),
        "{p}"
    );
    assert_eq!(answer(&om, grouped).await, answer(&om, &from_files).await);
}

/// The mode of each hash join of a plan, in plan order.
fn join_modes(plan: &str) -> Vec<&str> {
    plan.match_indices("HashJoinExec: mode=")
        .map(|(i, m)| {
            let rest = &plan[i + m.len()..];
            &rest[..rest.find(',').unwrap()]
        })
        .collect()
}

#[tokio::test]
async fn caching_a_dimension_keeps_its_join_collected() {
    // a dimension of 100,000 rows: its Parquet files are well under a MiB,
    // its decoded batches (8-byte keys, 4-byte dictionary codes) over one
    let (_root, om) = store(256 * MIB).await;
    exec(
        &om,
        "CREATE TABLE customers AS SELECT value AS customer, \
         CASE value % 3 WHEN 0 THEN 'retail' WHEN 1 THEN 'corporate' ELSE 'public' END AS segment \
         FROM generate_series(0, 99999)",
    )
    .await;
    exec(
        &om,
        "CREATE TABLE orders AS SELECT value AS id, (value * 7919) % 100000 AS customer, \
         CAST(value % 1000 AS DOUBLE) AS amount FROM generate_series(0, 299999)",
    )
    .await;
    let join = "SELECT c.segment, count(*) AS n, sum(o.amount) AS total \
                FROM orders o JOIN customers c ON o.customer = c.customer \
                GROUP BY c.segment ORDER BY c.segment";
    let from_parquet = answer(&om, join).await;
    let parquet_plan = plan(&om, join).await;
    assert_eq!(join_modes(&parquet_plan), ["CollectLeft"], "{parquet_plan}");
    for t in ["customers", "orders"] {
        exec(&om, &format!("ALTER TABLE {t} SET (cache = 'memory')")).await;
    }
    // the dimension is built once and probed by every partition of the
    // cached fact table; it is not hash-repartitioned with it (which costs
    // more than the join itself)
    let cached_plan = plan(&om, join).await;
    assert!(cached_plan.contains("partition_sizes"), "{cached_plan}");
    assert_eq!(join_modes(&cached_plan), ["CollectLeft"], "{cached_plan}");
    assert!(
        !cached_plan.contains("partitioning=Hash([customer@"),
        "{cached_plan}"
    );
    assert_eq!(answer(&om, join).await, from_parquet);
}

#[tokio::test]
async fn a_new_version_replaces_the_cached_one() {
    let (_root, om) = store(256 * MIB).await;
    exec(&om, "ALTER TABLE trips SET (cache = 'memory')").await;
    assert_eq!(scalar(&om, "SELECT count(*) FROM trips").await, 20000);
    exec(&om, "INSERT INTO trips VALUES (30000, 1, 'driver-x', 1.5)").await;
    // the next query sees the new row: an entry never outlives its version
    assert_eq!(scalar(&om, "SELECT count(*) FROM trips").await, 20001);
    assert_eq!(
        scalar(&om, "SELECT count(*) FROM trips WHERE driver = 'driver-x'").await,
        1
    );
    assert_eq!(
        held(&om).await,
        vec![("trips".to_string(), 3, "held".to_string(), 20001)]
    );
    // a read of an older version is served from Parquet and keeps the latest held
    assert_eq!(scalar(&om, "SELECT count(*) FROM \"trips@1\"").await, 20000);
    assert_eq!(
        held(&om).await,
        vec![("trips".to_string(), 3, "held".to_string(), 20001)]
    );
    // the mark stays with the dataset across versions
    let meta = om.datasets().metadata("trips").await.unwrap();
    assert_eq!(meta.attributes["cache"], "memory");
    // a DELETE is a new version too
    exec(&om, "DELETE FROM trips WHERE zone = 1").await;
    let left = scalar(&om, "SELECT count(*) FROM trips").await;
    assert_eq!(
        scalar(&om, "SELECT count(*) FROM trips WHERE zone = 1").await,
        0
    );
    assert_eq!(held(&om).await[0].3, left);
}

#[tokio::test]
async fn the_budget_bounds_what_is_held() {
    let (_root, om) = store(256 * MIB).await;
    exec(&om, "ALTER TABLE trips SET (cache = 'memory')").await;
    let trips_bytes = om.memory_cache().used();
    assert!(trips_bytes > 0);
    // room for trips but not for trips and a second table of the same size
    om.memory_cache().set_budget(trips_bytes + trips_bytes / 2);
    exec(&om, "CREATE TABLE trips2 AS SELECT * FROM trips").await;
    exec(&om, "ALTER TABLE trips2 SET (cache = 'memory')").await;
    // the least recently read (trips) made room
    let names: Vec<String> = held(&om).await.into_iter().map(|e| e.0).collect();
    assert_eq!(names, vec!["trips2"]);
    assert!(om.memory_cache().used() <= om.memory_cache().budget());
    assert_eq!(scalar(&om, "SELECT count(*) FROM trips").await, 20000);
    let names: Vec<String> = held(&om).await.into_iter().map(|e| e.0).collect();
    assert_eq!(names, vec!["trips"], "reading trips brings it back");
    assert!(om.memory_cache().used() <= om.memory_cache().budget());

    // a version larger than the whole budget is read from Parquet
    om.memory_cache().set_budget(trips_bytes / 4);
    let expected = answer(&om, QUERIES[1]).await;
    exec(&om, "CREATE TABLE big AS SELECT * FROM trips").await;
    exec(&om, "ALTER TABLE big SET (cache = 'memory')").await;
    assert_eq!(
        answer(&om, &QUERIES[1].replace("trips", "big")).await,
        expected
    );
    let entries = held(&om).await;
    assert!(
        entries.contains(&("big".to_string(), 2, "too large".to_string(), 0)),
        "{entries:?}"
    );
    assert!(om.memory_cache().used() <= om.memory_cache().budget());
    let p = plan(&om, "SELECT count(*) FROM big WHERE fare > 1").await;
    assert!(
        p.contains("ParquetSource") || p.contains("file_groups"),
        "{p}"
    );
}

#[tokio::test]
async fn unmarking_or_dropping_frees_the_table() {
    let (_root, om) = store(256 * MIB).await;
    exec(&om, "ALTER TABLE trips SET (cache = 'memory')").await;
    exec(&om, "ALTER TABLE zones SET (cache = 'memory')").await;
    exec(&om, "ALTER TABLE trips SET (cache = 'none')").await;
    let names: Vec<String> = held(&om).await.into_iter().map(|e| e.0).collect();
    assert_eq!(names, vec!["zones"]);
    assert_eq!(scalar(&om, "SELECT count(*) FROM trips").await, 20000);
    assert_eq!(
        held(&om).await.len(),
        1,
        "an unmarked table is not loaded again"
    );
    exec(&om, "DROP TABLE zones").await;
    assert!(held(&om).await.is_empty());
    assert_eq!(om.memory_cache().used(), 0);
}

#[tokio::test]
async fn a_process_without_a_budget_caches_nothing() {
    let (_root, om) = store(0).await;
    exec(&om, "ALTER TABLE trips SET (cache = 'memory')").await;
    assert_eq!(scalar(&om, "SELECT count(*) FROM trips").await, 20000);
    assert!(held(&om).await.is_empty());
    let p = plan(&om, "SELECT count(*) FROM trips WHERE fare > 1").await;
    assert!(p.contains("file_groups"), "{p}");
}

#[tokio::test]
async fn what_is_held_shows_only_to_who_may_read_it() {
    let (_root, om) = store(256 * MIB).await;
    exec(&om, "ALTER TABLE trips SET (cache = 'memory')").await;
    exec(&om, "GRANT read ON BUCKET other TO analyst").await;
    let ana = om.with_identity("ana", &["analyst"], false).unwrap();
    assert!(
        held(&ana).await.is_empty(),
        "ana may not read default.trips"
    );
    let bound = om
        .bucket("other")
        .unwrap()
        .bound_to_bucket("other")
        .unwrap();
    assert!(held(&bound).await.is_empty());
    assert_eq!(held(&om).await.len(), 1);
}

#[tokio::test]
async fn bad_table_settings_are_refused_and_change_nothing() {
    let (_root, om) = store(256 * MIB).await;
    exec(&om, "CREATE VIEW v AS SELECT * FROM trips").await;
    exec(&om, "GRANT read ON BUCKET default TO analyst").await;
    let ana = om.with_identity("ana", &["analyst"], false).unwrap();
    let cases: &[(&Omega, &str, &str)] = &[
        (
            &om,
            "ALTER TABLE trips SET (cache = 'disk')",
            "'memory' or 'none'",
        ),
        (
            &om,
            "ALTER TABLE trips SET (colour = 'red')",
            "unknown table option 'colour'",
        ),
        (
            &om,
            "ALTER TABLE trips ADD COLUMN x INT",
            "supports only SET",
        ),
        (&om, "ALTER TABLE nowhere SET (cache = 'memory')", "nowhere"),
        (&om, "ALTER TABLE v SET (cache = 'memory')", "sql.view"),
        (&ana, "ALTER TABLE trips SET (cache = 'memory')", "write"),
    ];
    for (who, sql, says) in cases {
        let e = match who.sql(sql).await {
            Ok(df) => df.collect().await.err().map(|e| e.to_string()),
            Err(e) => Some(e.to_string()),
        }
        .unwrap_or_else(|| panic!("{sql} was accepted"));
        assert!(e.contains(says), "{sql}: {e}");
    }
    assert_eq!(om.datasets().metadata("trips").await.unwrap().version, 1);
    assert!(held(&om).await.is_empty());
}

#[tokio::test]
async fn a_session_bound_to_its_bucket_marks_its_tables() {
    let (_root, om) = store(256 * MIB).await;
    let bound = om
        .bucket("other")
        .unwrap()
        .bound_to_bucket("other")
        .unwrap();
    exec(
        &bound,
        "CREATE TABLE t AS SELECT value AS x FROM generate_series(1, 10)",
    )
    .await;
    // statements that answer with a count answer in a bound session too
    exec(&bound, "ALTER TABLE t SET (cache = 'memory')").await;
    exec(&bound, "INSERT INTO t VALUES (11)").await;
    assert_eq!(scalar(&bound, "SELECT count(*) FROM t").await, 11);
    assert_eq!(
        held(&bound).await,
        vec![("t".to_string(), 3, "held".to_string(), 11)]
    );
    // as does the private session a server runs each request in
    let request = bound.private_session().unwrap();
    exec(&request, "CREATE TABLE u AS SELECT * FROM t").await;
    exec(&request, "ALTER TABLE u SET (cache = 'memory')").await;
    assert_eq!(scalar(&request, "SELECT count(*) FROM u").await, 11);
    // and still reads no other bucket
    for (om, sql) in [
        (&bound, "SELECT count(*) FROM default.trips"),
        (&request, "SELECT count(*) FROM default.trips"),
        (&request, "SELECT count(*) FROM omega.default.trips"),
    ] {
        let e = match om.sql(sql).await {
            Ok(df) => df.collect().await.err().map(|e| e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        let e = e.unwrap_or_else(|| panic!("{sql} was answered"));
        assert!(e.contains("bound to bucket 'other'"), "{sql}: {e}");
    }
}
