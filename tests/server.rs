//! `om serve` in process on loopback port 0: Flight SQL through arrow-flight's
//! own `FlightSqlServiceClient`, HTTP through a raw HTTP/1.1 exchange. What a
//! client may do is exactly what its key's bucket and role may do; nothing
//! without a live key.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::FlightInfo;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetTables, CommandStatementIngest, TableDefinitionOptions};
use futures::TryStreamExt;
use omegastore::server::{Limits, Running, ServeConfig, serve};
use omegastore::store::keys::Keys;
use omegastore::{Omega, PutOptions};
use tonic::transport::Channel;

use common::faults::{FaultStore, Op};
use common::{exec, local, sample_batch, total_rows};

struct Served {
    om: Omega,
    running: Running,
    keys: Keys,
    /// The server's object store, passing every call through (tests count).
    store: FaultStore,
    _root: common::TestRoot,
}

/// A store with `t` (ids 0..10) in `default` and `p` in `hr`; analysts read
/// `default` with a row filter `id < 4` on `t`, writers write it (and see
/// no rows of `t`: no policy of theirs applies there); `u` has no policy.
async fn start(limits: Limits) -> Served {
    start_with_memory(limits, None).await
}

/// As [`start`], the server's queries sharing `memory` bytes when given.
async fn start_with_memory(limits: Limits, memory: Option<usize>) -> Served {
    let root = local();
    let (om, store) = common::faults::faulty(&root.url).await;
    let om = om.with_memory_limit(memory).unwrap();
    om.datasets()
        .put(sample_batch(0, 10), "t", PutOptions::default())
        .await
        .unwrap();
    om.datasets()
        .put(sample_batch(0, 10), "u", PutOptions::default())
        .await
        .unwrap();
    om.bucket("hr")
        .unwrap()
        .datasets()
        .put(sample_batch(0, 3), "p", PutOptions::default())
        .await
        .unwrap();
    exec(&om, "CREATE POLICY low ON t TO analyst USING (id < 4)").await;
    exec(&om, "GRANT read ON BUCKET default TO analyst").await;
    exec(&om, "GRANT write ON BUCKET default TO writer").await;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let config = ServeConfig {
        flight: Some(loopback),
        http: Some(loopback),
        limits,
        shutdown_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let running = serve(om.clone(), config).await.unwrap();
    let keys = Keys::new(om.root().clone());
    Served {
        om,
        running,
        keys,
        store,
        _root: root,
    }
}

impl Served {
    async fn key(&self, role: &str) -> String {
        self.keys
            .create("default", role, None, None)
            .await
            .unwrap()
            .0
    }

    async fn client(&self, key: Option<&str>) -> FlightSqlServiceClient<Channel> {
        let addr = self.running.flight.unwrap();
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = FlightSqlServiceClient::new(channel);
        if let Some(k) = key {
            client.set_token(k.to_string());
        }
        client
    }
}

/// Runs the endpoints of `info`; checks each stream's schema is the one
/// announced (nullability included).
async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Result<Vec<RecordBatch>, arrow_flight::error::FlightError> {
    let announced = info.clone().try_decode_schema().unwrap();
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("a ticket");
        let mut stream = client.do_get(ticket).await?;
        while let Some(batch) = stream.try_next().await? {
            assert_eq!(batch.schema().as_ref(), &announced, "DoGet schema differs");
            out.push(batch);
        }
    }
    Ok(out)
}

async fn query(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Vec<RecordBatch> {
    let info = client.execute(sql.to_string(), None).await.unwrap();
    fetch(client, info).await.unwrap()
}

fn code_of(e: &arrow_flight::error::FlightError) -> tonic::Code {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => s.code(),
        other => panic!("not a gRPC status: {other}"),
    }
}

fn int(batches: &[RecordBatch]) -> i64 {
    let c = arrow::compute::cast(batches[0].column(0), &DataType::Int64).unwrap();
    c.as_any().downcast_ref::<Int64Array>().unwrap().value(0)
}

#[tokio::test]
async fn flight_sql_denies_without_a_live_key_and_applies_the_keys_role() {
    let s = start(Limits::default()).await;
    // deny by default: no key, a malformed key, a well-formed unknown key
    for key in [
        None,
        Some("nope"),
        Some(&*format!("oms_{}_{}", "a".repeat(12), "b".repeat(64))),
    ] {
        let mut c = s.client(key).await;
        let e = c.execute("SELECT 1".into(), None).await.unwrap_err();
        assert_eq!(code_of(&e), tonic::Code::Unauthenticated, "{key:?}: {e}");
    }
    let analyst = s.key("analyst").await;
    let mut c = s.client(Some(&analyst)).await;
    assert_eq!(int(&query(&mut c, "SELECT count(*) FROM t").await), 4);
    // the identity cannot be widened, nor the bucket left, nor written
    for (sql, code) in [
        // in a script, where a SET would otherwise last for the statements after it
        (
            "SET omega.roles = 'admin'; SELECT count(*) FROM t",
            tonic::Code::InvalidArgument,
        ),
        ("SELECT * FROM omega.hr.p", tonic::Code::PermissionDenied),
        (
            "INSERT INTO t VALUES (99, 'x', 1.0)",
            tonic::Code::PermissionDenied,
        ),
    ] {
        let e = c.execute(sql.into(), None).await.unwrap_err();
        assert_eq!(code_of(&e), code, "{sql}: {e}");
    }
    // a revoked key stops working at once
    let id = analyst.split('_').nth(1).unwrap();
    s.keys.revoke(id).await.unwrap();
    let e = c.execute("SELECT 1".into(), None).await.unwrap_err();
    assert_eq!(code_of(&e), tonic::Code::Unauthenticated);
    assert!(s.running.shutdown().await);
}

