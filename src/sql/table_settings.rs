//! `ALTER TABLE t SET (option = value, …)`: settings of a stored table,
//! kept in its record (so they stay with the dataset across new versions).
//!
//! | option | values | what |
//! | --- | --- | --- |
//! | `cache` | `'memory'`, `'none'` | hold the latest version's batches in the process's memory cache |
//! | `sort_by` | `'col, …'` | rewrite the rows in this order and keep it (appends follow it): `om datasets optimize --sort-by` |
//! | `bloom_filters` | `'col, …'`, `''` for none | rewrite the files with Bloom filters on these columns, kept for later writes: `om datasets optimize --bloom` |
//!
//! The two layout options rewrite the table as one new version (the rows
//! unchanged), also when both are given in one statement.

use datafusion::common::TableReference;
use datafusion::dataframe::DataFrame;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::planner::object_name_to_table_reference;
use datafusion::sql::sqlparser::ast::{
    AlterTableOperation, Expr as SqlExpr, SqlOption, Statement as SqlStatement, Value,
};
use serde_json::{Map, Value as Json};

use super::SqlError;
use crate::backends::memory_cache::{self, CACHE_ATTRIBUTE, CACHE_MEMORY};
use crate::engine::Engine;
use crate::store::{Metadata, StoreError, TableChange};

/// The options `SET (…)` accepts, for messages.
const OPTIONS: &str =
    "cache = 'memory' | 'none', sort_by = 'col, ...', bloom_filters = 'col, ...' | ''";

/// A parsed `ALTER TABLE … SET (…)`.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSettings {
    pub table: TableReference,
    /// `cache`: true for `'memory'`, false for `'none'`.
    pub cache: Option<bool>,
    /// `sort_by`: the columns to sort by.
    pub sort_by: Option<Vec<String>>,
    /// `bloom_filters`: the columns to write Bloom filters on (empty: none).
    pub bloom_filters: Option<Vec<String>>,
}

/// `Some` when `statement` is `ALTER TABLE name SET (…)`; options other
/// than the ones listed above are a usage error naming them.
pub fn parse(statement: &DFStatement) -> Result<Option<TableSettings>, SqlError> {
    let DFStatement::Statement(s) = statement else {
        return Ok(None);
    };
    let SqlStatement::AlterTable(alter) = s.as_ref() else {
        return Ok(None);
    };
    let [AlterTableOperation::SetOptionsParens { options }] = alter.operations.as_slice() else {
        return Err(SqlError::Usage(format!(
            "ALTER TABLE supports only SET ({OPTIONS}); got: {alter}"
        )));
    };
    let table = object_name_to_table_reference(alter.name.clone(), true)?;
    let mut settings = TableSettings {
        table,
        cache: None,
        sort_by: None,
        bloom_filters: None,
    };
    for option in options {
        let SqlOption::KeyValue { key, value } = option else {
            return Err(SqlError::Usage(format!(
                "ALTER TABLE … SET expects name = value options ({OPTIONS}); got: {option}"
            )));
        };
        let raw = match value {
            SqlExpr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) => Some(s.clone()),
                _ => None,
            },
            SqlExpr::Identifier(i) => Some(i.value.clone()),
            _ => None,
        };
        let text = raw.as_deref().unwrap_or_default().to_ascii_lowercase();
        let key = key.value.to_ascii_lowercase();
        if key == "sort_by" || key == "bloom_filters" {
            let Some(list) = raw else {
                return Err(SqlError::Usage(format!(
                    "table option {key} takes column names as a string, e.g. {key} = 'a, b'; got: {value}"
                )));
            };
            // column names as written (case kept), without blanks around them
            let columns: Vec<String> = list
                .split(',')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect();
            if key == "sort_by" {
                if columns.is_empty() {
                    return Err(SqlError::Usage(
                        "table option sort_by needs at least one column, e.g. sort_by = 'a, b'"
                            .into(),
                    ));
                }
                settings.sort_by = Some(columns);
            } else {
                settings.bloom_filters = Some(columns);
            }
            continue;
        }
        match (key.as_str(), text.as_str()) {
            ("cache", CACHE_MEMORY) => settings.cache = Some(true),
            ("cache", "none") => settings.cache = Some(false),
            ("cache", _) => {
                return Err(SqlError::Usage(format!(
                    "table option cache = {value} is not a setting: use 'memory' or 'none'"
                )));
            }
            (other, _) => {
                return Err(SqlError::Usage(format!(
                    "unknown table option '{other}'; the options are: {OPTIONS}"
                )));
            }
        }
    }
    Ok(Some(settings))
}

/// Records the settings as a new version of the table's record (write
/// access required).
pub async fn apply(engine: &Engine, settings: TableSettings) -> Result<DataFrame, SqlError> {
    let (om, name) = super::execute::write_target(engine, &settings.table).await?;
    // both layout options in one rewrite: one new version
    if settings.sort_by.is_some() || settings.bloom_filters.is_some() {
        let change = TableChange::Rewrite {
            sort_by: settings.sort_by,
            bloom_filters: settings.bloom_filters,
        };
        om.datasets().change_table(&name, change).await?;
    }
    if let Some(on) = settings.cache {
        set_cache(&om, &name, on).await?;
    }
    super::execute::count_frame(engine, 1)
}

/// Marks table `name` of `engine`'s bucket for the memory cache (`on`) or
/// unmarks it, as a new version of its record. Marking loads it at once
/// when this process has a cache budget; unmarking frees what it held.
pub async fn set_cache(engine: &Engine, name: &str, on: bool) -> Result<Metadata, SqlError> {
    let store = engine.datasets();
    let meta = store.metadata(name).await?;
    if meta.kind != crate::backends::table::KIND {
        return Err(StoreError::invalid_input(
            name,
            format!(
                "is a {}; only stored tables (put, CREATE TABLE AS) can be cached",
                meta.kind
            ),
        )
        .into());
    }
    let value = if on { CACHE_MEMORY } else { "none" };
    let attributes = Map::from_iter([(CACHE_ATTRIBUTE.to_string(), Json::from(value))]);
    let written = store.set_attributes(name, attributes).await?;
    if let Some(cache) = memory_cache::of(engine.session()) {
        if !on {
            cache.forget(&written);
        } else if cache.wants(&written) {
            // resolving the table loads it (see DeltaTableBackend::get)
            super::execute::read_table(engine, name).await?;
        }
    }
    Ok(written)
}
