//! `omega.system.*` tables that layers above SQL contribute (the runtime's
//! tasks, jobs, schedules and runs): one small trait, registered per store,
//! asked for its rows at each query. `omega.system.objects` is built in.

use std::sync::{Arc, RwLock};

use arrow::array::{ArrayRef, BooleanArray, StringArray, TimestampMicrosecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::engine::Engine;
use crate::store::StoreError;

/// A table of `omega.system`. `rows` runs at each query with the querying
/// session's engine, and returns only what that identity may see.
#[async_trait]
pub trait SystemTable: Send + Sync + std::fmt::Debug {
    /// The table's name in `omega.system`.
    fn name(&self) -> &str;
    /// Its rows now, as the engine's identity may see them (one batch).
    async fn rows(&self, engine: &Engine) -> Result<RecordBatch, StoreError>;
}

/// The system tables registered on one store (a session extension).
#[derive(Debug, Default)]
pub struct SystemTables {
    tables: RwLock<Vec<Arc<dyn SystemTable>>>,
}

impl SystemTables {
    /// Adds `table`, replacing one of the same name.
    pub fn register(&self, table: Arc<dyn SystemTable>) {
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        tables.retain(|t| t.name() != table.name());
        tables.push(table);
    }

    pub fn names(&self) -> Vec<String> {
        self.tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|t| t.name().to_string())
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn SystemTable>> {
        self.tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|t| t.name() == name)
            .cloned()
    }
}

/// Columns, built row by row.
#[derive(Default)]
pub struct Columns {
    fields: Vec<Field>,
    arrays: Vec<ArrayRef>,
}

impl Columns {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn text(mut self, name: &str, v: Vec<Option<String>>) -> Self {
        self.fields.push(Field::new(name, DataType::Utf8, true));
        self.arrays.push(Arc::new(StringArray::from(v)));
        self
    }
    pub fn int(mut self, name: &str, v: Vec<Option<u64>>) -> Self {
        self.fields.push(Field::new(name, DataType::UInt64, true));
        self.arrays.push(Arc::new(UInt64Array::from(v)));
        self
    }
    pub fn flag(mut self, name: &str, v: Vec<bool>) -> Self {
        self.fields.push(Field::new(name, DataType::Boolean, false));
        self.arrays.push(Arc::new(BooleanArray::from(v)));
        self
    }
    pub fn time(mut self, name: &str, v: Vec<Option<DateTime<Utc>>>) -> Self {
        self.fields.push(Field::new(
            name,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ));
        self.arrays.push(Arc::new(
            TimestampMicrosecondArray::from(
                v.into_iter()
                    .map(|t| t.map(|t| t.timestamp_micros()))
                    .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ));
        self
    }
    pub fn batch(self, table: &str) -> Result<RecordBatch, StoreError> {
        RecordBatch::try_new(Arc::new(Schema::new(self.fields)), self.arrays)
            .map_err(|e| StoreError::table(table, e))
    }
}
