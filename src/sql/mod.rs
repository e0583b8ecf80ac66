//! The SQL layer: DataFusion over every dataset in the store. It uses
//! `models`, `engine`, `backends` and `store`, and builds the session an
//! engine runs (see `session.rs`).
//!
//! | file | what |
//! | --- | --- |
//! | `binary_wrapper.rs` | a macro: a `BinaryExpr` evaluated by another kernel, the same in plans |
//! | `catalog.rs` | the `omega` catalog: buckets as schemas, datasets as tables, `system.objects` |
//! | `decimal_constant_add.rs` | `constant ± Decimal128` with the constant rescaled once (put in plans by the rule in `decimal_multiply.rs`) |
//! | `decimal_multiply.rs` | `Decimal128` products in 64 bits where the values fit (a physical optimizer rule) |
//! | `execute.rs` | runs statements; routes writes to the store |
//! | `mixins.rs` | the `Mixin` trait and the analyzer rule that applies mixins |
//! | `policies.rs` | built-in mixins declared as data: row filter, column mask, bucket isolation, schema contract |
//! | `query_memory.rs` | the memory limit and spill directory every session of a store shares |
//! | `policy_sql.rs` | `CREATE POLICY`, `CREATE MASK`, `CREATE CONTRACT`, `ALTER BUCKET … SET ISOLATED` |
//! | `model_functions.rs` | `predict()`, `predict_proba()`, `evaluate()`, and the per-statement model cache |
//! | `model_statements.rs` | `CREATE [OR REPLACE] MODEL … OPTIONS (…) AS SELECT …`, `DROP MODEL` |
//! | `options.rs` | `SET omega.user/roles/bound_bucket/read_only`, `SET omega_exec.…` |
//! | `shared_subplans.rs` | aggregates a statement repeats (a CTE named twice) computed once: the rule, its node, the session's query planner |
//! | `shared_exec.rs` | `SharedSubplanExec`: one occurrence of a shared subplan, over one result |
//! | `session.rs` | the DataFusion session of an engine, and the SQL layer's view of an engine |
//! | `table_settings.rs` | `ALTER TABLE … SET (cache = 'memory', sort_by = 'a', bloom_filters = 'b')`: table options kept in the record |
//! | `cache_table.rs` | `omega.system.cache`: what the memory cache holds |
//! | `system.rs` | `omega.system.*` tables contributed by the layers above (`SystemTable`) |

mod binary_wrapper;
pub mod cache_table;
pub mod catalog;
pub mod decimal_constant_add;
pub mod decimal_multiply;
pub mod execute;
pub mod mixins;
pub mod model_functions;
pub mod model_statements;
pub mod options;
pub mod placeholders;
pub mod policies;
pub mod policy_sql;
pub mod query_memory;
pub mod session;
pub mod shared_exec;
pub mod shared_subplans;
pub mod system;
pub mod table_settings;

use datafusion::error::DataFusionError;
use thiserror::Error;

use crate::store::StoreError;
use crate::store::error::one_line;

pub use execute::{ends_by_changing_session, is_single_query};
pub use mixins::{Mixin, MixinContext, MixinRule};
pub use options::OmegaOptions;
pub use placeholders::number_question_marks;
pub use session::{SessionParts, SqlEngine, open_engine, options_of};
pub use system::{SystemTable, SystemTables};

/// Errors of the SQL layer.
#[derive(Debug, Error)]
pub enum SqlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Query(String),
    #[error("read-only session: {0} is not allowed")]
    ReadOnly(String),
    #[error("{0}")]
    Usage(String),
    /// A query needed more memory than the query memory limit allows.
    #[error(
        "the query ran out of memory: {0}. Raise the query memory limit (`om --memory-limit`, \
         OMEGA_MEMORY_LIMIT; `Omega::with_memory_limit` in Rust) or have the query hold less \
         (fewer groups, a smaller side to join)"
    )]
    Memory(String),
}

impl From<DataFusionError> for SqlError {
    fn from(e: DataFusionError) -> Self {
        if let DataFusionError::ResourcesExhausted(what) = e.find_root() {
            return SqlError::Memory(one_line(what));
        }
        // A store error surfacing through DataFusion keeps its type.
        match e {
            DataFusionError::External(inner) => match inner.downcast::<StoreError>() {
                Ok(s) => SqlError::Store(*s),
                Err(other) => SqlError::Query(one_line(&other.to_string())),
            },
            e => SqlError::Query(one_line(&e.strip_backtrace())),
        }
    }
}

impl From<arrow::error::ArrowError> for SqlError {
    fn from(e: arrow::error::ArrowError) -> Self {
        SqlError::Query(one_line(&e.to_string()))
    }
}
