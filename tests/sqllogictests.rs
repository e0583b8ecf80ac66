//! Runs every `sql/*.slt` file with sqllogictest, each on a fresh local store.
//! `REOPEN` as a statement reopens the store (proves persistence). Roles for
//! mixin tests are set with `SET omega.roles = '…'`.

use std::path::PathBuf;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use omegastore::{Omega, SqlError};
use sqllogictest::{DBOutput, DefaultColumnType};

struct OmegaDb {
    url: String,
    om: Omega,
}

#[async_trait]
impl sqllogictest::AsyncDB for OmegaDb {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        if sql.trim().eq_ignore_ascii_case("reopen") {
            self.om = Omega::open(&self.url).await?;
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
    for file in files {
        let tmp = tempfile::tempdir().unwrap();
        let url = tmp.path().join("store").display().to_string();
        let result = runtime.block_on(async {
            let om = Omega::open(&url).await.unwrap();
            let mut db = Some(OmegaDb {
                url: url.clone(),
                om,
            });
            let mut runner = sqllogictest::Runner::new(move || {
                let db = db.take();
                async move { db.ok_or_else(|| SqlError::Usage("one connection per file".into())) }
            });
            runner.with_column_validator(|_, _| true);
            runner.run_file_async(&file).await
        });
        match result {
            Ok(()) => {
                passed += 1;
                println!("test {} ... ok", file.display());
            }
            Err(e) => {
                failed += 1;
                println!("test {} ... FAILED\n{e}", file.display());
            }
        }
    }
    println!("\n{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
