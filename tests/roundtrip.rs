//! Round trips of every built-in kind, on a local root and on S3 (moto).

mod common;

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, DictionaryArray, Int32Array, Int64Array, ListArray,
    StringArray, StructArray, TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use omegastore::store::{BackendContext, Written};
use omegastore::{
    Data, DataBackend, ExternalFormat, FileFormat, GetOptions, Metadata, Object, Omega, PutOptions,
    StoreError,
};
use serde_json::json;

use common::{roots, sample_batch, total_rows};

/// Strings come back as Utf8View (DataFusion's Parquet reader default):
/// compare values after casting to the type that was written.
fn column_as(batch: &RecordBatch, name: &str, to: &DataType) -> ArrayRef {
    cast(batch.column_by_name(name).unwrap(), to).unwrap()
}

fn rich_batch() -> RecordBatch {
    let ts = TimestampMicrosecondArray::from(vec![
        Some(1_700_000_000_000_000),
        None,
        Some(-86_400_000_000),
    ])
    .with_timezone("Europe/Zurich");
    let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
        Some(vec![Some(1), Some(2)]),
        None,
        Some(vec![]),
    ]);
    let dict: DictionaryArray<Int32Type> = vec!["rot", "grün", "rot"].into_iter().collect();
    let strukt = StructArray::from(vec![
        (
            Arc::new(Field::new("x", DataType::Int32, true)),
            Arc::new(Int32Array::from(vec![Some(1), None, Some(3)])) as ArrayRef,
        ),
        (
            Arc::new(Field::new("label", DataType::Utf8, true)),
            Arc::new(StringArray::from(vec![Some("日本"), Some("ü"), None])) as ArrayRef,
        ),
    ]);
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, true),
        Field::new(
            "at",
            DataType::Timestamp(
                arrow::datatypes::TimeUnit::Microsecond,
                Some("Europe/Zurich".into()),
            ),
            true,
        ),
        Field::new("tags", list.data_type().clone(), true),
        Field::new("colour", dict.data_type().clone(), true),
        Field::new("nested", strukt.data_type().clone(), true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec![Some("héllo ✓"), None, Some("")])),
            Arc::new(ts),
            Arc::new(list),
            Arc::new(dict),
            Arc::new(strukt),
        ],
    )
    .unwrap()
}

#[tokio::test]
async fn tables_round_trip_with_rich_types_on_every_root() {
    for root in roots() {
        let om = Omega::open(&root.url).await.unwrap();
        let ds = om.datasets();
        let batch = rich_batch();
        let name = "ünïcødé/tables/日本語 data";
        let meta = ds
            .put(batch.clone(), name, PutOptions::default())
            .await
            .unwrap();
        assert_eq!(meta.version, 1, "{}", root.kind);
        assert_eq!(meta.kind, "table.delta");
        assert_eq!(meta.kind_meta["rows"], 3);

        let back = ds.get_batches(name, GetOptions::default()).await.unwrap();
        assert_eq!(total_rows(&back), 3);
        let b = arrow::compute::concat_batches(&back[0].schema(), &back).unwrap();
        for f in batch.schema().fields() {
            let want = batch.column_by_name(f.name()).unwrap();
            let to = match f.data_type() {
                DataType::Dictionary(_, v) => v.as_ref().clone(),
                t => t.clone(),
            };
            let got = column_as(&b, f.name(), &to);
            let want = cast(want, &to).unwrap();
            assert_eq!(&got, &want, "column {} on {}", f.name(), root.kind);
        }
        // The time zone survives.
        match b.schema().field_with_name("at").unwrap().data_type() {
            // Delta stores instants in UTC: the zone name becomes UTC, the instants are equal (checked above).
            DataType::Timestamp(_, Some(_)) => {}
            other => panic!("timestamp lost its zone: {other}"),
        }
    }
}

#[tokio::test]
async fn empty_tables_keep_their_schema() {
    for root in roots() {
        let om = Omega::open(&root.url).await.unwrap();
        let schema = sample_batch(0, 1).schema();
        let obj = Object::Table {
            schema: schema.clone(),
            batches: vec![],
        };
        let meta = om
            .datasets()
            .put(obj, "empty", PutOptions::default())
            .await
            .unwrap();
        assert_eq!(meta.kind_meta["rows"], 0);
        let df = om.datasets().getl("empty").await.unwrap();
        let names: Vec<String> = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, vec!["id", "name", "score"]);
        let rows = df.collect().await.unwrap();
        assert_eq!(total_rows(&rows), 0);
        // and an append of rows to it works
        om.datasets()
            .put(sample_batch(0, 4), "empty", PutOptions::default())
            .await
            .unwrap();
        let rows = om
            .datasets()
            .get_batches("empty", GetOptions::default())
            .await
            .unwrap();
        assert_eq!(total_rows(&rows), 4);
    }
}

