//! The listing index (`<bucket>/<store>/index.json`) and the change journal
//! (`<bucket>/<store>/changes/`): a listing of unchanged objects reads the
//! index and lists the journal, never the records, and the index is a cache
//! only: whatever happens to it or behind its back (another client's
//! writes, a commit in flight, an index written late by a listing that lost
//! a race), a listing says what the records say.

mod common;

use object_store::ObjectStoreExt;
use omegastore::store::Root;
use omegastore::{ListOptions, Omega, PutOptions};
use serde_json::json;

use common::faults::{Fault, FaultStore, Op, faulty};
use common::roots;

/// `name: attributes.v` of every listed object, sorted.
async fn listing(om: &Omega) -> Vec<String> {
    let mut out: Vec<String> = om
        .datasets()
        .list(None, &ListOptions::default())
        .await
        .unwrap()
        .into_iter()
        .map(|m| format!("{}@{}: {}", m.name, m.version, m.attributes["v"]))
        .collect();
    out.sort();
    out
}

async fn put(om: &Omega, name: &str, v: i64) {
    let opts = PutOptions {
        attributes: json!({ "v": v }).as_object().cloned(),
        ..Default::default()
    };
    om.datasets()
        .put(json!({ "v": v }), name, opts)
        .await
        .unwrap();
}

/// `doc/00`, `doc/01`, … with `v` their number.
async fn put_docs(om: &Omega, n: i64) {
    for i in 0..n {
        put(om, &format!("doc/{i:02}"), i).await;
    }
}

fn count_record_reads(faults: &FaultStore) {
    faults.fail_nth(usize::MAX, Fault::Error, |op, path| {
        op == Op::Get && path.as_ref().contains("/datasets/meta/")
    });
}

#[tokio::test]
async fn a_listing_of_unchanged_objects_reads_no_record_and_sees_every_change() {
    for root in roots() {
        let (om, faults) = faulty(&root.url).await;
        put_docs(&om, 20).await;
        let first = listing(&om).await;
        assert_eq!(first.len(), 20, "{}", root.kind);

        count_record_reads(&faults);
        assert_eq!(listing(&om).await, first, "{}", root.kind);
        assert_eq!(faults.calls(), 0, "{}: records read again", root.kind);

        // changes by another client, behind the index's back
        let other = Omega::open(&root.url).await.unwrap();
        put(&other, "doc/03", 103).await;
        other.datasets().drop("doc/04", false).await.unwrap();
        put(&other, "doc/99", 99).await;
        count_record_reads(&faults);
        let now = listing(&om).await;
        assert_eq!(
            faults.calls(),
            2,
            "{}: only the changed heads are read",
            root.kind
        );
        assert_eq!(now.len(), 20, "{}", root.kind);
        assert!(now.contains(&"doc/03@2: 103".to_string()), "{now:?}");
        assert!(now.contains(&"doc/99@1: 99".to_string()), "{now:?}");
        assert!(!now.iter().any(|l| l.starts_with("doc/04")), "{now:?}");

        // dropped (records purged) and put again: version 1 again, new content
        other.datasets().drop("doc/05", false).await.unwrap();
        put(&other, "doc/05", 505).await;
        let now = listing(&om).await;
        assert!(
            now.contains(&"doc/05@1: 505".to_string()),
            "{}: {now:?}",
            root.kind
        );
        assert_eq!(listing(&other).await, now, "{}", root.kind);
    }
}

#[tokio::test]
async fn a_damaged_or_unwritable_index_changes_no_listing() {
    for root in roots() {
        let (om, faults) = faulty(&root.url).await;
        for i in 0..5 {
            put(&om, &format!("d{i}"), i).await;
        }
        let expected = listing(&om).await;
        let store = Root::open(&root.url).unwrap().object_store();
        let index = store_path(&root.url, &["index.json"]);
        assert!(
            store.head(&index).await.is_ok(),
            "{}: the first listing writes the index",
            root.kind
        );
        for garbage in [
            &b"{not json"[..],
            b"",
            b"{\"format\":\"other\",\"entries\":{}}",
        ] {
            store
                .put(&index, object_store::PutPayload::from(garbage.to_vec()))
                .await
                .unwrap();
            assert_eq!(listing(&om).await, expected, "{}", root.kind);
        }
        // a root that refuses every write still lists (the index is not rewritten)
        store.delete(&index).await.unwrap();
        faults.fail_nth(1, Fault::Denied, |op, _| op == Op::Put);
        assert_eq!(listing(&om).await, expected, "{}", root.kind);
        faults.heal();
    }
}