#[tokio::test]
async fn prepared_statements_bind_question_marks_and_numbered_parameters() {
    let s = start(Limits::default()).await;
    let writer = s.key("writer").await;
    let mut c = s.client(Some(&writer)).await;
    // eleven `?`: $10 and $11 must not sort before $2
    let marks = ["?"; 11].join(", ");
    let mut prepared = c
        .prepare(
            format!("SELECT count(*) FROM u WHERE id IN ({marks})"),
            None,
        )
        .await
        .unwrap();
    let params = prepared.parameter_schema().unwrap().clone();
    let names: Vec<&str> = params.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names[1], "$2");
    assert_eq!(names[10], "$11");
    let values: Vec<ArrayRef> = [0i64, 1, 2, 100, 100, 100, 100, 100, 100, 100, 9]
        .iter()
        .map(|v| Arc::new(Int64Array::from(vec![*v])) as ArrayRef)
        .collect();
    let fields: Vec<Field> = (1..=11)
        .map(|i| Field::new(format!("p{i}"), DataType::Int64, false))
        .collect();
    let binding = RecordBatch::try_new(Arc::new(Schema::new(fields)), values).unwrap();
    prepared.set_parameters(binding).unwrap();
    let info = prepared.execute().await.unwrap();
    assert_eq!(int(&fetch(&mut c, info).await.unwrap()), 4);
    prepared.close().await.unwrap();

    let mut by_number = c
        .prepare("SELECT name FROM u WHERE id = $1".into(), None)
        .await
        .unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
    by_number
        .set_parameters(
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![7]))]).unwrap(),
        )
        .unwrap();
    let info = by_number.execute().await.unwrap();
    let rows = fetch(&mut c, info).await.unwrap();
    assert_eq!(total_rows(&rows), 1);

    // a ticket belongs to the key that planned it
    let info = c.execute("SELECT * FROM u".into(), None).await.unwrap();
    let other = s.key("writer").await;
    let mut thief = s.client(Some(&other)).await;
    let e = fetch(&mut thief, info.clone()).await.unwrap_err();
    assert_eq!(code_of(&e), tonic::Code::NotFound, "{e}");
    // and the thief's attempt leaves it to its owner
    assert_eq!(total_rows(&fetch(&mut c, info).await.unwrap()), 10);
    assert!(s.running.shutdown().await);
}

/// DoGet trusts the verification of the GetFlightInfo that planned its
/// ticket for at most TICKET_TRUST: after that a revoked key's ticket is
/// refused, however long the ticket itself would live.
#[tokio::test]
async fn a_revoked_keys_ticket_is_refused_once_the_trust_window_passed() {
    let s = start(Limits::default()).await;
    let analyst = s.key("analyst").await;
    let id = analyst.split('_').nth(1).unwrap().to_string();
    let mut c = s.client(Some(&analyst)).await;
    let info = c
        .execute("SELECT count(*) FROM t".into(), None)
        .await
        .unwrap();
    s.keys.revoke(&id).await.unwrap();
    tokio::time::sleep(omegastore::server::auth::TICKET_TRUST).await;
    let e = fetch(&mut c, info).await.unwrap_err();
    assert_eq!(code_of(&e), tonic::Code::Unauthenticated, "{e}");
    assert!(s.running.shutdown().await);
}

/// A DoGet that follows its own key's GetFlightInfo within TICKET_TRUST
/// relies on that verification and reads no key record; a later one reads
/// it again (which is how it sees a revocation).
#[tokio::test]
async fn a_prompt_do_get_reads_no_key_record() {
    let s = start(Limits::default()).await;
    let analyst = s.key("analyst").await;
    let mut c = s.client(Some(&analyst)).await;
    s.store
        .count(|op, path| op == Op::Get && path.as_ref().contains("_system/keys/"));
    let info = c.execute("SELECT * FROM u".into(), None).await.unwrap();
    assert_eq!(s.store.calls(), 1, "GetFlightInfo reads the key's record");
    assert_eq!(total_rows(&fetch(&mut c, info).await.unwrap()), 10);
    assert_eq!(s.store.calls(), 1, "a prompt DoGet reads nothing more");

    let info = c.execute("SELECT * FROM u".into(), None).await.unwrap();
    assert_eq!(s.store.calls(), 2);
    tokio::time::sleep(omegastore::server::auth::TICKET_TRUST).await;
    assert_eq!(total_rows(&fetch(&mut c, info).await.unwrap()), 10);
    assert_eq!(s.store.calls(), 3, "a late DoGet verifies the key again");
    assert!(s.running.shutdown().await);
}

