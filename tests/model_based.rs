//! Model-based test: random sequences of put, append, overwrite, document
//! put, drop, tag and reopen on one store, checked after every step against a
//! `BTreeMap` model of names → versions → contents (rows of a table, value of
//! a document), including every earlier version (`name@N`) and every tag.
//! proptest generates the sequences from a fixed seed and shrinks a failure
//! to the shortest sequence that shows it.

mod common;

use std::collections::BTreeMap;

use omegastore::{GetOptions, ListOptions, Omega, PutMode, PutOptions, StoreError};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};
use serde_json::json;

use common::{sample_batch, total_rows};

const NAMES: [&str; 3] = ["a", "b/c", "売上"];
const TAGS: [&str; 2] = ["prod", "dev"];

#[derive(Debug, Clone)]
enum Op {
    Put { name: usize, rows: usize },
    Overwrite { name: usize, rows: usize },
    PutDoc { name: usize, value: i64 },
    Drop { name: usize },
    Tag { name: usize, tag: usize },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..NAMES.len(), 1..6usize).prop_map(|(name, rows)| Op::Put { name, rows }),
        1 => (0..NAMES.len(), 1..6usize).prop_map(|(name, rows)| Op::Overwrite { name, rows }),
        2 => (0..NAMES.len(), 0..100i64).prop_map(|(name, value)| Op::PutDoc { name, value }),
        1 => (0..NAMES.len()).prop_map(|name| Op::Drop { name }),
        1 => (0..NAMES.len(), 0..TAGS.len()).prop_map(|(name, tag)| Op::Tag { name, tag }),
        1 => Just(Op::Reopen),
    ]
}

/// What a version holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Rows(usize),
    Doc(i64),
}

#[derive(Debug, Default, Clone)]
struct Object {
    versions: BTreeMap<u64, Content>,
    tags: BTreeMap<String, u64>,
}

impl Object {
    fn latest(&self) -> (u64, Content) {
        let (v, c) = self
            .versions
            .iter()
            .next_back()
            .expect("a live object has versions");
        (*v, *c)
    }
}

async fn read(om: &Omega, spec: &str, kind_is_table: bool) -> Content {
    if kind_is_table {
        let b = om
            .datasets()
            .get_batches(spec, GetOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{spec}: {e}"));
        Content::Rows(total_rows(&b))
    } else {
        let v = om
            .datasets()
            .get_document(spec)
            .await
            .unwrap_or_else(|e| panic!("{spec}: {e}"));
        Content::Doc(v["v"].as_i64().unwrap())
    }
}

async fn check(om: &Omega, model: &BTreeMap<String, Object>) {
    let listed: Vec<String> = om
        .datasets()
        .list(None, &ListOptions::default())
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    let expected: Vec<String> = model.keys().cloned().collect();
    assert_eq!(listed, expected);
    for (name, obj) in model {
        let (v, content) = obj.latest();
        assert_eq!(
            om.datasets().metadata(name).await.unwrap().version,
            v,
            "{name}"
        );
        for (version, c) in &obj.versions {
            let is_table = matches!(c, Content::Rows(_));
            assert_eq!(
                read(om, &format!("{name}@{version}"), is_table).await,
                *c,
                "{name}@{version}"
            );
        }
        assert_eq!(
            read(om, name, matches!(content, Content::Rows(_))).await,
            content,
            "{name}"
        );
        for (tag, tv) in &obj.tags {
            let c = obj.versions[tv];
            assert_eq!(
                read(om, &format!("{name}@{tag}"), matches!(c, Content::Rows(_))).await,
                c,
                "{name}@{tag}"
            );
        }
    }
}

async fn run(ops: Vec<Op>) {
    let root = common::local();
    let mut om = Omega::open(&root.url).await.unwrap();
    let mut model: BTreeMap<String, Object> = BTreeMap::new();
    for op in ops {
        let ds = om.datasets();
        match op {
            Op::Put { name, rows } | Op::Overwrite { name, rows } => {
                let n = NAMES[name];
                let overwrite = matches!(op, Op::Overwrite { .. });
                let opts = PutOptions {
                    mode: if overwrite {
                        PutMode::Overwrite
                    } else {
                        PutMode::Auto
                    },
                    ..Default::default()
                };
                let meta = ds.put(sample_batch(0, rows), n, opts).await.unwrap();
                let obj = model.entry(n.to_string()).or_default();
                // a table appends to a table; replaces anything else
                let now = match obj.versions.values().next_back() {
                    Some(Content::Rows(r)) if !overwrite => r + rows,
                    _ => rows,
                };
                let next = obj.versions.keys().next_back().map_or(1, |v| v + 1);
                assert_eq!(meta.version, next, "{n}");
                obj.versions.insert(next, Content::Rows(now));
            }
            Op::PutDoc { name, value } => {
                let n = NAMES[name];
                let meta = ds
                    .put(json!({ "v": value }), n, PutOptions::default())
                    .await
                    .unwrap();
                let obj = model.entry(n.to_string()).or_default();
                let next = obj.versions.keys().next_back().map_or(1, |v| v + 1);
                assert_eq!(meta.version, next, "{n}");
                obj.versions.insert(next, Content::Doc(value));
            }
            Op::Drop { name } => {
                let n = NAMES[name];
                match ds.drop(n, false).await {
                    Ok(d) => {
                        assert_eq!(d, vec![n.to_string()]);
                        assert!(
                            model.remove(n).is_some(),
                            "{n} dropped but not in the model"
                        );
                    }
                    Err(StoreError::NotFound { .. }) => assert!(!model.contains_key(n), "{n}"),
                    Err(e) => panic!("drop {n}: {e}"),
                }
            }
            Op::Tag { name, tag } => {
                let n = NAMES[name];
                match ds.tag(n, TAGS[tag], None).await {
                    Ok(m) => {
                        let obj = model.get_mut(n).expect("tagged a missing object");
                        assert_eq!(m.version, obj.latest().0);
                        obj.tags.insert(TAGS[tag].to_string(), m.version);
                    }
                    Err(StoreError::NotFound { .. }) => assert!(!model.contains_key(n)),
                    Err(e) => panic!("tag {n}: {e}"),
                }
            }
            Op::Reopen => om = Omega::open(&root.url).await.unwrap(),
        }
        check(&om, &model).await;
    }
}

proptest! {
    #![proptest_config(Config {
        // OMEGA_MODEL_CASES runs more (the README's long variant)
        cases: std::env::var("OMEGA_MODEL_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(24),
        rng_seed: RngSeed::Fixed(0x0e6a_570e),
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    })]

    #[test]
    fn the_store_behaves_like_its_model(ops in proptest::collection::vec(op(), 1..16)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(ops));
    }
}
