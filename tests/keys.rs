//! API keys: a key grants exactly its bucket and role, is shown once, is
//! stored only as a digest outside every bucket, and anything but a valid,
//! live key is refused (deny by default).

mod common;

use omegastore::store::keys::{KeyError, Keys};
use omegastore::{Omega, PutOptions};

use common::{exec as run, local, sample_batch, scalar, total_rows};

#[tokio::test]
async fn a_key_grants_exactly_its_bucket_and_role() {
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
    run(&om, "GRANT admin ON BUCKET hr TO analyst").await;
    let keys = Keys::new(om.root().clone());
    let (key, record) = keys
        .create("default", "analyst", Some("ana's notebook"), None)
        .await
        .unwrap();
    assert!(key.starts_with("oms_") && key.len() > 70, "{key}");
    let ana = om.for_key(&key).await.unwrap();
    // the role's row filter applies; writes need a privilege it lacks
    let rows = ana
        .datasets()
        .get_batches("t", Default::default())
        .await
        .unwrap();
    assert_eq!(total_rows(&rows), 4);
    let e = ana.sql("DROP TABLE t").await.unwrap_err().to_string();
    assert!(e.contains("lacks write on bucket 'default'"), "{e}");
    // bound to its bucket, although the role may administer hr
    let e = ana
        .sql("SELECT * FROM omega.hr.p")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("bound to bucket 'default'"), "{e}");
    // it cannot widen itself
    let e = ana
        .sql("SET omega.roles = 'admin'")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("identity was fixed"), "{e}");
    // the store keeps the digest, never the secret, outside every bucket
    let secret = key.rsplit('_').next().unwrap();
    let file = std::path::Path::new(&root.url).join(format!("_system/keys/{}.json", record.id));
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(!stored.contains(secret));
    assert!(stored.contains(&record.sha256));
    let buckets = omegastore::store::list_buckets(om.root()).await.unwrap();
    assert!(!buckets.iter().any(|b| b.starts_with('_')), "{buckets:?}");
    let n = scalar(
        &om,
        "SELECT count(*) FROM omega.system.objects WHERE strpos(uri, '_system') > 0",
    )
    .await;
    assert_eq!(n, 0, "a key record is visible as an object");
}

#[tokio::test]
async fn anything_but_a_valid_live_key_is_refused() {
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    let keys = Keys::new(om.root().clone());
    let (key, record) = keys.create("default", "analyst", None, None).await.unwrap();
    let mut wrong = key.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    let other_id = format!("oms_{}_{}", "0".repeat(12), key.rsplit('_').next().unwrap());
    for bad in [
        "",
        "oms_",
        "Bearer x",
        wrong.as_str(),
        other_id.as_str(),
        &key[..key.len() - 1],
        &key.replace("oms_", "omx_"),
    ] {
        assert!(
            matches!(om.for_key(bad).await, Err(KeyError::Unauthenticated)),
            "{bad:?} was accepted"
        );
    }
    assert!(om.for_key(&key).await.is_ok());
    // revoked: refused at once, still listed
    keys.revoke(&record.id).await.unwrap();
    assert!(matches!(
        om.for_key(&key).await,
        Err(KeyError::Unauthenticated)
    ));
    let listed = keys.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked.is_some());
    // expired: refused
    let (key2, r2) = keys
        .create(
            "default",
            "analyst",
            None,
            Some(chrono::Duration::minutes(5)),
        )
        .await
        .unwrap();
    assert!(om.for_key(&key2).await.is_ok());
    let file = std::path::Path::new(&root.url).join(format!("_system/keys/{}.json", r2.id));
    let mut rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    rec["expires"] =
        serde_json::json!((chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339());
    std::fs::write(&file, rec.to_string()).unwrap();
    assert!(matches!(
        om.for_key(&key2).await,
        Err(KeyError::Unauthenticated)
    ));
    // bad input to create is a typed error
    assert!(keys.create("Not A Bucket", "r", None, None).await.is_err());
    assert!(
        keys.create("default", "bad role", None, None)
            .await
            .is_err()
    );
    assert!(matches!(
        keys.revoke("nope").await,
        Err(KeyError::NotFound(_))
    ));
}

#[test]
fn om_keys_creates_prints_once_lists_and_revokes() {
    let root = local();
    let out = common::om(&root)
        .args([
            "keys",
            "create",
            "--bucket",
            "default",
            "--role",
            "analyst",
            "--expires",
            "90d",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("oms_"), "{key}");
    let id = key.split('_').nth(1).unwrap().to_string();
    let list = common::om(&root).args(["keys", "list"]).output().unwrap();
    let text = String::from_utf8(list.stdout).unwrap();
    assert!(text.contains(&id) && text.contains("live"), "{text}");
    assert!(
        !text.contains(key.rsplit('_').next().unwrap()),
        "the secret is listed"
    );
    let out = common::om(&root)
        .args(["keys", "revoke", &id])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(
        common::om(&root)
            .args(["keys", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(text.contains("revoked"), "{text}");
    let out = common::om(&root)
        .args([
            "keys",
            "create",
            "--bucket",
            "default",
            "--role",
            "r",
            "--expires",
            "soon",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid lifetime 'soon'"));
}