/// Forged keys cost a store read each (the id must be looked up), so an
/// address that keeps failing is stopped at its budget: past it, its forged
/// keys are refused without a read (gRPC and HTTP alike), while a key the
/// server verified before still works from that address.
#[tokio::test]
async fn an_address_that_keeps_failing_is_refused_without_reading_the_store() {
    let s = start(Limits {
        failed_auths: 3,
        ..Limits::default()
    })
    .await;
    let writer = s.key("writer").await;
    let mut good = s.client(Some(&writer)).await;
    assert_eq!(int(&query(&mut good, "SELECT count(*) FROM u").await), 10);
    s.store
        .count(|op, path| op == Op::Get && path.as_ref().contains("_system/keys/"));
    let forged = |i: usize| format!("oms_{i:012x}_{}", "0".repeat(64));
    for i in 0..3 {
        let mut c = s.client(Some(&forged(i))).await;
        let e = c.execute("SELECT 1".into(), None).await.unwrap_err();
        assert_eq!(code_of(&e), tonic::Code::Unauthenticated, "{e}");
    }
    assert_eq!(s.store.calls(), 3, "each forged id was looked up");
    for i in 3..6 {
        let mut c = s.client(Some(&forged(i))).await;
        let e = c.execute("SELECT 1".into(), None).await.unwrap_err();
        assert_eq!(code_of(&e), tonic::Code::ResourceExhausted, "{e}");
        assert!(
            e.to_string().contains("too many failed authentications"),
            "{e}"
        );
    }
    let http_addr = s.running.http.unwrap();
    let bearer = format!("Bearer {}", forged(7));
    let (status, _, body) = http(
        http_addr,
        "GET",
        "/api/v1/datasets",
        &[("authorization", &bearer)],
        b"",
    )
    .await;
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
    assert_eq!(error_code(&body), "rate_limited");
    // the handshake (Basic, the key as password) is held to the same budget
    let mut h = s.client(None).await;
    let e = h.handshake("anyone", &forged(8)).await.unwrap_err();
    // (arrow-flight's client reports a failed handshake as a text, not a status)
    let e = e.to_string();
    assert!(e.contains("resource has been exhausted"), "{e}");
    assert!(e.contains("too many failed authentications"), "{e}");
    assert_eq!(
        s.store.calls(),
        3,
        "no forged id was looked up past the budget"
    );
    // the key in use goes on working, verified as always
    assert_eq!(int(&query(&mut good, "SELECT count(*) FROM u").await), 10);
    assert_eq!(s.store.calls(), 4);
    assert!(s.running.shutdown().await);
}

/// `executemany` over no rows runs nothing, whether the client binds in a
/// DoPut of its own (arrow-rs) or with the update (ADBC, tests/clients);
/// a write without placeholders and nothing bound runs once.
#[tokio::test]
async fn executemany_over_no_rows_writes_nothing() {
    let s = start(Limits::default()).await;
    let writer = s.key("writer").await;
    let mut c = s.client(Some(&writer)).await;
    let version = || async { s.om.datasets().metadata("t").await.unwrap().version };
    let before = version().await;
    let mut many = c
        .prepare("INSERT INTO t VALUES (?, ?, 0.5)".into(), None)
        .await
        .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
    ]));
    many.set_parameters(RecordBatch::new_empty(schema)).unwrap();
    assert_eq!(many.execute_update().await.unwrap(), 0);
    assert_eq!(version().await, before, "no version written");

    let mut once = c
        .prepare("INSERT INTO t VALUES (300, 'q', 0.5)".into(), None)
        .await
        .unwrap();
    assert_eq!(once.execute_update().await.unwrap(), 1);
    assert_eq!(version().await, before + 1);
    assert!(s.running.shutdown().await);
}

/// The `value` of the first row of a `SHOW <setting>` result.
fn shown(batches: &[RecordBatch]) -> String {
    let i = batches[0].schema().index_of("value").unwrap();
    let c = arrow::compute::cast(batches[0].column(i), &DataType::Utf8).unwrap();
    c.as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .value(0)
        .to_string()
}