#[tokio::test]
async fn get_pushes_projection_filter_and_limit() {
    for root in roots() {
        let om = Omega::open(&root.url).await.unwrap();
        om.datasets()
            .put(sample_batch(0, 1000), "t", PutOptions::default())
            .await
            .unwrap();
        let opts = GetOptions {
            columns: Some(vec!["id".into(), "score".into()]),
            filter: Some("id >= 100 AND id < 200 AND score > 60".into()),
            limit: Some(1000),
        };
        let rows = om.datasets().get_batches("t", opts).await.unwrap();
        assert_eq!(total_rows(&rows), 79); // ids 121..=199
        assert_eq!(rows[0].num_columns(), 2);
        let limited = om
            .datasets()
            .get_batches(
                "t",
                GetOptions {
                    limit: Some(7),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(total_rows(&limited), 7);
        let bad = om
            .datasets()
            .get_batches(
                "t",
                GetOptions {
                    columns: Some(vec!["nope".into()]),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(
            bad.to_string().contains("nope") && bad.to_string().contains("id, name, score"),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn documents_round_trip() {
    for root in roots() {
        let om = Omega::open(&root.url).await.unwrap();
        let doc =
            json!({"model": "rf", "params": {"n_trees": 20, "tags": ["ä", null, 1.5]}, "ok": true});
        let meta = om
            .datasets()
            .put(doc.clone(), "cfg/app", PutOptions::default())
            .await
            .unwrap();
        assert_eq!(meta.kind, "json.document");
        assert_eq!(om.datasets().get_document("cfg/app").await.unwrap(), doc);
        // a second put is a new version; the first stays readable
        om.datasets()
            .put(json!([1, 2, 3]), "cfg/app", PutOptions::default())
            .await
            .unwrap();
        assert_eq!(
            om.datasets().get_document("cfg/app").await.unwrap(),
            json!([1, 2, 3])
        );
        assert_eq!(om.datasets().get_document("cfg/app@1").await.unwrap(), doc);
    }
}

#[tokio::test]
async fn raw_files_stream_in_and_out() {
    for root in roots() {
        let om = Omega::open(&root.url).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("blob.bin");
        // 20 MB spans several upload parts
        let data: Vec<u8> = (0..20_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        std::fs::write(&src, &data).unwrap();
        let obj = Object::File {
            path: src.clone(),
            format: FileFormat::Raw,
            schema: None,
        };
        let meta = om
            .datasets()
            .put(obj, "blobs/one", PutOptions::default())
            .await
            .unwrap();
        assert_eq!(meta.kind, "file.raw");
        assert_eq!(meta.kind_meta["size"], 20_000_000);
        let out = dir.path().join("out.bin");
        let n = om
            .datasets()
            .get_to_file("blobs/one", &out, None)
            .await
            .unwrap();
        assert_eq!(n, 20_000_000);
        assert!(
            std::fs::read(&out).unwrap() == data,
            "bytes differ on {}",
            root.kind
        );
        om.datasets()
            .put(
                Object::Bytes(bytes::Bytes::from_static(b"small")),
                "blobs/two",
                PutOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(
            &om.datasets().get_bytes("blobs/two").await.unwrap()[..],
            b"small"
        );
    }
}

/// Puts the file at `path`, read as `format`, as dataset `name`.
async fn put_file(om: &Omega, path: &std::path::Path, format: FileFormat, name: &str) -> Metadata {
    let obj = Object::File {
        path: path.to_path_buf(),
        format,
        schema: None,
    };
    om.datasets()
        .put(obj, name, PutOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn csv_parquet_and_jsonl_files_become_tables() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    std::fs::write(&csv, "a,b,c\n1,x,2.5\n2,,3.5\n3,ü,\n").unwrap();
    let jsonl = dir.path().join("t.jsonl");
    // a value may span lines (arrow's reader takes it; inference too)
    std::fs::write(&jsonl, "{\"a\":1,\n \"b\":\"x\"}\n{\"a\":2,\"b\":null}\n").unwrap();
    let parquet = dir.path().join("t.parquet");
    {
        let f = std::fs::File::create(&parquet).unwrap();
        let b = sample_batch(0, 10);
        let mut w = parquet::arrow::ArrowWriter::try_new(f, b.schema(), None).unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
    }
    for (path, format, rows) in [
        (&csv, FileFormat::Csv, 3),
        (&jsonl, FileFormat::JsonLines, 2),
        (&parquet, FileFormat::Parquet, 10),
    ] {
        let name = format!("files/{format:?}");
        let meta = put_file(&om, path, format, &name).await;
        assert_eq!(meta.kind, "table.delta");
        assert_eq!(meta.kind_meta["rows"], rows, "{name}");
        let back = om
            .datasets()
            .get_batches(&name, GetOptions::default())
            .await
            .unwrap();
        assert_eq!(total_rows(&back), rows);
    }
    let back = om
        .datasets()
        .get_batches(
            "files/Csv",
            GetOptions {
                filter: Some("b = 'ü'".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(total_rows(&back), 1);
    let a = back[0]
        .column_by_name("a")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert_eq!(a.value(0), 3);
}

/// A CSV or JSON-lines file is cut into chunks of a few MiB parsed on all
/// cores: a file of several chunks, with quoted newlines, commas and quotes
/// in its values, is stored whole, every value intact.
#[tokio::test]
async fn files_of_many_chunks_are_stored_whole() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rows: i64 = 200_000;
    const PAD: &str = ": a value long enough to fill several chunks";
    let text = |i: i64| {
        if i % 7 == 0 {
            format!("row {i}{PAD}\nsays \"hi\", then {{goes}} [on]")
        } else {
            format!("row {i}{PAD}")
        }
    };
    let mut csv = String::from("id,text\n");
    let mut jsonl = String::new();
    for i in 0..rows {
        csv.push_str(&format!("{i},\"{}\"\n", text(i).replace('"', "\"\"")));
        jsonl.push_str(&format!("{}\n", json!({"id": i, "text": text(i)})));
    }
    // several chunks of the splitter (1 MiB) each
    assert!(csv.len() > 9 << 20 && jsonl.len() > 9 << 20);
    let expected_len: i64 = (0..rows).map(|i| text(i).chars().count() as i64).sum();
    for (file, body, format) in [
        ("big.csv", csv, FileFormat::Csv),
        ("big.jsonl", jsonl, FileFormat::JsonLines),
    ] {
        let path = dir.path().join(file);
        std::fs::write(&path, body).unwrap();
        let name = format!("big/{format:?}");
        let meta = put_file(&om, &path, format, &name).await;
        assert_eq!(meta.kind_meta["rows"], rows, "{file}");
        let sql = format!(
            "SELECT count(*) AS n, count(DISTINCT id) AS ids, min(id) AS lo, max(id) AS hi, \
             sum(character_length(text)) AS chars, \
             sum(CASE WHEN text = concat('row ', CAST(id AS VARCHAR), '{PAD}') OR \
                 text = concat('row ', CAST(id AS VARCHAR), '{PAD}', chr(10), 'says \"hi\", then {{goes}} [on]') \
                 THEN 1 ELSE 0 END) AS intact \
             FROM \"{name}\""
        );
        let b = om.sql(&sql).await.unwrap().collect().await.unwrap();
        let get = |c: &str| {
            let col = cast(b[0].column_by_name(c).unwrap(), &DataType::Int64).unwrap();
            col.as_primitive::<Int64Type>().value(0)
        };
        assert_eq!(
            [get("n"), get("ids"), get("lo"), get("hi"), get("intact")],
            [rows, rows, 0, rows - 1, rows],
            "{file}"
        );
        assert_eq!(get("chars"), expected_len, "{file}");
    }
}

#[tokio::test]
async fn external_tables_are_read_in_place() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("ext.parquet");
    let write = |n: usize| {
        let f = std::fs::File::create(&parquet).unwrap();
        let b = sample_batch(0, n);
        let mut w = parquet::arrow::ArrowWriter::try_new(f, b.schema(), None).unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
    };
    write(5);
    let obj = Object::External {
        url: parquet.display().to_string(),
        format: ExternalFormat::Parquet,
    };
    let meta = om
        .datasets()
        .put(obj, "ext", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(meta.kind, "table.external");
    assert_eq!(
        total_rows(
            &om.datasets()
                .get_batches("ext", GetOptions::default())
                .await
                .unwrap()
        ),
        5
    );
    // in place: a change to the file is seen by the next get
    write(8);
    assert_eq!(
        total_rows(
            &om.datasets()
                .get_batches("ext", GetOptions::default())
                .await
                .unwrap()
        ),
        8
    );
    // a Delta table written by another store is readable as an external
    // delta location (one inside this store's own root is refused: see
    // tests/access.rs)
    let other_root = common::local();
    let other = Omega::open(&other_root.url).await.unwrap();
    let t = other
        .datasets()
        .put(sample_batch(0, 3), "inner", PutOptions::default())
        .await
        .unwrap();
    let obj = Object::External {
        url: t.uri.clone(),
        format: ExternalFormat::Delta,
    };
    om.datasets()
        .put(obj, "ext-delta", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        total_rows(
            &om.datasets()
                .get_batches("ext-delta", GetOptions::default())
                .await
                .unwrap()
        ),
        3
    );
    // a missing location fails at registration, naming it
    let obj = Object::External {
        url: "/no/such/file.parquet".into(),
        format: ExternalFormat::Parquet,
    };
    let err = om
        .datasets()
        .put(obj, "bad-ext", PutOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/no/such/file.parquet"), "{err}");
    // dropping an external table leaves the data alone
    om.datasets().drop("ext", false).await.unwrap();
    assert!(parquet.exists());
}

/// A user backend with its own kind: stores text upper-cased, as a document.
struct ShoutBackend;

#[async_trait]
impl DataBackend for ShoutBackend {
    fn kinds(&self) -> Vec<String> {
        vec!["text.shout".into()]
    }
    fn supports(&self, obj: &Object) -> bool {
        matches!(obj, Object::Any(v) if v.is::<String>())
    }
    async fn put(
        &self,
        _cx: &BackendContext<'_>,
        obj: Object,
        _previous: Option<&Metadata>,
        _opts: &PutOptions,
    ) -> omegastore::Result<Written> {
        let Object::Any(v) = obj else {
            unreachable!("supports() checked it")
        };
        let text = v.downcast_ref::<String>().unwrap().to_uppercase();
        Ok(Written {
            kind: "text.shout".into(),
            uri: String::new(),
            kind_meta: json!({ "text": text }),
        })
    }
    async fn get(
        &self,
        _cx: &BackendContext<'_>,
        meta: &Metadata,
        _opts: &GetOptions,
    ) -> omegastore::Result<Data> {
        Ok(Data::Any(Box::new(
            meta.kind_meta["text"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )))
    }
    async fn drop_data(
        &self,
        _cx: &BackendContext<'_>,
        _versions: &[Metadata],
    ) -> omegastore::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn user_backends_plug_in_and_unknown_kinds_do_not_break_listing() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    om.register_backend(Arc::new(ShoutBackend));
    let meta = om
        .datasets()
        .put(
            Object::Any(Box::new("hello".to_string())),
            "greeting",
            PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(meta.kind, "text.shout");
    match om
        .datasets()
        .get("greeting", GetOptions::default())
        .await
        .unwrap()
    {
        Data::Any(v) => assert_eq!(v.downcast_ref::<String>().unwrap(), "HELLO"),
        _ => panic!("expected the custom object"),
    }
    om.datasets()
        .put(sample_batch(0, 2), "table", PutOptions::default())
        .await
        .unwrap();

    // A process without the backend: listing works, get is a typed error.
    let other = Omega::open(&root.url).await.unwrap();
    let names: Vec<String> = other
        .datasets()
        .list(None, &Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, vec!["greeting", "table"]);
    match other
        .datasets()
        .get("greeting", GetOptions::default())
        .await
    {
        Err(StoreError::UnknownKind { name, kind }) => {
            assert_eq!((name.as_str(), kind.as_str()), ("greeting", "text.shout"))
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("expected an error"),
    }
    // an explicit unknown kind on put is a typed error too
    let err = other
        .datasets()
        .put(
            json!(1),
            "x",
            PutOptions {
                kind: Some("no.such".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoBackend { .. }), "{err}");
}

/// Daily CSV appends: each file is read with the table's types, not with
/// what one file suggests (an empty column, `007` in a string column, whole
/// numbers in a float column); a value the table's type cannot hold is a
/// typed error naming the file and line, and commits nothing.
#[tokio::test]
async fn a_csv_appended_to_a_table_is_read_with_the_tables_types() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let put = |body: &'static str, file: &'static str| {
        let om = om.clone();
        let path = dir.path().join(file);
        async move {
            std::fs::write(&path, body).unwrap();
            let obj = Object::File {
                path,
                format: FileFormat::Csv,
                schema: None,
            };
            om.datasets().put(obj, "daily", PutOptions::default()).await
        }
    };
    put("id,code,price,at\n1,x1,2.5,2024-01-01T00:00:00\n", "d1.csv")
        .await
        .unwrap();
    put("id,code,price,at\n2,007,3,\n", "d2.csv").await.unwrap();
    put("id,code,price,at\n3,,,2024-01-03T10:00:00\n", "d3.csv")
        .await
        .unwrap();
    let batches = om
        .sql("SELECT id, code, price, at FROM daily ORDER BY id")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut rows = Vec::new();
    for b in &batches {
        let cols: Vec<_> = b
            .columns()
            .iter()
            .map(|c| cast(c, &DataType::Utf8).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            let cells: Vec<String> = cols
                .iter()
                .map(|c| {
                    let s = c
                        .as_any()
                        .downcast_ref::<arrow::array::StringArray>()
                        .unwrap();
                    if s.is_null(r) {
                        String::new()
                    } else {
                        s.value(r).to_string()
                    }
                })
                .collect();
            rows.push(cells.join("|"));
        }
    }
    assert_eq!(
        rows,
        vec![
            "1|x1|2.5|2024-01-01T00:00:00",
            "2|007|3.0|",
            "3|||2024-01-03T10:00:00"
        ]
    );
    let e = put("id,code,price,at\n4,y,cheap,\n", "d4.csv")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("d4.csv") && e.contains("line"), "{e}");
    assert_eq!(om.datasets().metadata("daily").await.unwrap().version, 3);
}

/// The data files of a local table version, as its Delta snapshot lists them.
async fn data_files(root: &common::TestRoot, meta: &Metadata) -> Vec<std::path::PathBuf> {
    let base = match url::Url::parse(&root.url) {
        Ok(u) => u.to_file_path().unwrap(),
        Err(_) => std::path::PathBuf::from(&root.url),
    };
    let dir = base.join(meta.kind_meta["location"].as_str().unwrap());
    let url = url::Url::from_directory_path(std::path::absolute(&dir).unwrap()).unwrap();
    let table = deltalake::DeltaTableBuilder::from_url(url)
        .unwrap()
        .with_version(meta.kind_meta["delta_version"].as_u64().unwrap())
        .load()
        .await
        .unwrap();
    table
        .snapshot()
        .unwrap()
        .log_data()
        .iter()
        .map(|f| dir.join(f.path().as_ref()))
        .collect()
}

/// Column `c` (as i64) of each Parquet file of a local table version.
async fn file_columns(root: &common::TestRoot, meta: &Metadata, c: &str) -> Vec<Vec<i64>> {
    let mut out = Vec::new();
    for f in data_files(root, meta).await {
        let file = std::fs::File::open(f).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let mut values = Vec::new();
        for b in reader {
            let b = b.unwrap();
            let col = cast(b.column_by_name(c).unwrap(), &DataType::Int64).unwrap();
            let col = col.as_any().downcast_ref::<Int64Array>().unwrap();
            values.extend(col.iter().map(|v| v.unwrap_or(i64::MAX)));
        }
        out.push(values);
    }
    out
}

/// Data files keep dictionary pages small: a column of distinct values
/// falls back to plain pages after at most 64 KiB of dictionary (a point
/// lookup decodes the dictionary page of every column it reads), a column
/// of few values is still dictionary-encoded.
#[tokio::test]
async fn dictionary_pages_stay_small() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let n = 200_000i64;
    let batch = RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..n)) as arrow::array::ArrayRef,
        ),
        (
            "k",
            Arc::new(Int64Array::from_iter_values((0..n).map(|i| i % 100))) as _,
        ),
    ])
    .unwrap();
    let meta = om
        .datasets()
        .put(batch, "d", PutOptions::default())
        .await
        .unwrap();
    let files = data_files(&root, &meta).await;
    assert_eq!(files.len(), 1);
    let file = std::fs::File::open(&files[0]).unwrap();
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(file).unwrap();
    let md = parquet::file::reader::FileReader::metadata(&reader);
    for rg in md.row_groups() {
        let dictionary_bytes = |i: usize| {
            let c = rg.column(i);
            c.dictionary_page_offset()
                .map(|d| c.data_page_offset() - d)
                .unwrap_or(0)
        };
        assert!(
            (1..=64 * 1024 + 1024).contains(&dictionary_bytes(0)),
            "id's dictionary page is {} bytes",
            dictionary_bytes(0)
        );
        assert!(dictionary_bytes(1) > 0, "k has no dictionary");
    }
    assert_eq!(
        common::scalar(&om, "SELECT count(*) FROM d WHERE id = 123456").await,
        1
    );
}

/// The codec of each column of a stored file, by name.
fn codecs(path: &std::path::Path) -> Vec<(String, parquet::basic::Compression)> {
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(file).unwrap();
    let md = parquet::file::reader::FileReader::metadata(&reader);
    let rg = md.row_group(0);
    (0..rg.num_columns())
        .map(|i| {
            (
                rg.column(i).column_path().string(),
                rg.column(i).compression(),
            )
        })
        .collect()
}

/// Number columns are stored uncompressed (a read copies them out of the
/// page instead of decompressing it), strings with LZ4; a version written
/// by an UPDATE follows the same rule.
#[tokio::test]
async fn number_columns_are_stored_uncompressed_and_strings_compressed() {
    use parquet::basic::Compression::{LZ4_RAW, UNCOMPRESSED};
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    common::exec(
        &om,
        "CREATE TABLE m AS SELECT value AS id, CAST(value AS DOUBLE) / 3 AS x, \
         CAST(value AS DECIMAL(12, 2)) AS price, value % 2 = 0 AS even, \
         'name-' || (value % 50) AS name, DATE '2026-01-01' + CAST(value % 90 AS INT) AS day \
         FROM generate_series(1, 5000)",
    )
    .await;
    let expected = vec![
        ("id".to_string(), UNCOMPRESSED),
        ("x".to_string(), UNCOMPRESSED),
        ("price".to_string(), UNCOMPRESSED),
        ("even".to_string(), UNCOMPRESSED),
        ("name".to_string(), LZ4_RAW),
        ("day".to_string(), UNCOMPRESSED),
    ];
    let meta = om.datasets().metadata("m").await.unwrap();
    let files = data_files(&root, &meta).await;
    assert!(!files.is_empty());
    for f in &files {
        assert_eq!(codecs(f), expected, "{}", f.display());
    }
    common::exec(&om, "UPDATE m SET x = x + 1 WHERE id <= 10").await;
    let updated = om.datasets().metadata("m").await.unwrap();
    let new_files: Vec<_> = data_files(&root, &updated)
        .await
        .into_iter()
        .filter(|f| !files.contains(f))
        .collect();
    assert!(!new_files.is_empty(), "the update wrote no file");
    for f in &new_files {
        assert_eq!(codecs(f), expected, "{}", f.display());
    }
    assert_eq!(
        common::scalar(&om, "SELECT count(*) FROM m WHERE x > 1 AND id <= 10").await,
        10
    );
}

/// `sort_by` writes the rows in that order and keeps it as the table's
/// order: an append without its own follows it, each file is sorted; an
/// unknown column is a typed error that commits nothing.
#[tokio::test]
async fn a_sort_order_is_written_kept_and_followed_by_appends() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let batch = |seed: i64| {
        let g: Vec<i64> = (0..500).map(|i| (i * 7919 + seed) % 13).collect();
        let v: Vec<i64> = (0..500).map(|i| (i * 104_729 + seed) % 1000).collect();
        RecordBatch::try_from_iter(vec![
            ("g", Arc::new(Int64Array::from(g)) as arrow::array::ArrayRef),
            ("v", Arc::new(Int64Array::from(v)) as arrow::array::ArrayRef),
        ])
        .unwrap()
    };
    let sorted = PutOptions {
        sort_by: vec!["g".into(), "v".into()],
        ..Default::default()
    };
    om.datasets().put(batch(1), "s", sorted).await.unwrap();
    let meta = om
        .datasets()
        .put(batch(2), "s", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(meta.kind_meta["sort_by"], json!(["g", "v"]));
    let gs = file_columns(&root, &meta, "g").await;
    let vs = file_columns(&root, &meta, "v").await;
    assert_eq!(gs.len(), 2, "one file per put");
    for (g, v) in gs.iter().zip(&vs) {
        let keys: Vec<(i64, i64)> = g.iter().copied().zip(v.iter().copied()).collect();
        assert!(
            keys.windows(2).all(|w| w[0] <= w[1]),
            "a file is not sorted"
        );
        assert_eq!(keys.len(), 500);
    }
    assert_eq!(common::rows(&om, "s").await, 1000);

    let bad = PutOptions {
        sort_by: vec!["nope".into()],
        ..Default::default()
    };
    let e = om.datasets().put(batch(3), "s", bad).await.unwrap_err();
    assert!(
        e.to_string().contains("'nope' cannot be a sort key") && e.to_string().contains("g, v"),
        "{e}"
    );
    assert_eq!(om.datasets().metadata("s").await.unwrap().version, 2);

    // optimize --sort-by: the same rows rewritten in a new order, kept as the order
    let (meta, rows) = om
        .datasets()
        .change_table("s", omegastore::store::TableChange::sort(vec!["v".into()]))
        .await
        .unwrap();
    assert_eq!((meta.version, rows), (3, 1000));
    assert_eq!(meta.kind_meta["sort_by"], json!(["v"]));
    let vs = file_columns(&root, &meta, "v").await;
    assert!(vs.iter().all(|v| v.windows(2).all(|w| w[0] <= w[1])));
    assert_eq!(vs.iter().map(Vec::len).sum::<usize>(), 1000);
    assert_eq!(
        common::scalar(&om, "SELECT sum(v * 1000 + g) FROM s").await,
        common::scalar(&om, "SELECT sum(v * 1000 + g) FROM \"s@2\"").await,
        "same rows"
    );

    // CREATE TABLE … AS … ORDER BY: the order is the new table's stored order
    common::exec(&om, "CREATE TABLE c AS SELECT v, g FROM s ORDER BY v").await;
    let meta = om.datasets().metadata("c").await.unwrap();
    assert_eq!(meta.kind_meta["sort_by"], json!(["v"]));
    let vs = file_columns(&root, &meta, "v").await;
    assert!(vs.iter().all(|v| v.windows(2).all(|w| w[0] <= w[1])));
    assert_eq!(vs.iter().map(Vec::len).sum::<usize>(), 1000);
    // ORDER BY … LIMIT, or descending: rows as the query gives them, no stored order
    common::exec(&om, "CREATE TABLE d AS SELECT v FROM s ORDER BY v DESC").await;
    let meta = om.datasets().metadata("d").await.unwrap();
    assert!(meta.kind_meta.get("sort_by").is_none());
}

/// The `(pruned, matched)` counts of a pruning metric of the Parquet scan
/// in `EXPLAIN ANALYZE` of `sql` (summed over partitions).
async fn pruning(om: &Omega, sql: &str, metric: &str) -> (u64, u64) {
    let text = common::explain_analyze(om, sql).await;
    let at = text
        .find(&format!("{metric}="))
        .unwrap_or_else(|| panic!("no {metric} in {text}"));
    // "<metric>=N total → M matched", counts like 100.0 K
    let text = &text[at + metric.len() + 1..];
    let text = &text[..text.find(" matched").unwrap()];
    let (total, matched) = text.split_once(" total → ").unwrap();
    let count = |s: &str| -> u64 {
        let (n, unit) = s.trim().split_once(' ').unwrap_or((s.trim(), ""));
        let factor = match unit {
            "K" => 1e3,
            "M" => 1e6,
            _ => 1.0,
        };
        (n.parse::<f64>().unwrap() * factor).round() as u64
    };
    let (total, matched) = (count(total), count(matched));
    (total - matched, matched)
}

/// 25,000 rows of `id` and `key` (`key-000042`), ids and keys spread over
/// the whole range 0..100,000 in every part.
fn spread_keys(part: i64) -> RecordBatch {
    let ids: Vec<i64> = (0..25_000).map(|i| (i * 7919 + part) % 100_000).collect();
    let keys: Vec<String> = ids.iter().map(|i| format!("key-{i:06}")).collect();
    RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("key", Arc::new(StringArray::from(keys)) as _),
    ])
    .unwrap()
}

/// What the writer lays out shows in the scan: a stored sort order lets a
/// lookup skip pages by their statistics, Bloom filters let an equality
/// filter skip row groups that min/max cannot rule out; without them
/// nothing is skipped. The answers are the same.
#[tokio::test]
async fn sort_order_and_bloom_filters_skip_data() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let batch = spread_keys;
    for (name, opts) in [
        ("plain", PutOptions::default()),
        (
            "laid_out",
            PutOptions {
                sort_by: vec!["id".into()],
                bloom_filters: vec!["key".into()],
                ..Default::default()
            },
        ),
    ] {
        om.datasets().put(batch(0), name, opts).await.unwrap();
        for part in 1..4 {
            // appends follow the table's order and Bloom filter columns
            let meta = om
                .datasets()
                .put(batch(part), name, PutOptions::default())
                .await
                .unwrap();
            assert_eq!(meta.version, part as u64 + 1);
        }
    }
    let meta = om.datasets().metadata("laid_out").await.unwrap();
    assert_eq!(meta.kind_meta["bloom_filters"], json!(["key"]));

    // a key inside every file's min/max that no file holds
    let absent = "SELECT count(*) FROM {t} WHERE key = 'key-050000x'";
    for t in ["plain", "laid_out"] {
        assert_eq!(common::scalar(&om, &absent.replace("{t}", t)).await, 0);
    }
    let (pruned, matched) = pruning(
        &om,
        &absent.replace("{t}", "laid_out"),
        "row_groups_pruned_bloom_filter",
    )
    .await;
    assert_eq!(
        (pruned, matched),
        (4, 0),
        "every row group skipped by its Bloom filter"
    );
    let (pruned, _) = pruning(
        &om,
        &absent.replace("{t}", "plain"),
        "row_groups_pruned_bloom_filter",
    )
    .await;
    assert_eq!(pruned, 0, "no Bloom filters, nothing skipped");

    // a lookup by id: pages of a sorted file hold narrow id ranges
    let (meta, _) = om
        .datasets()
        .change_table(
            "laid_out",
            omegastore::store::TableChange::sort(vec!["id".into()]),
        )
        .await
        .unwrap();
    assert_eq!(
        meta.kind_meta["bloom_filters"],
        json!(["key"]),
        "a rewrite keeps them"
    );
    let lookup = "SELECT key FROM {t} WHERE id = 42424";
    let (sorted_pruned, sorted_matched) = pruning(
        &om,
        &lookup.replace("{t}", "laid_out"),
        "page_index_rows_pruned",
    )
    .await;
    let (plain_pruned, plain_matched) = pruning(
        &om,
        &lookup.replace("{t}", "plain"),
        "page_index_rows_pruned",
    )
    .await;
    assert!(
        sorted_pruned > 3 * sorted_matched && plain_matched > 3 * plain_pruned,
        "sorted: {sorted_pruned} rows skipped, {sorted_matched} read; \
         unsorted: {plain_pruned} skipped, {plain_matched} read"
    );
    assert_eq!(
        common::scalar(&om, "SELECT count(*) FROM laid_out WHERE id = 42424").await,
        common::scalar(&om, "SELECT count(*) FROM plain WHERE id = 42424").await,
    );

    // an unknown Bloom filter column is refused; nothing committed
    let bad = PutOptions {
        bloom_filters: vec!["nope".into()],
        ..Default::default()
    };
    let e = om
        .datasets()
        .put(batch(9), "laid_out", bad)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("'nope' cannot be a Bloom filter column"),
        "{e}"
    );
    assert_eq!(om.datasets().metadata("laid_out").await.unwrap().version, 5);
    // a DELETE rewrites files with the table's Bloom filters
    common::exec(&om, "DELETE FROM laid_out WHERE id < 10").await;
    let (pruned, matched) = pruning(
        &om,
        &absent.replace("{t}", "laid_out"),
        "row_groups_pruned_bloom_filter",
    )
    .await;
    assert_eq!(matched, 0, "{pruned} pruned after the delete");
}

/// Bloom filters added to a table already stored (`ALTER TABLE … SET
/// (bloom_filters = …)`, `om datasets optimize --bloom`): the files are
/// rewritten with them, the sort order stays, later writes add them too,
/// and `''` takes them away again. The rows never change.
#[tokio::test]
async fn bloom_filters_are_added_to_a_stored_table_and_taken_away() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let batch = spread_keys;
    let opts = PutOptions {
        sort_by: vec!["id".into()],
        ..Default::default()
    };
    om.datasets().put(batch(0), "t", opts).await.unwrap();
    om.datasets()
        .put(batch(1), "t", PutOptions::default())
        .await
        .unwrap();
    let absent = "SELECT count(*) FROM t WHERE key = 'key-050000x'";
    let present = "SELECT count(*), sum(id) FROM t WHERE key = 'key-004242'";
    let answer = |om: &Omega| {
        let om = om.clone();
        async move {
            let b = om.sql(present).await.unwrap().collect().await.unwrap();
            arrow::util::pretty::pretty_format_batches(&b)
                .unwrap()
                .to_string()
        }
    };
    let before = answer(&om).await;
    let metric = "row_groups_pruned_bloom_filter";
    assert_eq!(pruning(&om, absent, metric).await.0, 0, "none yet");

    common::exec(&om, "ALTER TABLE t SET (bloom_filters = 'key')").await;
    let meta = om.datasets().metadata("t").await.unwrap();
    assert_eq!(meta.version, 3);
    assert_eq!(meta.kind_meta["bloom_filters"], json!(["key"]));
    assert_eq!(meta.kind_meta["sort_by"], json!(["id"]), "the order stays");
    let (pruned, matched) = pruning(&om, absent, metric).await;
    assert!(
        pruned > 0 && matched == 0,
        "{pruned} pruned, {matched} read"
    );
    assert_eq!(answer(&om).await, before);

    // a later write adds them to its files too
    om.datasets()
        .put(batch(2), "t", PutOptions::default())
        .await
        .unwrap();
    let (pruned_after, matched) = pruning(&om, absent, metric).await;
    assert!(
        pruned_after > pruned && matched == 0,
        "{pruned_after} pruned, {matched} read"
    );

    // none again: through the store's API (what optimize --bloom '' runs)
    let (meta, rows) = om
        .datasets()
        .change_table("t", omegastore::store::TableChange::bloom(vec![]))
        .await
        .unwrap();
    assert_eq!(rows, 75_000);
    assert!(meta.kind_meta.get("bloom_filters").is_none());
    assert_eq!(meta.kind_meta["sort_by"], json!(["id"]));
    assert_eq!(pruning(&om, absent, metric).await.0, 0, "taken away");
    assert_eq!(common::scalar(&om, "SELECT count(*) FROM t").await, 75_000);
}

/// Both layout options in one statement are one rewrite: one new version,
/// sorted (pages skipped on the sort column) and with Bloom filters (row
/// groups skipped on the filtered one), the rows unchanged; `om datasets
/// optimize --sort-by … --bloom …` does the same, and `--bloom ''` there
/// drops the filters while re-sorting.
#[tokio::test]
async fn sort_order_and_bloom_filters_are_one_rewrite() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    for part in 0..2 {
        om.datasets()
            .put(spread_keys(part), "t", PutOptions::default())
            .await
            .unwrap();
    }
    let sum = "SELECT count(*), sum(id), min(key), max(key) FROM t";
    let answer = |om: &Omega| {
        let om = om.clone();
        async move {
            let b = om.sql(sum).await.unwrap().collect().await.unwrap();
            arrow::util::pretty::pretty_format_batches(&b)
                .unwrap()
                .to_string()
        }
    };
    let before = answer(&om).await;
    let lookup = "SELECT count(*) FROM t WHERE id = 4242";
    let absent = "SELECT count(*) FROM t WHERE key = 'key-050000x'";
    assert_eq!(pruning(&om, lookup, "page_index_rows_pruned").await.0, 0);

    common::exec(
        &om,
        "ALTER TABLE t SET (sort_by = 'id', bloom_filters = 'key')",
    )
    .await;
    let meta = om.datasets().metadata("t").await.unwrap();
    assert_eq!(meta.version, 3, "one new version for both options");
    assert_eq!(meta.kind_meta["sort_by"], json!(["id"]));
    assert_eq!(meta.kind_meta["bloom_filters"], json!(["key"]));
    assert_eq!(answer(&om).await, before);
    let (pages, _) = pruning(&om, lookup, "page_index_rows_pruned").await;
    assert!(pages > 0, "sorted: the lookup skips pages");
    let (groups, read) = pruning(&om, absent, "row_groups_pruned_bloom_filter").await;
    assert!(groups > 0 && read == 0, "{groups} pruned, {read} read");

    // the CLI: a new order and no filters, again one version
    let out = common::run_ok(common::om(&root).args([
        "datasets",
        "optimize",
        "t",
        "--sort-by",
        "key",
        "--bloom",
        "",
    ]));
    assert!(
        out.contains("rewrote 50000 rows of t sorted by key with no Bloom filters")
            && out.contains("(version 3 -> 4)"),
        "{out}"
    );
    let meta = om.datasets().metadata("t").await.unwrap();
    assert_eq!(meta.kind_meta["sort_by"], json!(["key"]));
    assert!(meta.kind_meta.get("bloom_filters").is_none());
    assert_eq!(answer(&om).await, before);
    assert_eq!(
        pruning(&om, absent, "row_groups_pruned_bloom_filter")
            .await
            .0,
        0
    );

    // a bad column in either refuses the whole statement: nothing committed
    for (sql, says) in [
        (
            "ALTER TABLE t SET (sort_by = 'nope', bloom_filters = 'key')",
            "'nope' cannot be a sort key",
        ),
        (
            "ALTER TABLE t SET (sort_by = 'id', bloom_filters = 'nope')",
            "'nope' cannot be a Bloom filter column",
        ),
    ] {
        let e = match om.sql(sql).await {
            Ok(df) => df.collect().await.unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(says), "{sql}: {e}");
    }
    assert_eq!(om.datasets().metadata("t").await.unwrap().version, 4);
}

/// `optimize --zorder x,y` clusters the rows so that pages hold narrow
/// ranges of both columns: a filter on either skips pages, where a sort by
/// x leaves y's pages spanning everything. Same rows, a new version, typed
/// errors for bad columns.
#[tokio::test]
async fn z_order_lets_filters_on_every_column_skip_data() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let batch = |part: i64| {
        let n = 50_000i64;
        let x: Vec<i64> = (0..n).map(|i| (i * 7919 + part * 13) % 1000).collect();
        let y: Vec<i64> = (0..n).map(|i| (i * 104_729 + part * 31) % 1000).collect();
        RecordBatch::try_from_iter(vec![
            ("x", Arc::new(Int64Array::from(x)) as arrow::array::ArrayRef),
            ("y", Arc::new(Int64Array::from(y)) as _),
        ])
        .unwrap()
    };
    for name in ["z", "s"] {
        for part in 0..4 {
            om.datasets()
                .put(batch(part), name, PutOptions::default())
                .await
                .unwrap();
        }
    }
    let sum = "SELECT sum(x * 1000 + y) FROM {t}";
    let before = common::scalar(&om, &sum.replace("{t}", "z")).await;
    let (meta, rows) = om
        .datasets()
        .change_table(
            "z",
            omegastore::store::TableChange::ZOrder(vec!["x".into(), "y".into()]),
        )
        .await
        .unwrap();
    assert_eq!((meta.version, rows), (5, 200_000));
    assert_eq!(meta.kind_meta["zorder"], json!(["x", "y"]));
    assert_eq!(common::scalar(&om, &sum.replace("{t}", "z")).await, before);
    om.datasets()
        .change_table("s", omegastore::store::TableChange::sort(vec!["x".into()]))
        .await
        .unwrap();

    let skipped = |t: &'static str, col: &'static str| {
        let om = om.clone();
        async move {
            let q = format!("SELECT count(*) FROM {t} WHERE {col} = 500");
            let (pruned, matched) = pruning(&om, &q, "page_index_rows_pruned").await;
            pruned as f64 / (pruned + matched) as f64
        }
    };
    let (zx, zy, sx, sy) = (
        skipped("z", "x").await,
        skipped("z", "y").await,
        skipped("s", "x").await,
        skipped("s", "y").await,
    );
    assert!(
        zx > 0.3 && zy > 0.3,
        "z-order skips on both: x {zx:.2}, y {zy:.2}"
    );
    assert!(
        sx > 0.8 && sy < 0.05,
        "a sort by x skips on x only: x {sx:.2}, y {sy:.2}"
    );

    for (columns, says) in [
        (
            vec!["nope".to_string()],
            "'nope' cannot be a Z-order column",
        ),
        (vec![], "at least one column"),
    ] {
        let e = om
            .datasets()
            .change_table("z", omegastore::store::TableChange::ZOrder(columns))
            .await
            .unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    }
    assert_eq!(om.datasets().metadata("z").await.unwrap().version, 5);
}

/// A count metric in `EXPLAIN ANALYZE` of `sql`, summed over the nodes
/// that report it; 0 when none does. Counts are shown rounded past a
/// thousand (`199.9 K`), so they are read to that precision.
async fn scan_count(om: &Omega, sql: &str, metric: &str) -> u64 {
    let text = common::explain_analyze(om, sql).await;
    text.match_indices(&format!("{metric}="))
        .map(|(at, m)| {
            let rest = &text[at + m.len()..];
            let number: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let scale = match rest[number.len()..].get(..2) {
                Some(" K") => 1e3,
                Some(" M") => 1e6,
                Some(" B") => 1e9,
                _ => 1.0,
            };
            (number.parse::<f64>().unwrap() * scale).round() as u64
        })
        .sum()
}

/// Filters run over decoded batches by default (BENCHMARKS.md: the
/// decoder's row selections cost more than they spare); a session that
/// wants them inside the decoder says so with DataFusion's own setting, and
/// the scans it plans afterwards honour it. The answer is the same.
#[tokio::test]
async fn a_session_can_turn_filters_inside_the_parquet_decoder_on() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    // every value in every row group: statistics cannot prune
    let g: Vec<i64> = (0..900).map(|i| i % 9).collect();
    let batch =
        RecordBatch::try_from_iter(vec![("g", Arc::new(Int64Array::from(g)) as ArrayRef)]).unwrap();
    om.datasets()
        .put(batch, "p", PutOptions::default())
        .await
        .unwrap();
    let query = "SELECT count(*) FROM p WHERE g = 3";
    assert_eq!(common::scalar(&om, query).await, 100);
    assert_eq!(scan_count(&om, query, "pushdown_rows_pruned").await, 0);

    common::exec(
        &om,
        "SET datafusion.execution.parquet.pushdown_filters = true",
    )
    .await;
    assert_eq!(common::scalar(&om, query).await, 100);
    assert_eq!(
        scan_count(&om, query, "pushdown_rows_pruned").await,
        800,
        "the decoder drops the rows the filter rejects"
    );
    assert_eq!(scan_count(&om, query, "pushdown_rows_matched").await, 100);

    common::exec(&om, "RESET datafusion.execution.parquet.pushdown_filters").await;
    assert_eq!(scan_count(&om, query, "pushdown_rows_pruned").await, 0);
}

/// Large scans of a local store read Parquet through memory maps, and
/// what they read is exactly what was stored.
#[tokio::test]
async fn large_local_scans_read_through_maps_and_answer_exactly() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    // a small table is read with plain reads (the count is this test's
    // own: it counts on this thread, and a tokio test runs on one)
    om.datasets()
        .put(sample_batch(0, 100), "small", PutOptions::default())
        .await
        .unwrap();
    let before = omegastore::store::durable::mapped_reads();
    assert_eq!(
        common::scalar(&om, "SELECT count(id) FROM small WHERE id >= 0").await,
        100
    );
    assert_eq!(
        omegastore::store::durable::mapped_reads(),
        before,
        "a scan of a few KiB used a map"
    );
    let n = 400_000;
    let stored = sample_batch(0, n);
    om.datasets()
        .put(stored.clone(), "big", PutOptions::default())
        .await
        .unwrap();
    let before = omegastore::store::durable::mapped_reads();
    let got = om
        .sql("SELECT * FROM big ORDER BY id")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(
        omegastore::store::durable::mapped_reads() > before,
        "a scan of several MiB used no map"
    );
    let got = arrow::compute::concat_batches(&got[0].schema(), &got).unwrap();
    assert_eq!(got.num_rows(), n);
    for (i, want) in stored.columns().iter().enumerate() {
        let column = cast(got.column(i), want.data_type()).unwrap();
        assert_eq!(&column, want, "column {}", stored.schema().field(i).name());
    }
}

