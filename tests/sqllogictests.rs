//! Runs every `sql/*.slt` file with sqllogictest, each on a fresh local store,
//! three times: reading tables with the plain Parquet scan, with delta-rs's
//! provider, and with every table held in the memory cache (the answers must
//! not change). `REOPEN` as a
//! statement reopens the store (proves persistence). Roles for mixin tests
//! are set with `SET omega.roles = '…'`.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use omegastore::backends::table::{DeltaTableBackend, TableScan};
use omegastore::{Omega, SqlError};
use sqllogictest::{DBOutput, DefaultColumnType};

struct OmegaDb {
    url: String,
    om: Omega,
    mode: Mode,
}

/// How the tables of a run are read.
#[derive(Debug, Clone, Copy)]
enum Mode {
    PlainScan,
    DeltaRs,
    MemoryCache,
}

/// `url` opened, reading tables as `mode` says.
async fn open(url: &str, mode: Mode) -> Result<Omega, SqlError> {
    let om = Omega::open(url).await?;
    match mode {
        Mode::PlainScan => {}
        Mode::DeltaRs => {
            om.register_backend(Arc::new(DeltaTableBackend::with_scan(TableScan::DeltaRs)))
        }
        Mode::MemoryCache => {
            om.memory_cache().set_budget(1 << 30);
            om.memory_cache().set_all_tables(true);
        }
    }
    Ok(om)
}

#[async_trait]
impl sqllogictest::AsyncDB for OmegaDb {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        if sql.trim().eq_ignore_ascii_case("reopen") {
            self.om = open(&self.url, self.mode).await?;
            return Ok(DBOutput::StatementComplete(0));
        }
        let df = self.om.sql(sql).await?;
        let batches = df.collect().await?;
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for b in &batches {
            let formatters: Vec<ArrayFormatter> = b
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<_, _>>()?;
            for r in 0..b.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .map(|f| {
                            let v = f.value(r).to_string();
                            if v.is_empty() {
                                "(empty)".to_string()
                            } else {
                                v
                            }
                        })
                        .collect(),
                );
            }
        }
        let width = batches.first().map(|b| b.num_columns()).unwrap_or(0);
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; width],
            rows,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "omegastore"
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter(|p| {
            filter
                .as_ref()
                .is_none_or(|f| p.to_string_lossy().contains(f.as_str()))
        })
        .collect();
    files.sort();
    let (mut passed, mut failed) = (0, 0);
    let modes = [Mode::PlainScan, Mode::DeltaRs, Mode::MemoryCache];
    for (file, mode) in files.iter().flat_map(|f| modes.map(|m| (f.clone(), m))) {
        let tmp = tempfile::tempdir().unwrap();
        let url = tmp.path().join("store").display().to_string();
        let result = runtime.block_on(async {
            let om = open(&url, mode).await.unwrap();
            let mut db = Some(OmegaDb {
                url: url.clone(),
                om,
                mode,
            });
            let mut runner = sqllogictest::Runner::new(move || {
                let db = db.take();
                async move { db.ok_or_else(|| SqlError::Usage("one connection per file".into())) }
            });
            runner.with_column_validator(|_, _| true);
            runner.run_file_async(&file).await
        });
        let how = format!(" ({mode:?})");
        match result {
            Ok(()) => {
                passed += 1;
                println!("test {}{how} ... ok", file.display());
            }
            Err(e) => {
                failed += 1;
                println!("test {}{how} ... FAILED\n{e}", file.display());
            }
        }
    }
    println!("\n{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