#[tokio::test]
async fn a_requests_settings_last_only_for_that_request() {
    let s = start(Limits::default()).await;
    let analyst = s.key("analyst").await;
    let mut c = s.client(Some(&analyst)).await;
    // another client with the same key: the server caches one session per key
    let mut other = s.client(Some(&analyst)).await;
    let show = "SHOW datafusion.execution.batch_size";
    let default = shown(&query(&mut c, show).await);
    assert_ne!(default, "3");
    // a SET reaches the statements after it in its own script...
    let script = format!("SET datafusion.execution.batch_size = 3; {show}");
    assert_eq!(shown(&query(&mut c, &script).await), "3");
    // ...and no other request of the key, from this client or another
    assert_eq!(shown(&query(&mut c, show).await), default);
    assert_eq!(shown(&query(&mut other, show).await), default);
    // so does a PREPARE
    let prepared = "PREPARE low AS SELECT count(*) FROM t WHERE id > $1; EXECUTE low(1)";
    assert_eq!(
        int(&query(&mut c, prepared).await),
        2,
        "ids 2 and 3 of 0..4"
    );
    assert!(c.execute("EXECUTE low(1)".into(), None).await.is_err());
    // alone, they would change nothing: refused, saying how to send them
    for lone in [
        "SET datafusion.execution.batch_size = 1",
        "RESET datafusion.execution.batch_size",
        "PREPARE p AS SELECT 1",
    ] {
        let e = c.execute(lone.into(), None).await.unwrap_err();
        assert_eq!(code_of(&e), tonic::Code::InvalidArgument, "{lone}: {e}");
        assert!(e.to_string().contains("as one script"), "{lone}: {e}");
        let e = c.execute_update(lone.into(), None).await.unwrap_err();
        assert_eq!(code_of(&e), tonic::Code::InvalidArgument, "{lone}: {e}");
    }
    // the process's memory limit and spill directory are not a key's to move
    for sql in [
        "SET datafusion.runtime.temp_directory = '/tmp/elsewhere'; SELECT 1",
        "SET datafusion.runtime.memory_limit = '64G'; SELECT 1",
        "RESET datafusion.runtime.memory_limit; SELECT 1",
    ] {
        let e = c.execute(sql.into(), None).await.unwrap_err();
        assert_eq!(code_of(&e), tonic::Code::InvalidArgument, "{sql}: {e}");
        assert!(e.to_string().contains("datafusion.runtime."), "{sql}: {e}");
    }

    // the same over HTTP, which shares the key's cached session
    let addr = s.running.http.unwrap();
    let bearer = format!("Bearer {analyst}");
    let sql = |sql: &str| {
        let body = serde_json::json!({ "sql": sql }).to_string();
        let bearer = bearer.clone();
        async move {
            let headers = [
                ("authorization", bearer.as_str()),
                ("content-type", "application/json"),
                ("accept", "application/json"),
            ];
            let (status, _, body) =
                http(addr, "POST", "/api/v1/sql", &headers, body.as_bytes()).await;
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
                panic!("not JSON: {}", String::from_utf8_lossy(&body));
            });
            (status, v)
        }
    };
    let (status, rows) = sql(&format!("SET datafusion.execution.batch_size = 3; {show}")).await;
    assert_eq!(status, 200, "{rows}");
    assert_eq!(rows[0]["value"], "3", "{rows}");
    let (status, rows) = sql(show).await;
    assert_eq!(status, 200, "{rows}");
    assert_eq!(rows[0]["value"].as_str(), Some(default.as_str()), "{rows}");
    assert_eq!(shown(&query(&mut other, show).await), default);
    let (status, error) = sql("SET datafusion.execution.batch_size = 1").await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["code"], "bad_request");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("as one script")),
        "{error}"
    );
    let (status, error) =
        sql("SET datafusion.runtime.temp_directory = '/tmp/elsewhere'; SELECT 1").await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(shown(&query(&mut c, show).await), default);
    assert!(s.running.shutdown().await);
}

#[tokio::test]
async fn updates_executemany_and_ingest_write_new_versions() {
    let s = start(Limits::default()).await;
    let writer = s.key("writer").await;
    let mut c = s.client(Some(&writer)).await;
    let before = s.om.datasets().metadata("t").await.unwrap().version;
    let n = c
        .execute_update(
            "INSERT INTO t VALUES (100, 'a', 1.0), (101, 'b', 2.0)".into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    // one execution per parameter row, each its own version
    let mut many = c
        .prepare("INSERT INTO t VALUES (?, ?, 0.5)".into(), None)
        .await
        .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
    ]));
    let rows = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![200, 201, 202])),
            Arc::new(StringArray::from(vec!["x", "y", "z"])),
        ],
    )
    .unwrap();
    many.set_parameters(rows).unwrap();
    assert_eq!(many.execute_update().await.unwrap(), 3);
    let after = s.om.datasets().metadata("t").await.unwrap().version;
    assert_eq!(after, before + 4);
    assert_eq!(common::scalar(&s.om, "SELECT count(*) FROM t").await, 15);

    // bulk ingest: create, then append (two versions); create again conflicts
    let ingest = |mode: (i32, i32)| CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: mode.0,
            if_exists: mode.1,
        }),
        table: "ingested".into(),
        ..Default::default()
    };
    let create = (1, 1); // create if missing, fail if it exists
    let append = (2, 2); // fail if missing, append if it exists
    let batches =
        || futures::stream::iter(vec![Ok(sample_batch(0, 1000)), Ok(sample_batch(1000, 500))]);
    assert_eq!(
        c.execute_ingest(ingest(create), batches()).await.unwrap(),
        1500
    );
    assert_eq!(
        c.execute_ingest(ingest(append), batches()).await.unwrap(),
        1500
    );
    let meta = s.om.datasets().metadata("ingested").await.unwrap();
    assert_eq!(meta.version, 2);
    assert_eq!(common::rows(&s.om, "ingested").await, 3000);
    let e = c
        .execute_ingest(ingest(create), batches())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(
        s.om.datasets().metadata("ingested").await.unwrap().version,
        2
    );

    // an analyst may not ingest
    let analyst = s.key("analyst").await;
    let mut a = s.client(Some(&analyst)).await;
    let e = a
        .execute_ingest(ingest((1, 3)), batches())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("lacks write"), "{e}");

    // naming another bucket does not leave the key's own
    let mut elsewhere = ingest(create);
    elsewhere.schema = Some("hr".into());
    let e = c.execute_ingest(elsewhere, batches()).await.unwrap_err();
    assert!(e.to_string().contains("bound to bucket 'default'"), "{e}");
    assert!(
        !s.om
            .bucket("hr")
            .unwrap()
            .datasets()
            .exists("ingested")
            .await
            .unwrap()
    );

    // handshake: Basic with the key as password gives a bearer token
    let mut h = s.client(None).await;
    h.handshake("anyone", &writer).await.unwrap();
    assert_eq!(
        int(&query(&mut h, "SELECT count(*) FROM ingested").await),
        3000
    );
    let mut bad = s.client(None).await;
    assert!(bad.handshake("anyone", "oms_wrong").await.is_err());
    assert!(s.running.shutdown().await);
}