/// The rows of `sql`, as text (the query orders them).
async fn rows_text(om: &Omega, sql: &str) -> String {
    let batches = om.sql(sql).await.unwrap().collect().await.unwrap();
    arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string()
}

/// An aggregate a statement names twice (a CTE used twice: TPC-H q15's
/// shape) is computed once, one scan of the table for both, with the
/// answers of computing it twice. An aggregate with a volatile expression is
/// computed per occurrence, as before.
#[tokio::test]
async fn an_aggregate_named_twice_is_computed_once() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    common::exec(
        &om,
        "CREATE TABLE sales AS SELECT value AS id, value % 100 AS k, value * 7 % 1000 AS v \
         FROM generate_series(0, 9999)",
    )
    .await;
    let queries = [
        // q15: the CTE joined, and under a scalar subquery
        "WITH r AS (SELECT k, sum(v) AS s FROM sales GROUP BY k) \
         SELECT k, s FROM r WHERE s = (SELECT max(s) FROM r) ORDER BY k",
        // a self-join of an aggregate (both sides read the same columns:
        // columns one side leaves out are pruned from its copy first)
        "WITH r AS (SELECT k, sum(v) AS s, count(*) AS n FROM sales GROUP BY k) \
         SELECT a.k, a.s, b.s, a.n + b.n FROM r a JOIN r b ON a.k = b.k + 1 WHERE a.s > b.s ORDER BY a.k",
        // the same aggregate filtered two ways on its values (a filter on
        // a grouping key goes below the aggregate, into one copy only)
        "WITH r AS (SELECT k, avg(v) AS m FROM sales WHERE id > 5000 GROUP BY k) \
         SELECT count(*), sum(k) FROM (SELECT k FROM r WHERE m > 500 UNION ALL SELECT k FROM r WHERE m < 300)",
        // r twice inside t (shared whole) and once more on its own: r's
        // third occurrence has nothing left to share with, so only t is
        "WITH r AS (SELECT k, sum(v) AS s FROM sales GROUP BY k), \
              t AS (SELECT k % 10 AS g, max(s) AS m FROM r GROUP BY k % 10) \
         SELECT (SELECT count(*) FROM t a JOIN t b ON a.g = b.g AND a.m = b.m), \
                (SELECT min(s) FROM r)",
    ];
    // (occurrences of shared subplans, how many of them computed theirs)
    let sharing = |q: &'static str| {
        let om = &om;
        async move {
            let text = common::explain_analyze(om, q).await;
            let occurrences = text.matches("SharedSubplanExec").count();
            (occurrences, scan_count(om, q, "computed").await)
        }
    };
    let mut shared = vec![];
    for q in queries {
        assert_eq!(sharing(q).await, (2, 1), "{q}");
        shared.push(rows_text(&om, q).await);
    }
    // every query has a row (pretty tables: 4 lines of frame and header)
    assert!(shared.iter().all(|t| t.lines().count() > 4), "{shared:?}");

    // random() differs per occurrence: never shared
    let volatile = "WITH r AS (SELECT k, sum(v * random()) AS s FROM sales GROUP BY k) \
                    SELECT count(*) FROM r a JOIN r b ON a.k = b.k AND a.s = b.s";
    assert_eq!(sharing(volatile).await, (0, 0));
    assert_eq!(common::scalar(&om, volatile).await, 0);

    common::exec(&om, "SET omega_exec.share_repeated_subplans = false").await;
    for (q, want) in queries.iter().zip(&shared) {
        assert_eq!(sharing(q).await, (0, 0), "{q}");
        assert_eq!(&rows_text(&om, q).await, want, "{q}");
    }
}

