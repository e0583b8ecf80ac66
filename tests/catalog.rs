//! The listing index (`<bucket>/<store>/index.json`): a listing of
//! unchanged objects reads one file besides the listing, and the index is a
//! cache only: whatever happens to it or behind its back, a listing says
//! what the records say.

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

fn count_record_reads(faults: &FaultStore) {
    faults.fail_nth(usize::MAX, Fault::Error, |op, path| {
        op == Op::Get && path.as_ref().contains("/datasets/meta/")
    });
}

#[tokio::test]
async fn a_listing_of_unchanged_objects_reads_no_record_and_sees_every_change() {
    for root in roots() {
        let (om, faults) = faulty(&root.url).await;
        for i in 0..20 {
            put(&om, &format!("doc/{i:02}"), i).await;
        }
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
        let index = object_store::path::Path::from_iter(
            Root::open(&root.url)
                .unwrap()
                .url()
                .path()
                .split('/')
                .filter(|s| !s.is_empty())
                .chain(["default", "datasets", "index.json"]),
        );
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
