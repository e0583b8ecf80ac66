//! The built-in storage backends: implementations of the store's
//! [`DataBackend`](crate::store::DataBackend) contract. This layer uses only
//! `store`; the layer that assembles an `Omega` registers these (and the
//! model backend of `models`) in its registry.
//!
//! | kind | backend | object |
//! | --- | --- | --- |
//! | `table.delta` | [`table::DeltaTableBackend`] | Arrow batches, streams, CSV/Parquet/JSON-lines files |
//! | `json.document` | [`document::DocumentBackend`] | any `serde_json::Value` |
//! | `file.raw` | [`file::RawFileBackend`] | bytes, streamed from and to files |
//! | `table.external` | [`external::ExternalTableBackend`] | a Parquet/CSV/JSON/Delta location read in place |
//! | `sql.view` | [`view::ViewBackend`] | a stored query, resolved at read |
//! | `sql.script` | [`script::ScriptBackend`] | a stored SQL job with named parameters |
//!
//! A backend writes data under a fresh path and returns what the store
//! records; the store commits the version (see [`crate::store::Catalog`]).

pub mod batch_pruning;
pub mod conform;
pub mod csv_split;
pub mod delta_scan;
pub mod dense_aggregate;
pub mod dictionary_filter;
pub mod dictionary_groups;
pub mod dictionary_masks;
pub mod document;
pub mod dynamic_filter;
pub mod external;
pub mod file;
pub mod ingest;
pub mod json_lines_split;
pub mod memory_cache;
pub mod scan_options;
pub mod script;
pub mod split;
pub mod staged;
pub mod table;
pub mod view;

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::physical_plan::ExecutionPlan;

use crate::store::DataBackend;

/// The single input of a one-input execution node, for its
/// `with_new_children`: any other count is an internal error naming `node`.
pub(crate) fn one_child(
    node: &str,
    children: &mut Vec<Arc<dyn ExecutionPlan>>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    match (children.pop(), children.is_empty()) {
        (Some(c), true) => Ok(c),
        _ => Err(DataFusionError::Internal(format!(
            "{node} takes exactly one input"
        ))),
    }
}

/// The built-in backends, in the order `put` tries them.
pub fn builtin() -> Vec<Arc<dyn DataBackend>> {
    vec![
        Arc::new(table::DeltaTableBackend::default()),
        Arc::new(document::DocumentBackend),
        Arc::new(file::RawFileBackend),
        Arc::new(external::ExternalTableBackend),
        Arc::new(view::ViewBackend),
        Arc::new(script::ScriptBackend),
    ]
}