/// A hash join's dynamic filter (its build keys) drops the probe rows it
/// rules out as they leave the scan when they would otherwise reach costly
/// work first (here an aggregate); a join right over the scan drops them
/// itself, for less; a filter that keeps every row is soon let be. Answers
/// are those of the plan without it, and joins that must keep unmatched
/// probe rows (outer joins, NULL keys) keep them.
#[tokio::test]
async fn join_filters_drop_probe_rows_at_the_scan() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let n = 200_000i64;
    let k: Vec<Option<i64>> = (0..n)
        .map(|i| (i % 1000 != 999).then_some(i % 10_000))
        .collect();
    let facts = RecordBatch::try_from_iter(vec![
        ("k", Arc::new(Int64Array::from(k)) as ArrayRef),
        (
            "v",
            Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
        ),
    ])
    .unwrap();
    om.datasets()
        .put(facts, "facts", PutOptions::default())
        .await
        .unwrap();
    let keys = RecordBatch::try_from_iter(vec![(
        "k",
        Arc::new(Int64Array::from(vec![
            Some(3),
            Some(77),
            Some(9000),
            Some(12_345),
            None,
        ])) as ArrayRef,
    )])
    .unwrap();
    om.datasets()
        .put(keys, "keys", PutOptions::default())
        .await
        .unwrap();
    // every facts key, as a build side that keeps every probe row
    common::exec(&om, "CREATE TABLE all_keys AS SELECT DISTINCT k FROM facts").await;

    let through_aggregate = "SELECT k, n, s FROM (SELECT k, count(*) AS n, sum(v) AS s FROM facts GROUP BY k) JOIN keys USING (k) ORDER BY k";
    let direct =
        "SELECT f.k, count(*), sum(f.v) FROM facts f JOIN keys USING (k) GROUP BY f.k ORDER BY f.k";
    let keeps_all = "SELECT count(*), sum(s) FROM (SELECT k, sum(v) AS s FROM facts GROUP BY k) JOIN all_keys USING (k)";
    let queries = [
        through_aggregate,
        direct,
        keeps_all,
        "SELECT count(*), count(f.k), sum(f.v) FROM facts f LEFT JOIN keys k ON f.k = k.k",
        "SELECT count(*), sum(v) FROM facts WHERE k IN (SELECT k FROM keys)",
        "SELECT count(*), sum(v) FROM facts WHERE k NOT IN (SELECT k FROM keys WHERE k IS NOT NULL)",
        "SELECT v FROM facts ORDER BY v DESC LIMIT 3",
    ];
    let mut with = vec![];
    for q in queries {
        with.push(rows_text(&om, q).await);
    }
    assert!(
        with[0].contains("| 3 ") && with[0].contains("| 9000 ") && !with[0].contains("12345"),
        "{}",
        with[0]
    );
    let body = |t: &str| {
        t.lines()
            .skip(3)
            .filter(|l| !l.starts_with('+'))
            .map(|l| l.split_whitespace().collect::<String>())
            .collect::<Vec<_>>()
    };
    assert_eq!(body(&with[0]), body(&with[1]), "the two joins agree");
    let plan = common::explain_analyze(&om, through_aggregate).await;
    assert!(plan.contains("DynamicFilterExec"), "{plan}");
    let dropped = scan_count(&om, through_aggregate, "rows_dropped").await;
    assert!(
        dropped as f64 >= 0.999 * (n - 60) as f64,
        "the scan of facts gives out only matching rows: {dropped} dropped\n{plan}"
    );
    let plan = common::explain_analyze(&om, direct).await;
    assert!(
        !plan.contains("DynamicFilterExec"),
        "the join drops them: {plan}"
    );
    // the build side holds every key: only rows with a NULL key (200)
    // dropped, most rows not even evaluated
    assert!(scan_count(&om, keeps_all, "rows_dropped").await <= 200);
    assert!(scan_count(&om, keeps_all, "rows_let_through").await > (n / 2) as u64);

    common::exec(&om, "SET omega_scan.dynamic_filters = false").await;
    assert!(
        !common::explain_analyze(&om, through_aggregate)
            .await
            .contains("DynamicFilterExec")
    );
    for (q, want) in queries.iter().zip(&with) {
        assert_eq!(&rows_text(&om, q).await, want, "{q}");
    }
    // DataFusion's own: the filters inside the decoder
    common::exec(&om, "SET omega_scan.dynamic_filters = true").await;
    common::exec(
        &om,
        "SET datafusion.execution.parquet.pushdown_filters = true",
    )
    .await;
    assert!(
        !common::explain_analyze(&om, through_aggregate)
            .await
            .contains("DynamicFilterExec")
    );
    for (q, want) in queries.iter().zip(&with) {
        assert_eq!(&rows_text(&om, q).await, want, "{q}");
    }
}