/// The path of `file` in the `default/datasets` store of `root`.
fn store_path(root: &str, file: &[&str]) -> object_store::path::Path {
    object_store::path::Path::from_iter(
        Root::open(root)
            .unwrap()
            .url()
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .chain(["default", "datasets"])
            .chain(file.iter().copied()),
    )
}

#[tokio::test]
async fn a_listing_of_unchanged_objects_lists_no_record_directory() {
    for root in roots() {
        let (om, faults) = faulty(&root.url).await;
        put_docs(&om, 30).await;
        let first = listing(&om).await;

        faults.count(|_, path| path.as_ref().contains("/datasets/meta"));
        assert_eq!(listing(&om).await, first, "{}", root.kind);
        assert_eq!(
            faults.calls(),
            0,
            "{}: record directories listed or records read",
            root.kind
        );
        // the whole listing: the index read and the journal listed
        faults.count(|_, _| true);
        assert_eq!(listing(&om).await, first, "{}", root.kind);
        assert_eq!(faults.calls(), 2, "{}: requests of a listing", root.kind);
        faults.heal();
    }
}

#[tokio::test]
async fn an_index_older_than_a_change_does_not_hide_it() {
    for root in roots() {
        let om = Omega::open(&root.url).await.unwrap();
        for i in 0..5 {
            put(&om, &format!("d{i}"), i).await;
        }
        listing(&om).await;
        let store = Root::open(&root.url).unwrap().object_store();
        let index = store_path(&root.url, &["index.json"]);
        let stale = store.get(&index).await.unwrap().bytes().await.unwrap();

        put(&om, "d1", 11).await;
        om.datasets().drop("d2", false).await.unwrap();
        put(&om, "d9", 9).await;
        let expected = listing(&om).await;
        assert!(expected.contains(&"d1@2: 11".to_string()), "{expected:?}");
        assert!(
            !expected.iter().any(|l| l.starts_with("d2")),
            "{expected:?}"
        );

        // a listing that read the journal before these changes writes its
        // index last (or an old copy is restored): the changes stay listed
        store
            .put(&index, object_store::PutPayload::from(stale.clone()))
            .await
            .unwrap();
        assert_eq!(listing(&om).await, expected, "{}", root.kind);
        assert_eq!(
            listing(&Omega::open(&root.url).await.unwrap()).await,
            expected
        );
    }
}

#[tokio::test]
async fn a_commit_in_flight_during_a_listing_is_listed_once_it_lands() {
    for root in roots() {
        let (om, faults) = faulty(&root.url).await;
        put(&om, "a", 1).await;
        put(&om, "b", 1).await;
        let before = listing(&om).await;

        // version 2 of `a` is noted in the journal, its record held back
        let (reached, release) =
            faults.hold_next(|op, path| op == Op::Put && path.as_ref().contains("/datasets/meta/"));
        let writer = {
            let om = om.clone();
            tokio::spawn(async move { put(&om, "a", 2).await })
        };
        reached.notified().await;
        let reader = Omega::open(&root.url).await.unwrap();
        assert_eq!(
            listing(&reader).await,
            before,
            "{}: not committed yet",
            root.kind
        );
        release.notify_one();
        writer.await.unwrap();
        faults.heal();
        let after = listing(&reader).await;
        assert!(
            after.contains(&"a@2: 2".to_string()),
            "{}: the commit that landed after a listing read its marker: {after:?}",
            root.kind
        );

        // a commit whose record never lands (the writer died after its
        // note) changes nothing
        faults.fail_nth(1, Fault::Error, |op, path| {
            op == Op::Put && path.as_ref().contains("/datasets/meta/")
        });
        let opts = PutOptions::default();
        assert!(om.datasets().put(json!({"v": 3}), "b", opts).await.is_err());
        faults.heal();
        assert_eq!(listing(&reader).await, after, "{}", root.kind);
        put(&om, "b", 4).await;
        assert!(listing(&reader).await.contains(&"b@2: 4".to_string()));
    }
}