#[tokio::test]
async fn catalog_metadata_shows_only_the_keys_bucket() {
    let s = start(Limits::default()).await;
    let analyst = s.key("analyst").await;
    let mut c = s.client(Some(&analyst)).await;
    let info = c
        .get_tables(CommandGetTables {
            include_schema: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let batches = fetch(&mut c, info).await.unwrap();
    let mut names = Vec::new();
    for b in &batches {
        let schemas = arrow::compute::cast(b.column(1), &DataType::Utf8).unwrap();
        let tables = arrow::compute::cast(b.column(2), &DataType::Utf8).unwrap();
        let schemas = schemas.as_any().downcast_ref::<StringArray>().unwrap();
        let tables = tables.as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..b.num_rows() {
            names.push(format!("{}.{}", schemas.value(i), tables.value(i)));
        }
    }
    assert!(names.contains(&"default.t".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("hr.")), "{names:?}");
    let info = c.get_catalogs().await.unwrap();
    assert!(total_rows(&fetch(&mut c, info).await.unwrap()) >= 1);
    let info = c.get_sql_info(vec![]).await.unwrap();
    assert!(total_rows(&fetch(&mut c, info).await.unwrap()) > 5);
    assert!(s.running.shutdown().await);
}

/// One HTTP/1.1 exchange over TCP: status, headers (lowercase names) and
/// the body (chunked transfer decoded).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    exchange(stream, method, path, headers, body).await
}

/// One HTTP/1.1 exchange over any stream (TCP or TLS).
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let _ = stream.write_all(body).await; // the server may answer and close first (413)
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut rest = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        let mut out = Vec::new();
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap().trim(), 16)
                .unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[end + 2..end + 2 + size]);
            rest = rest[end + 2 + size + 2..].to_vec();
        }
        rest = out;
    }
    (status, headers, rest)
}

fn error_code(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|_| {
        panic!("not JSON: {}", String::from_utf8_lossy(body));
    });
    v["error"]["code"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn http_api_authenticates_filters_rows_and_refuses_oversized_bodies() {
    let s = start(Limits {
        body_bytes: 4096,
        ..Limits::default()
    })
    .await;
    let addr = s.running.http.unwrap();
    let (status, _, _) = http(addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(status, 200);
    let (status, headers, body) = http(addr, "GET", "/api/v1/datasets", &[], b"").await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (401, "unauthenticated")
    );
    assert!(headers.iter().any(|(k, _)| k == "www-authenticate"));

    let analyst = s.key("analyst").await;
    let bearer = format!("Bearer {analyst}");
    let auth = [("Authorization", bearer.as_str())];
    let (status, _, body) = http(addr, "GET", "/api/v1/datasets/t", &auth, b"").await;
    assert_eq!(status, 200);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(rows.len(), 4, "the role's row filter applies");
    // where is an expression over the table, never SQL text
    let (status, _, body) = http(
        addr,
        "GET",
        "/api/v1/datasets/t?where=id%20%3E%201%20OR%201%3D1&columns=id",
        &auth,
        b"",
    )
    .await;
    assert_eq!(status, 200);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(rows.len(), 4, "a filter cannot widen the row filter");
    let (status, _, body) = http(
        addr,
        "GET",
        "/api/v1/datasets/t?where=1%3D1%3B%20DROP%20TABLE%20t",
        &auth,
        b"",
    )
    .await;
    assert_eq!((status, error_code(&body).as_str()), (400, "bad_request"));
    let (status, _, body) = http(addr, "GET", "/api/v1/datasets/..%2Fetc", &auth, b"").await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    // an analyst cannot write; nobody can send more than the limit
    let csv = b"id,name,score\n1,a,1.0\n";
    let ct = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "text/csv"),
    ];
    let (status, _, body) = http(addr, "PUT", "/api/v1/datasets/new", &ct, csv).await;
    assert_eq!((status, error_code(&body).as_str()), (403, "forbidden"));
    let big = vec![b'1'; 10_000];
    let (status, _, body) = http(addr, "PUT", "/api/v1/datasets/new", &ct, &big).await;
    assert_eq!((status, error_code(&body).as_str()), (413, "too_large"));
    // a client that sends all of its body before reading (Python's urllib)
    // hears the 413 too, instead of a reset while it is still sending
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let big = vec![b'1'; 16 << 20];
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "PUT /api/v1/datasets/new HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Authorization: {bearer}\r\nContent-Type: text/csv\r\nContent-Length: {}\r\n\r\n",
            big.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream
            .write_all(&big)
            .await
            .expect("the server reset a client still sending its body");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert!(text.contains("too_large"), "{text}");
    }
    assert!(!s.om.datasets().exists("new").await.unwrap());
    assert!(s.running.shutdown().await);
}