/// Decimal products in projections and aggregate arguments are multiplied in
/// 64 bits where the values fit (`decimal_multiply.rs`); answers, types and
/// NULLs are arrow's, also in a batch holding a value beyond 64 bits.
#[tokio::test]
async fn decimal_products_in_64_bits_answer_as_arrow() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let n = 3000i64;
    let dec = |values: Vec<Option<i128>>, p: u8, s: i8| -> ArrayRef {
        Arc::new(
            Decimal128Array::from(values)
                .with_precision_and_scale(p, s)
                .unwrap(),
        )
    };
    let a = (0..n)
        .map(|i| (i % 97 != 0).then_some(i as i128 * 1234 - 1_000_000))
        .collect();
    let b = (0..n).map(|i| Some((i % 11) as i128)).collect();
    // one value beyond 64 bits: its batch goes to arrow's kernel
    let w = (0..n)
        .map(|i| {
            Some(if i == 7 {
                i64::MAX as i128 * 1000
            } else {
                i as i128
            })
        })
        .collect();
    let batch = RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
        ),
        ("a", dec(a, 15, 2)),
        ("b", dec(b, 15, 2)),
        ("w", dec(w, 38, 0)),
    ])
    .unwrap();
    om.datasets()
        .put(batch, "prices", PutOptions::default())
        .await
        .unwrap();
    let queries = [
        "SELECT sum(a * (1 - b)), sum(a * (1 - b) * (1 + b)), avg(a * 2.50), count(a * b) FROM prices",
        "SELECT b, sum(a * b) FROM prices GROUP BY b ORDER BY b",
        "SELECT id, a * b AS p, w * b AS q, arrow_typeof(a * b) AS t FROM prices ORDER BY id",
    ];
    // whether the physical plan of `q` multiplies in 64 bits
    let narrow = |q: &'static str| {
        let om = &om;
        async move {
            let plan = om.sql(q).await.unwrap().create_physical_plan().await;
            format!("{:?}", plan.unwrap()).contains("NarrowDecimalMultiplyExpr")
        }
    };
    let mut with = vec![];
    for q in queries {
        assert!(narrow(q).await, "{q}");
        with.push(rows_text(&om, q).await);
    }
    // row 1: a = (1234 - 1000000) / 100 = -9987.66, b = 0.01; row 7: w = (2^63 - 1) * 1000, b = 0.07
    assert!(with[2].contains("| -99.8766 "), "{}", with[2]);
    assert!(with[2].contains("Decimal128(31, 4)"), "{}", with[2]);
    assert!(
        with[2].contains("| 645636042579834306490.00 "),
        "{}",
        with[2]
    );

    // `1 - b` and `1 + b` rescale the constant once (decimal_constant_add.rs)
    let constant_add = |q: &'static str| {
        let om = &om;
        async move {
            let plan = om.sql(q).await.unwrap().create_physical_plan().await;
            format!("{:?}", plan.unwrap()).contains("DecimalConstantAddExpr")
        }
    };
    assert!(constant_add(queries[0]).await);
    // a sum of two columns stays arrow's own
    assert!(!constant_add("SELECT id, a + b AS s, a - b AS d FROM prices").await);

    common::exec(&om, "SET omega_exec.narrow_decimal_multiply = false").await;
    for (q, want) in queries.iter().zip(&with) {
        assert!(!narrow(q).await, "{q}");
        assert_eq!(&rows_text(&om, q).await, want, "{q}");
    }
    common::exec(&om, "SET omega_exec.decimal_constant_add = false").await;
    assert!(!constant_add(queries[0]).await);
    assert_eq!(&rows_text(&om, queries[0]).await, &with[0]);
}

