//! Sessions are freed: dropping the last `Omega` (and its `bucket(..)`
//! copies) frees its DataFusion session, catalog and caches. A server opens
//! a session per connection; anything kept alive here grows without bound.
//!
//! This binary holds one test, so `Engine::live()` counts only its sessions.

use std::sync::Weak;

use arrow::array::Int64Array;
use arrow::record_batch::RecordBatch;
use omegastore::{Engine, Omega, PutOptions};

/// Sessions opened and dropped (each iteration opens two, `open` and
/// `with_identity`, and copies one into another bucket).
const ROUNDS: usize = 10_000;

fn batch() -> RecordBatch {
    RecordBatch::try_from_iter(vec![(
        "x",
        std::sync::Arc::new(Int64Array::from(vec![1, 2, 3])) as _,
    )])
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_omegas_free_their_sessions() {
    let before = Engine::live();
    let mut sessions: Vec<Weak<_>> = Vec::new();
    for i in 0..ROUNDS {
        let om = Omega::open("memory://").await.unwrap();
        let ana = om.with_identity("ana", &["analyst"], false).unwrap();
        let team = ana.bucket("team").unwrap();
        if i % 1000 == 0 {
            // a session that resolved tables, ran the catalog and read the
            // policies must be freed like an idle one
            om.datasets()
                .put(batch(), "t", PutOptions::default())
                .await
                .unwrap();
            let n = om
                .sql("SELECT count(*) AS n FROM t")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            assert_eq!(n[0].num_rows(), 1);
            team.sql("SHOW TABLES")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            sessions.push(om.session().state_weak_ref());
            sessions.push(team.session().state_weak_ref());
        }
        assert_eq!(Engine::live(), before + 2, "round {i}: two sessions open");
    }
    assert_eq!(
        Engine::live(),
        before,
        "every session is freed once its Omegas are dropped"
    );
    let alive = sessions.iter().filter(|w| w.upgrade().is_some()).count();
    assert_eq!(alive, 0, "{alive} dropped sessions are still referenced");
}