#[tokio::test]
async fn http_put_keeps_a_sort_order_and_bloom_filters_and_refuses_them_off_tables() {
    let s = start(Limits::default()).await;
    let addr = s.running.http.unwrap();
    let writer = s.key("writer").await;
    let bearer = format!("Bearer {writer}");
    let csv = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "text/csv"),
    ];
    let body = b"id,city\n3,c\n1,a\n2,b\n";
    let (status, _, reply) = http(
        addr,
        "PUT",
        "/api/v1/datasets/sorted?sort_by=id&bloom=city",
        &csv,
        body,
    )
    .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&reply));
    let meta: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(meta["kind_meta"]["sort_by"], serde_json::json!(["id"]));
    assert_eq!(
        meta["kind_meta"]["bloom_filters"],
        serde_json::json!(["city"])
    );
    // the rows were written in the order asked for
    let stored =
        s.om.datasets()
            .get("sorted", omegastore::GetOptions::default())
            .await
            .unwrap();
    let omegastore::Data::Table(df) = stored else {
        panic!("not a table")
    };
    let batches = df.collect().await.unwrap();
    let ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            let ids = b.column_by_name("id").unwrap();
            let ids = ids.as_any().downcast_ref::<Int64Array>().unwrap().clone();
            ids.values().to_vec()
        })
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
    // an append without its own keeps both, and `merge_schema` adds a column
    let (status, _, reply) = http(
        addr,
        "POST",
        "/api/v1/datasets/sorted?merge_schema=true",
        &csv,
        b"id,city,zip\n0,z,9\n",
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    let meta: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(meta["kind_meta"]["sort_by"], serde_json::json!(["id"]));
    assert_eq!(
        meta["kind_meta"]["bloom_filters"],
        serde_json::json!(["city"])
    );
    let omegastore::Data::Table(df) =
        s.om.datasets()
            .get("sorted", omegastore::GetOptions::default())
            .await
            .unwrap()
    else {
        panic!("not a table")
    };
    let batches = df.collect().await.unwrap();
    assert!(
        batches[0].schema().field_with_name("zip").is_ok(),
        "no new column"
    );
    assert_eq!(total_rows(&batches), 4);

    // a column the body lacks is named; nothing is stored
    let (status, _, reply) = http(
        addr,
        "PUT",
        "/api/v1/datasets/other?sort_by=nope",
        &csv,
        body,
    )
    .await;
    assert_eq!(
        (status, error_code(&reply).as_str()),
        (422, "unprocessable")
    );
    assert!(String::from_utf8_lossy(&reply).contains("'nope'"));
    assert!(!s.om.datasets().exists("other").await.unwrap());
    // a JSON document has no rows to lay out: refused, not ignored
    let json = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    let (status, _, reply) = http(
        addr,
        "PUT",
        "/api/v1/datasets/doc?bloom=a",
        &json,
        br#"{"a": 1}"#,
    )
    .await;
    assert_eq!(
        (status, error_code(&reply).as_str()),
        (422, "unprocessable")
    );
    assert!(
        String::from_utf8_lossy(&reply).contains("apply to tables"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(!s.om.datasets().exists("doc").await.unwrap());
    assert!(s.running.shutdown().await);
}

/// A backend whose reads panic: a bug in one request must not take the
/// server down.
struct PanickingBackend;

struct Boom;

#[async_trait::async_trait]
impl omegastore::DataBackend for PanickingBackend {
    fn kinds(&self) -> Vec<String> {
        vec!["test.panic".into()]
    }
    fn supports(&self, obj: &omegastore::Object) -> bool {
        matches!(obj, omegastore::Object::Any(a) if a.is::<Boom>())
    }
    async fn put(
        &self,
        _cx: &omegastore::BackendContext<'_>,
        _obj: omegastore::Object,
        _previous: Option<&omegastore::Metadata>,
        _opts: &PutOptions,
    ) -> omegastore::Result<omegastore::Written> {
        Ok(omegastore::Written {
            kind: "test.panic".into(),
            uri: String::new(),
            kind_meta: serde_json::Value::Null,
        })
    }
    async fn get(
        &self,
        _cx: &omegastore::BackendContext<'_>,
        _meta: &omegastore::Metadata,
        _opts: &omegastore::GetOptions,
    ) -> omegastore::Result<omegastore::Data> {
        panic!("a bug in a backend");
    }
}

#[tokio::test]
async fn a_panicking_request_gets_an_internal_error_and_the_server_goes_on() {
    let s = start(Limits::default()).await;
    s.om.register_backend(Arc::new(PanickingBackend));
    s.om.datasets()
        .put(
            omegastore::Object::Any(Box::new(Boom)),
            "boom",
            PutOptions::default(),
        )
        .await
        .unwrap();
    let writer = s.key("writer").await;
    let addr = s.running.http.unwrap();
    let bearer = format!("Bearer {writer}");
    let auth = [("Authorization", bearer.as_str())];
    for _ in 0..3 {
        let (status, _, body) = http(addr, "GET", "/api/v1/datasets/boom", &auth, b"").await;
        assert_eq!((status, error_code(&body).as_str()), (500, "internal"));
        let (status, _, _) = http(addr, "GET", "/api/v1/datasets/u", &auth, b"").await;
        assert_eq!(status, 200, "the server goes on");
    }
    assert!(s.running.shutdown().await);
}

/// A query that fails while it runs is answered with its own status and a
/// JSON error, not a `200` whose body breaks off: over the memory limit
/// `503` / `UNAVAILABLE` with the hint, a bad value in the data `400`; the
/// key's next query runs.
#[tokio::test]
async fn a_query_that_fails_while_running_gets_its_status_on_both_protocols() {
    let s = start_with_memory(Limits::default(), Some(4 << 20)).await;
    exec(
        &s.om,
        "CREATE TABLE big AS SELECT value AS id, concat('n', CAST(value AS VARCHAR)) AS name \
         FROM generate_series(1, 300000)",
    )
    .await;
    let analyst = s.key("analyst").await;
    let addr = s.running.http.unwrap();
    let bearer = format!("Bearer {analyst}");
    let post = |sql: &str| {
        let body = serde_json::json!({ "sql": sql }).to_string();
        let bearer = bearer.clone();
        async move {
            let headers = [
                ("Authorization", bearer.as_str()),
                ("Content-Type", "application/json"),
            ];
            http(addr, "POST", "/api/v1/sql", &headers, body.as_bytes()).await
        }
    };
    let join = "SELECT count(*) FROM big a JOIN big b ON a.id = b.id AND a.name = b.name";
    let (status, _, body) = post(join).await;
    assert_eq!((status, error_code(&body).as_str()), (503, "unavailable"));
    assert!(
        String::from_utf8_lossy(&body).contains("ran out of memory"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, body) = post("SELECT CAST(name AS INT) FROM big").await;
    assert_eq!((status, error_code(&body).as_str()), (400, "bad_request"));

    let mut c = s.client(Some(&analyst)).await;
    let info = c.execute(join.to_string(), None).await.unwrap();
    let err = fetch(&mut c, info).await.unwrap_err();
    assert_eq!(code_of(&err), tonic::Code::Unavailable, "{err}");
    assert!(err.to_string().contains("ran out of memory"), "{err}");

    assert_eq!(
        int(&query(&mut c, "SELECT count(*) FROM big").await),
        300_000
    );
    let (status, _, body) = post("SELECT count(*) AS n FROM big").await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("300000"));
    assert!(s.running.shutdown().await);
}

/// A query that runs past its youth (so it needs a worker), and its answer.
const HEAVY: &str = "SELECT sum(a.value * b.value) AS s FROM generate_series(1, 3000) a, generate_series(1, 3000) b";
const HEAVY_SUM: i64 = 4_501_500 * 4_501_500;

#[tokio::test]
async fn a_client_that_goes_away_stops_its_query() {
    // one worker: while a query streams, it holds it
    let s = start(Limits {
        workers: 1,
        ..Limits::default()
    })
    .await;
    let writer = s.key("writer").await;
    let mut c = s.client(Some(&writer)).await;
    let info = c
        .execute(
            "SELECT a.value * b.value AS v FROM generate_series(1, 1000000) a, generate_series(1, 1000000) b"
                .into(),
            None,
        )
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = c.do_get(ticket).await.unwrap();
    let first = stream.try_next().await.unwrap().expect("a first batch");
    assert!(first.num_rows() > 0);
    // past its youth the query goes on only with the one worker
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.try_next().await.unwrap().expect("a later batch");
    drop(stream); // a trillion rows left: only cancellation frees the worker
    let mut other = s.client(Some(&writer)).await;
    let next = tokio::time::timeout(Duration::from_secs(30), async {
        query(&mut other, HEAVY).await
    })
    .await
    .expect("the worker was freed when the client went away");
    assert_eq!(int(&next), HEAVY_SUM);

    // CancelFlightInfo stops a running stream: its reader sees CANCELLED
    let info = c
        .execute(
            "SELECT a.value * b.value AS v FROM generate_series(1, 1000000) a, generate_series(1, 1000000) b"
                .into(),
            None,
        )
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = c.do_get(ticket).await.unwrap();
    stream.try_next().await.unwrap().expect("a first batch");
    let cancel = arrow_flight::Action {
        r#type: "CancelFlightInfo".into(),
        body: prost::Message::encode_to_vec(&arrow_flight::CancelFlightInfoRequest {
            info: Some(info.clone()),
        })
        .into(),
    };
    let mut canceller = s.client(Some(&writer)).await;
    let mut answer = canceller.do_action(cancel).await.unwrap();
    let result: arrow_flight::CancelFlightInfoResult =
        prost::Message::decode(answer.message().await.unwrap().unwrap().body).unwrap();
    assert_eq!(result.status, arrow_flight::CancelStatus::Cancelled as i32);
    let end = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.try_next().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await
    .expect("the stream ends after the cancel");
    assert_eq!(code_of(&end.unwrap_err()), tonic::Code::Cancelled);
    let next = query(&mut other, "SELECT 1").await;
    assert_eq!(int(&next), 1);
    assert!(s.running.shutdown().await);
}

#[tokio::test]
async fn both_listeners_speak_tls_when_given_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    std::fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key_pem).unwrap();
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    om.datasets()
        .put(sample_batch(0, 10), "u", PutOptions::default())
        .await
        .unwrap();
    exec(&om, "GRANT read ON BUCKET default TO reader").await;
    let key = Keys::new(om.root().clone())
        .create("default", "reader", None, None)
        .await
        .unwrap()
        .0;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let running = serve(
        om.clone(),
        ServeConfig {
            flight: Some(loopback),
            http: Some(loopback),
            tls: Some((dir.path().join("cert.pem"), dir.path().join("key.pem"))),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // Flight SQL over TLS, the certificate trusted as a CA
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{}", running.flight.unwrap()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = FlightSqlServiceClient::new(channel);
    c.set_token(key.clone());
    assert_eq!(int(&query(&mut c, "SELECT count(*) FROM u").await), 10);
    // plain text to the TLS port is not served
    let plain = Channel::from_shared(format!("http://{}", running.flight.unwrap()))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        let mut p = FlightSqlServiceClient::new(channel);
        p.set_token(key.clone());
        assert!(p.execute("SELECT 1".into(), None).await.is_err());
    }

    // HTTPS
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            cert.cert.der().to_vec(),
        ))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(running.http.unwrap())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls_stream = connector.connect(name, tcp).await.unwrap();
    let bearer = format!("Bearer {key}");
    let (status, _, body) = exchange(
        tls_stream,
        "GET",
        "/api/v1/datasets/u?limit=3",
        &[("Authorization", bearer.as_str())],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(rows.len(), 3);
    assert!(running.shutdown().await);
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_routes_served() {
    let s = start(Limits::default()).await;
    let addr = s.running.http.unwrap();
    let (status, _, body) = http(addr, "GET", "/api/v1/openapi.json", &[], b"").await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete"].contains(&method.as_str()) {
                operations.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    operations.sort();
    let expected = [
        "DELETE /api/v1/datasets/{name}",
        "DELETE /api/v1/jobs/{name}/schedule",
        "DELETE /api/v1/tasks/{id}",
        "GET /api/v1/datasets",
        "GET /api/v1/datasets/{name}",
        "GET /api/v1/datasets/{name}/history",
        "GET /api/v1/datasets/{name}/metadata",
        "GET /api/v1/jobs",
        "GET /api/v1/jobs/{name}",
        "GET /api/v1/jobs/{name}/runs",
        "GET /api/v1/jobs/{name}/runs/{run}",
        "GET /api/v1/models",
        "GET /api/v1/models/{name}",
        "GET /api/v1/schedules",
        "GET /api/v1/tasks",
        "GET /api/v1/tasks/{id}",
        "GET /healthz",
        "GET /readyz",
        "POST /api/v1/datasets/{name}",
        "POST /api/v1/jobs/{name}/run",
        "POST /api/v1/models/{name}/fit",
        "POST /api/v1/models/{name}/predict",
        "POST /api/v1/sql",
        "POST /api/v1/tasks",
        "PUT /api/v1/datasets/{name}",
        "PUT /api/v1/jobs/{name}",
        "PUT /api/v1/jobs/{name}/schedule",
    ];
    assert_eq!(operations, expected);
    // every documented operation is served (not the fallback, not 405)
    let writer = s.key("writer").await;
    let bearer = format!("Bearer {writer}");
    for op in &operations {
        let (method, path) = op.split_once(' ').unwrap();
        let path = path
            .replace("{name}", "nothing-here")
            .replace("{id}", "nothing-here")
            .replace("{run}", "nothing-here");
        let headers = [
            ("Authorization", bearer.as_str()),
            ("Content-Type", "application/json"),
        ];
        let (status, _, body) = http(addr, method, &path, &headers, b"{}").await;
        let text = String::from_utf8_lossy(&body);
        assert!(
            status != 405 && !text.contains("no such route"),
            "{op}: {status} {text}"
        );
    }
    // and what is not documented is not served
    let (status, _, body) = http(addr, "GET", "/api/v1/secrets", &[], b"").await;
    assert_eq!((status, error_code(&body).as_str()), (404, "not_found"));
    assert!(s.running.shutdown().await);
}

#[tokio::test]
async fn an_http_client_that_goes_away_stops_its_query() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = start(Limits {
        workers: 1,
        ..Limits::default()
    })
    .await;
    let writer = s.key("writer").await;
    let addr = s.running.http.unwrap();
    let body = serde_json::json!({
        "sql": "SELECT a.value * b.value AS v FROM generate_series(1, 1000000) a, generate_series(1, 1000000) b"
    })
    .to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /api/v1/sql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {writer}\r\nAccept: application/vnd.apache.arrow.stream\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut first = vec![0u8; 64 * 1024];
    let n = stream.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    // past its youth the query goes on only with the one worker
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(stream.read(&mut first).await.unwrap() > 0);
    drop(stream); // a trillion rows left: only cancellation frees the worker
    let bearer = format!("Bearer {writer}");
    let heavy = serde_json::json!({ "sql": HEAVY }).to_string();
    let (status, _, body) = tokio::time::timeout(
        Duration::from_secs(30),
        http(
            addr,
            "POST",
            "/api/v1/sql",
            &[
                ("Authorization", &bearer),
                ("Content-Type", "application/json"),
            ],
            heavy.as_bytes(),
        ),
    )
    .await
    .expect("the worker was freed when the client went away");
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&body).contains(&HEAVY_SUM.to_string()),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(s.running.shutdown().await);
}