/// Row groups hold at most 512Ki rows, so that a table of 0.5–1M rows
/// (TPC-H's `partsupp`) is not one group, which one core must read alone.
#[tokio::test]
async fn row_groups_split_a_table_between_cores() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let rows = 700_000i64;
    let batch = RecordBatch::try_from_iter(vec![(
        "id",
        Arc::new(Int64Array::from_iter_values(0..rows)) as ArrayRef,
    )])
    .unwrap();
    om.datasets()
        .put(batch, "wide", PutOptions::default())
        .await
        .unwrap();
    // the rows of each row group of the table's current files
    let groups = |meta: Metadata| {
        let root = &root;
        async move {
            let mut groups = Vec::new();
            for f in data_files(root, &meta).await {
                let reader = parquet::file::serialized_reader::SerializedFileReader::new(
                    std::fs::File::open(f).unwrap(),
                )
                .unwrap();
                use parquet::file::reader::FileReader;
                groups.extend(reader.metadata().row_groups().iter().map(|g| g.num_rows()));
            }
            groups
        }
    };
    let written = groups(om.datasets().metadata("wide").await.unwrap()).await;
    // a rewrite (`om datasets optimize --sort-by`) writes groups of that size too
    let (meta, _) = om
        .datasets()
        .change_table(
            "wide",
            omegastore::store::TableChange::sort(vec!["id".into()]),
        )
        .await
        .unwrap();
    let rewritten = groups(meta).await;
    for groups in [written, rewritten] {
        assert_eq!(groups.iter().sum::<i64>(), rows, "{groups:?}");
        assert!(groups.len() >= 2, "{groups:?}");
        assert!(groups.iter().all(|&n| n <= 512 * 1024), "{groups:?}");
    }
    let n = common::scalar(&om, "SELECT count(*) FROM wide WHERE id % 7 = 3").await;
    assert_eq!(n, 100_000);
}
