//! Crash loops: `om` killed (aborted at a failpoint, as SIGKILL would) at
//! every step of put, append, overwrite, drop and optimize, chosen by a
//! seeded generator; after each kill the store opens, lists, reads every
//! object whole, and shows either the state before the command or the state
//! after it, never a mix. `OMEGA_CRASH_ITERATIONS` runs more (the README's
//! `--long` variant).

mod common;

use std::io::Write;

use omegastore::{GetOptions, ListOptions, Omega};

use common::{TestRoot, total_rows};

/// What the store should hold: rows of the table `t`, the document `doc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    table: Option<usize>,
    doc: Option<i64>,
}

/// A small deterministic generator (xorshift), so a failing seed replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// What the store holds, and the rows another Delta reader saw in `t`
/// before the store was read.
async fn observe(root: &TestRoot) -> (State, Option<usize>) {
    let om = Omega::open(&root.url).await.expect("the store opens");
    let ds = om.datasets();
    let names: Vec<String> = ds
        .list(None, &ListOptions::default())
        .await
        .expect("the store lists")
        .into_iter()
        .map(|m| m.name)
        .collect();
    let store = omegastore::store::Root::open(&root.url)
        .unwrap()
        .object_store();
    let (table, delta_reader) = if names.iter().any(|n| n == "t") {
        let meta = ds.metadata("t").await.expect("the record reads");
        // what DuckDB or Spark would see before omegastore touched the store
        let early = common::delta_reader_rows(store.clone(), &meta.uri).await;
        let b = ds
            .get_batches("t", GetOptions::default())
            .await
            .expect("the table reads whole");
        let rows = total_rows(&b);
        // reading rolled forward a commit a crash left unpublished
        assert_eq!(
            common::delta_reader_rows(store, &meta.uri).await,
            Some(rows),
            "another Delta reader sees the store's rows after a read"
        );
        (Some(rows), early)
    } else {
        (None, None)
    };
    let doc = if names.iter().any(|n| n == "doc") {
        let v = ds.get_document("doc").await.expect("the document reads");
        Some(v["v"].as_i64().unwrap())
    } else {
        None
    };
    (State { table, doc }, delta_reader)
}

fn csv(dir: &std::path::Path, rows: usize) -> String {
    let path = dir.join(format!("rows-{rows}.csv"));
    if !path.exists() {
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(f, "id,name").unwrap();
        for i in 0..rows {
            writeln!(f, "{i},n{i}").unwrap();
        }
    }
    path.display().to_string()
}

async fn crash_loop(root: TestRoot, seed: u64, iterations: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed);
    let mut state = State {
        table: None,
        doc: None,
    };
    let mut crashes = 0;
    for i in 0..iterations {
        let rows = 1 + (rng.next() % 5) as usize;
        let value = (rng.next() % 1000) as i64;
        let doc_file = dir.path().join(format!("doc-{i}.json"));
        std::fs::write(&doc_file, format!("{{\"v\": {value}}}")).unwrap();
        let ops = [
            "append",
            "overwrite",
            "doc",
            "drop-t",
            "drop-doc",
            "optimize",
        ];
        let op = *rng.pick(&ops);
        let (args, after): (Vec<String>, State) = match op {
            "append" => (
                vec![
                    "datasets".into(),
                    "put".into(),
                    csv(dir.path(), rows),
                    "t".into(),
                ],
                State {
                    table: Some(state.table.unwrap_or(0) + rows),
                    ..state
                },
            ),
            "overwrite" => (
                vec![
                    "datasets".into(),
                    "put".into(),
                    csv(dir.path(), rows),
                    "t".into(),
                    "--mode".into(),
                    "overwrite".into(),
                ],
                State {
                    table: Some(rows),
                    ..state
                },
            ),
            "doc" => (
                vec![
                    "datasets".into(),
                    "put".into(),
                    doc_file.display().to_string(),
                    "doc".into(),
                ],
                State {
                    doc: Some(value),
                    ..state
                },
            ),
            "drop-t" => (
                vec![
                    "datasets".into(),
                    "drop".into(),
                    "t".into(),
                    "--force".into(),
                ],
                State {
                    table: None,
                    ..state
                },
            ),
            "drop-doc" => (
                vec![
                    "datasets".into(),
                    "drop".into(),
                    "doc".into(),
                    "--force".into(),
                ],
                State { doc: None, ..state },
            ),
            _ => {
                if state.table.is_none() {
                    continue;
                }
                (
                    vec!["datasets".into(), "optimize".into(), "t".into()],
                    state,
                )
            }
        };
        let points = match op {
            "drop-t" | "drop-doc" => vec!["drop-after-tombstone", "drop-after-data", "none"],
            "doc" => vec!["after-data", "after-record", "none"],
            _ => vec!["after-data", "after-stage", "after-record", "none"],
        };
        let point = *rng.pick(&points);
        let out = common::om(&root)
            .args(&args)
            .env("OMEGA_FAILPOINT", point)
            .output()
            .unwrap();
        let crashed = out.status.code().is_none() || out.status.code() == Some(134);
        let (seen, delta_reader) = observe(&root).await;
        let context = format!(
            "seed {seed}, step {i}: {op} crashed at {point}: {crashed}; before {state:?}, after {after:?}, seen {seen:?}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if crashed {
            crashes += 1;
            if point == "after-stage" && seen.table.is_some() {
                // the staged commit never reached the Delta log
                assert_eq!(delta_reader, state.table, "{context}: another Delta reader");
            }
            let expected = match point {
                "after-record" | "drop-after-tombstone" | "drop-after-data" => after,
                _ => state,
            };
            assert_eq!(seen, expected, "{context}");
        } else {
            assert!(out.status.success(), "{context}");
            assert_eq!(seen, after, "{context}");
        }
        state = seen;
    }
    assert!(
        crashes > iterations / 3,
        "only {crashes} of {iterations} steps crashed"
    );
    // what the crashes left is garbage only: a gc of it keeps every object whole
    let out = common::om(&root)
        .args(["gc", "--older-than", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(observe(&root).await.0, state, "after gc");
}

fn iterations(default: usize) -> usize {
    std::env::var("OMEGA_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn om_killed_at_every_commit_step_on_a_local_root() {
    crash_loop(common::local(), 0x5eed_0001, iterations(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn om_killed_at_every_commit_step_on_s3() {
    let Some(root) = common::s3() else {
        return; // no moto server here (.ci/run requires it)
    };
    crash_loop(root, 0x5eed_0002, iterations(200) / 5).await;
}