#[tokio::test]
async fn a_record_that_cannot_be_read_fails_the_rebuild_rather_than_hide_its_name() {
    for root in roots() {
        let (om, faults) = faulty(&root.url).await;
        put_docs(&om, 3).await;
        let expected = listing(&om).await;
        let store = Root::open(&root.url).unwrap().object_store();
        store
            .delete(&store_path(&root.url, &["index.json"]))
            .await
            .unwrap();
        // the index is rebuilt from the records; one read fails (not damage)
        faults.fail_nth(1, Fault::Error, |op, path| {
            op == Op::Get && path.as_ref().contains("/datasets/meta/")
        });
        assert!(
            om.datasets()
                .list(None, &ListOptions::default())
                .await
                .is_err(),
            "{}: a listing missing a name came back",
            root.kind
        );
        faults.heal();
        assert_eq!(listing(&om).await, expected, "{}", root.kind);
    }
}

#[tokio::test]
async fn a_change_noted_in_the_nested_layout_of_earlier_versions_is_listed() {
    use futures::TryStreamExt;
    for root in roots() {
        let (om, _faults) = faulty(&root.url).await;
        put_docs(&om, 3).await;
        assert_eq!(listing(&om).await.len(), 3, "{}", root.kind);

        // another client commits, and its note is moved to where omegastore
        // put notes before the journal was flat: one directory per name
        let other = Omega::open(&root.url).await.unwrap();
        put(&other, "doc/01", 101).await;
        let store = Root::open(&root.url).unwrap().object_store();
        let journal = store_path(&root.url, &["changes"]);
        let notes: Vec<_> = store
            .list(Some(&journal))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .unwrap();
        let flat: Vec<_> = notes
            .iter()
            .filter(|p| p.filename() == Some("doc=2F01@00000000000000000002.json"))
            .collect();
        assert_eq!(flat.len(), 1, "{}: the flat note: {notes:?}", root.kind);
        let file = flat[0].filename().unwrap().split_once('@').unwrap().1;
        let nested = journal.clone().join("doc=2F01").join(file);
        store.copy(flat[0], &nested).await.unwrap();
        store.delete(flat[0]).await.unwrap();

        let now = listing(&om).await;
        assert!(
            now.contains(&"doc/01@2: 101".to_string()),
            "{}: the nested note was not read: {now:?}",
            root.kind
        );
    }
}

/// A caller that has just read a dataset's record (the server's GET, to
/// learn its kind) resolves it as a table without reading the record
/// again; the record stands in only for the name it was read under.
#[tokio::test]
async fn a_table_resolved_with_the_record_just_read_does_not_read_it_again() {
    let root = common::local();
    let (om, faults) = faulty(&root.url).await;
    om.datasets()
        .put(common::sample_batch(0, 10), "t", PutOptions::default())
        .await
        .unwrap();
    let meta = om.datasets().metadata("t").await.unwrap();
    let record_reads = || {
        faults.count(|op, p| {
            matches!(op, Op::Get | Op::List) && p.as_ref().contains("datasets/meta/t")
        })
    };
    record_reads();
    let df = om.table_with_record("t", meta.clone()).await.unwrap();
    assert_eq!(df.count().await.unwrap(), 10);
    assert_eq!(faults.calls(), 0, "the record was read again");
    record_reads();
    om.table("t").await.unwrap();
    assert!(faults.calls() > 0, "a plain resolution reads the record");
    // the record of another name is not taken (policies go by the name a
    // table is resolved under): that name is read from the store
    assert!(
        om.table_with_record("u", meta.clone()).await.is_err(),
        "'u' does not exist"
    );
    om.datasets()
        .put(common::sample_batch(0, 3), "u", PutOptions::default())
        .await
        .unwrap();
    let u = om.table_with_record("u", meta).await.unwrap();
    assert_eq!(u.count().await.unwrap(), 3, "resolved with t's record");
}
