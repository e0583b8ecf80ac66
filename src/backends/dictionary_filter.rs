//! String filters answered on dictionary codes by the plain scan.
//!
//! The writer keeps a column dictionary-encoded while its dictionary stays
//! small (few distinct values: categories, codes, flags as text).
//! DataFusion's Parquet scan decodes such a column into one string view per
//! row and compares every row; DuckDB and Polars compare the dictionary's
//! few values once and pick rows by their codes. For a filter `c = 'x'` or
//! `c IN ('x', …)` (also under AND, OR and NOT with other tests of `c`, as
//! long as the whole keeps few rows) on a string column that the table's
//! files store dictionary-encoded, the plain scan reads `c` as an Arrow
//! dictionary, filters on it, and gives the surviving rows back as the
//! table's type:
//!
//! ```text
//! DictionaryFilterExec   the string filters, decided once per distinct
//!   |                    value; c given back as Utf8View (views into the
//!   |                    dictionary's values)
//! DataSourceExec         c read as Dictionary(Int32, Utf8)
//! ```
//!
//! DataFusion still applies every filter above the scan (the provider
//! declares them inexact), so this is a pre-filter that can only drop rows
//! the full filter drops too. The Parquet reader yields a dictionary when
//! the file's Arrow schema asks for one: [`DictionaryReads`] presents each
//! file's footer with that schema for the columns the file stores
//! dictionary-encoded in every row group; in a file where one is not (the
//! columns are chosen from a sample of files), DataFusion casts its strings,
//! which is slower but gives the same rows.
//!
//! `SET omega_scan.dictionary_filters = false` turns it off for a session
//! (a cluster's sessions do: the reader is not part of a serialised plan;
//! see [`super::scan_options`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::compute::{BatchCoalescer, filter_record_batch};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use bytes::Bytes;
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{ColumnStatistics, HashSet, ScalarValue, Statistics};
use datafusion::config::ConfigOptions;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfig, FileScanConfigBuilder, FileSource, ParquetFileReaderFactory,
    ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result as DfResult;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, expr::InList};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_expr::expressions::{self, CastExpr, Column, Literal};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::{PhysicalExpr, conjunction};
use datafusion::physical_plan::execution_plan::{Boundedness, CardinalityEffect, EmissionType};
use datafusion::physical_plan::filter_pushdown::{
    ChildFilterDescription, FilterDescription, FilterPushdownPhase,
};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties, StatisticsArgs,
};
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt, ready};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ARROW_SCHEMA_META_KEY, encode_arrow_schema, parquet_to_arrow_schema};
use parquet::basic::Encoding;
use parquet::file::metadata::{
    ColumnChunkMetaData, FileMetaData, KeyValue, PageIndexPolicy, ParquetMetaData,
    ParquetMetaDataBuilder, RowGroupMetaData,
};

use super::dictionary_masks::{DictionaryMask, Memo};
use super::one_child;

/// The Arrow type a dictionary-encoded string column is read as.
pub(crate) fn dictionary_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// What a filter asks of one string column's values.
#[derive(Debug, Clone)]
pub(crate) enum Test {
    /// `=` or `<>` a value.
    Compare(Operator, String),
    /// `[NOT] IN` a list of values.
    In(Vec<String>, bool),
    /// Tests of the same column joined by `AND` or `OR` (DataFusion
    /// writes a short `IN` list as `=` tests joined by `OR`).
    Both(Operator, Box<Test>, Box<Test>),
    Not(Box<Test>),
}

impl Test {
    /// Whether the test keeps few rows as a rule (`=`, `IN`), where deciding
    /// it on codes pays; `<>` and `NOT IN` keep most, which then cost a cast
    /// back to strings more than they save (measured: `c <> 'x'` 1.28x).
    fn selective(&self) -> bool {
        match self {
            Test::Compare(op, _) => *op == Operator::Eq,
            Test::In(_, negated) => !negated,
            Test::Both(Operator::And, l, r) => l.selective() || r.selective(),
            Test::Both(_, l, r) => l.selective() && r.selective(),
            Test::Not(_) => false,
        }
    }
}

/// The column and test of a filter the dictionary can answer alone: one
/// column against string literals (no NULL among them), in any
/// combination of `AND`, `OR` and `NOT`.
fn string_test(expr: &Expr) -> Option<(&str, Test)> {
    fn literal(e: &Expr) -> Option<String> {
        match e {
            Expr::Literal(
                ScalarValue::Utf8(Some(s))
                | ScalarValue::Utf8View(Some(s))
                | ScalarValue::LargeUtf8(Some(s)),
                _,
            ) => Some(s.clone()),
            _ => None,
        }
    }
    fn column(e: &Expr) -> Option<&str> {
        match e {
            Expr::Column(c) => Some(c.name.as_str()),
            _ => None,
        }
    }
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::Eq | Operator::NotEq) =>
        {
            let (c, v) = match (column(left), literal(right)) {
                (Some(c), Some(v)) => (c, v),
                _ => (column(right)?, literal(left)?),
            };
            Some((c, Test::Compare(*op, v)))
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::And | Operator::Or) =>
        {
            let (a, l) = string_test(left)?;
            let (b, r) = string_test(right)?;
            (a == b).then(|| (a, Test::Both(*op, Box::new(l), Box::new(r))))
        }
        Expr::Not(e) => string_test(e).map(|(c, t)| (c, Test::Not(Box::new(t)))),
        Expr::InList(InList {
            expr,
            list,
            negated,
        }) => {
            let values = list.iter().map(literal).collect::<Option<Vec<_>>>()?;
            Some((column(expr)?, Test::In(values, *negated)))
        }
        _ => None,
    }
}

/// `test` as a physical expression over `column`, a dictionary of strings
/// in `schema`: the same three-valued logic as on the strings.
fn physical(
    test: Test,
    column: &Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> DfResult<Arc<dyn PhysicalExpr>> {
    let value =
        |v: String| -> Arc<dyn PhysicalExpr> { Arc::new(Literal::new(ScalarValue::Utf8(Some(v)))) };
    Ok(match test {
        Test::Compare(op, v) => {
            Arc::new(expressions::BinaryExpr::new(column.clone(), op, value(v)))
        }
        Test::In(values, negated) => expressions::in_list(
            column.clone(),
            values.into_iter().map(value).collect(),
            &negated,
            schema,
        )?,
        Test::Both(op, l, r) => Arc::new(expressions::BinaryExpr::new(
            physical(*l, column, schema)?,
            op,
            physical(*r, column, schema)?,
        )),
        Test::Not(t) => expressions::not(physical(*t, column, schema)?)?,
    })
}

/// The selective tests (see [`Test::selective`]) among `filters` the
/// dictionary can answer, each with the index of its string column in
/// `schema`, for columns `projection` reads.
pub(crate) fn string_tests(
    schema: &Schema,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
) -> Vec<(usize, Test)> {
    filters
        .iter()
        .filter_map(string_test)
        .filter(|(_, t)| t.selective())
        .filter_map(|(c, t)| Some((schema.index_of(c).ok()?, t)))
        .filter(|(i, _)| *schema.field(*i).data_type() == DataType::Utf8View)
        .filter(|(i, _)| projection.is_none_or(|p| p.contains(i)))
        .collect()
}

/// True when every page of data in `chunk` is dictionary-encoded (the
/// test parquet's documentation gives for its encoding statistics).
fn all_dictionary(chunk: &ColumnChunkMetaData) -> bool {
    chunk.dictionary_page_offset().is_some()
        && chunk.page_encoding_stats_mask().is_some_and(|mask| {
            mask.is_only(Encoding::RLE_DICTIONARY) || mask.is_only(Encoding::PLAIN_DICTIONARY)
        })
}

/// The leaf column of top-level field `name` in `metadata`, if it is one
/// (not nested).
fn leaf_of(metadata: &ParquetMetaData, name: &str) -> Option<usize> {
    metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().parts() == [name])
}

/// True when the file of `metadata` stores column `name` dictionary-encoded
/// in every row group.
fn stored_as_dictionary(metadata: &ParquetMetaData, name: &str) -> bool {
    leaf_of(metadata, name).is_some_and(|leaf| {
        metadata
            .row_groups()
            .iter()
            .all(|rg: &RowGroupMetaData| all_dictionary(rg.column(leaf)))
    })
}

/// Of `candidates` (column indices of `schema`), those every sampled file
/// (the first, middle and last of `files`) stores dictionary-encoded. Reads
/// the sampled footers through the session's metadata cache, where the
/// scan finds them again. `None` when a footer could not be read (the scan
/// then reports it as usual).
pub(crate) async fn dictionary_columns(
    state: &dyn Session,
    store_url: &ObjectStoreUrl,
    files: &[PartitionedFile],
    schema: &Schema,
    candidates: &[usize],
) -> Option<Vec<usize>> {
    let store = state.runtime_env().object_store(store_url).ok()?;
    let cache = state.runtime_env().cache_manager.get_file_metadata_cache();
    let hint = state
        .default_table_options()
        .parquet
        .global
        .metadata_size_hint;
    let mut sample: Vec<&PartitionedFile> = [0, files.len() / 2, files.len().saturating_sub(1)]
        .into_iter()
        .filter_map(|i| files.get(i))
        .collect();
    sample.dedup_by(|a, b| a.object_meta.location == b.object_meta.location);
    let footers = futures::future::try_join_all(sample.iter().map(|f| {
        let (store, cache) = (store.clone(), cache.clone());
        async move {
            DFParquetMetadata::new(store.as_ref(), &f.object_meta)
                .with_metadata_size_hint(hint)
                .with_file_metadata_cache(Some(cache))
                .with_page_index_policy(Some(PageIndexPolicy::Skip))
                .fetch_metadata()
                .await
        }
    }))
    .await
    .ok()?;
    let columns = candidates
        .iter()
        .copied()
        .filter(|i| {
            let name = schema.field(*i).name();
            footers.iter().all(|m| stored_as_dictionary(m, name))
        })
        .collect();
    Some(columns)
}

/// `schema` with the fields at `columns` read as dictionaries.
pub(crate) fn read_schema(schema: &SchemaRef, columns: &[usize]) -> SchemaRef {
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if columns.contains(&i) {
                Arc::new(Field::clone(f).with_data_type(dictionary_type()))
            } else {
                f.clone()
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `statistics` with the minimum and maximum of `columns` as dictionary
/// values (the type the scan reads them as), so pruning keeps using them.
pub(crate) fn read_statistics(statistics: &Statistics, columns: &[usize]) -> Statistics {
    let mut s = statistics.clone();
    for &i in columns {
        if let Some(c) = s.column_statistics.get_mut(i) {
            cast_bounds(c, &dictionary_type());
        }
    }
    s
}

/// `column`'s minimum and maximum cast to `to`, kept as exact or bounds;
/// dropped where they do not cast.
fn cast_bounds(column: &mut ColumnStatistics, to: &DataType) {
    let cast = |p: &Precision<ScalarValue>| match p {
        Precision::Exact(v) if v.data_type() != *to => {
            v.cast_to(to).map_or(Precision::Absent, Precision::Exact)
        }
        Precision::Inexact(v) if v.data_type() != *to => {
            v.cast_to(to).map_or(Precision::Absent, Precision::Inexact)
        }
        other => other.clone(),
    };
    column.min_value = cast(&column.min_value);
    column.max_value = cast(&column.max_value);
}

/// The scan `plan` (a Parquet `DataSourceExec` over [`read_schema`] of
/// `dictionaries`) with its files read through [`DictionaryReads`], under a
/// [`DictionaryFilterExec`] that applies `tests` (by column of `table`) on
/// the dictionaries and gives the columns back as `output` (the table's
/// projected schema) says. A scan whose reader cannot be replaced still
/// reads the columns as dictionaries (DataFusion casts them: slower, the
/// same rows).
pub(crate) fn filtered(
    plan: Arc<dyn ExecutionPlan>,
    table: &Schema,
    dictionaries: &[usize],
    tests: Vec<(usize, Test)>,
    output: &SchemaRef,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let columns: Vec<String> = dictionaries
        .iter()
        .map(|i| table.field(*i).name().clone())
        .collect();
    let scan = with_dictionary_reads(&plan, columns.into()).unwrap_or(plan);
    decoded(scan, table, tests, output)
}

/// `scan`, whose schema holds some string columns of `table` as
/// dictionaries, under a [`DictionaryFilterExec`] that applies `tests` (by
/// column of `table`; none: it only gives the columns back) on the
/// dictionaries and gives the columns back as `output` says.
pub(crate) fn decoded(
    scan: Arc<dyn ExecutionPlan>,
    table: &Schema,
    tests: Vec<(usize, Test)>,
    output: &SchemaRef,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let read = scan.schema();
    let mut predicates: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
    let mut masks = Vec::new();
    let values = DictionaryMask::values_schema();
    let value: Arc<dyn PhysicalExpr> = Arc::new(Column::new("value", 0));
    for (i, test) in tests {
        let name = table.field(i).name();
        let index = read.index_of(name)?;
        let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(name, index));
        let on_values = physical(test.clone(), &value, &values)?;
        masks.push(DictionaryMask::new(index, on_values));
        predicates.push(physical(test, &column, &read)?);
    }
    let predicate = (!predicates.is_empty()).then(|| Predicate {
        expr: conjunction(predicates),
        masks: masks.into(),
    });
    Ok(Arc::new(DictionaryFilterExec::new(
        scan,
        predicate,
        output.clone(),
    )))
}

/// `plan`, a Parquet `DataSourceExec`, opening its files through
/// [`DictionaryReads`] for `columns`; `None` when it is not one.
fn with_dictionary_reads(
    plan: &Arc<dyn ExecutionPlan>,
    columns: Arc<[String]>,
) -> Option<Arc<dyn ExecutionPlan>> {
    let config = plan
        .downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()?;
    let source = config.file_source().downcast_ref::<ParquetSource>()?;
    let inner = source.parquet_file_reader_factory().cloned()?;
    let source = source
        .clone()
        .with_parquet_file_reader_factory(Arc::new(DictionaryReads { inner, columns }));
    let config = FileScanConfigBuilder::from(config.clone())
        .with_source(Arc::new(source))
        .build();
    Some(DataSourceExec::from_data_source(config))
}

/// The string columns (by name) that a table's files store
/// dictionary-encoded (from a sample of files, see [`dictionary_columns`]),
/// attached to each file of a plain scan that reads them as strings: a
/// later rule may ask the scan to read some of them as dictionaries
/// ([`read_as_dictionaries`]; a `GROUP BY` then groups their codes, see
/// [`super::dictionary_groups`]). Carried by the files because the scan's
/// reader factory cannot be downcast.
#[derive(Debug, Clone)]
pub(crate) struct StoredDictionaries(pub(crate) Arc<[String]>);

/// `plan`, a plain Parquet scan whose files carry [`StoredDictionaries`],
/// rebuilt to read those of its output columns `wanted` that its files
/// store dictionary-encoded as dictionaries (and nothing else changed);
/// `None` when it is not such a scan or no wanted column can be. A column
/// the scan also looks at (its predicate, a computed projection) or gives
/// out twice stays a string: those would see a type they were not
/// planned for.
pub(crate) fn read_as_dictionaries(
    plan: &Arc<dyn ExecutionPlan>,
    wanted: &[usize],
) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let Some(config) = plan
        .downcast_ref::<DataSourceExec>()
        .and_then(|s| s.data_source().downcast_ref::<FileScanConfig>())
    else {
        return Ok(None);
    };
    let Some(source) = config.file_source().downcast_ref::<ParquetSource>() else {
        return Ok(None);
    };
    let (Some(inner), Some(projection)) = (
        source.parquet_file_reader_factory().cloned(),
        source.projection(),
    ) else {
        return Ok(None);
    };
    let files: Vec<&PartitionedFile> = config.file_groups.iter().flat_map(|g| g.iter()).collect();
    let stored = |name: &str| {
        files.iter().all(|f| {
            f.extension::<StoredDictionaries>()
                .is_some_and(|s| s.0.iter().any(|n| n == name))
        })
    };
    let file_schema = source.table_schema().file_schema();
    let mut looked_at: HashSet<String> = HashSet::new();
    let mut columns: Vec<usize> = Vec::new();
    for (i, p) in projection.iter().enumerate() {
        match p.expr.downcast_ref::<Column>() {
            Some(c) if wanted.contains(&i) => columns.push(c.index()),
            _ => looked_at.extend(
                collect_columns(&p.expr)
                    .into_iter()
                    .map(|c| c.name().to_string()),
            ),
        }
    }
    if let Some(predicate) = source.filter() {
        looked_at.extend(
            collect_columns(&predicate)
                .into_iter()
                .map(|c| c.name().to_string()),
        );
    }
    columns.retain(|i| {
        file_schema.fields().get(*i).is_some_and(|f| {
            *f.data_type() == DataType::Utf8View
                && !looked_at.contains(f.name())
                && stored(f.name())
        })
    });
    columns.sort_unstable();
    columns.dedup();
    if columns.is_empty() {
        return Ok(None);
    }
    let names: Arc<[String]> = columns
        .iter()
        .map(|i| file_schema.field(*i).name().clone())
        .collect();
    let table = TableSchema::builder(read_schema(file_schema, &columns))
        .with_table_partition_cols(source.table_schema().table_partition_cols().to_vec())
        .build();
    let options = source.table_parquet_options().clone();
    let hint = options.global.metadata_size_hint;
    let mut rebuilt = ParquetSource::new(table)
        .with_table_parquet_options(options)
        .with_parquet_file_reader_factory(Arc::new(DictionaryReads {
            inner,
            columns: names,
        }));
    if let Some(hint) = hint {
        rebuilt = rebuilt.with_metadata_size_hint(hint);
    }
    if let Some(predicate) = source.filter() {
        rebuilt = rebuilt.with_predicate(predicate);
    }
    let Some(rebuilt) = rebuilt.try_pushdown_projection(projection)? else {
        return Ok(None);
    };
    let groups = config
        .file_groups
        .iter()
        .map(|g| {
            FileGroup::new(
                g.iter()
                    .map(|f| {
                        let mut f = f.clone();
                        if let Some(s) = &f.statistics {
                            f.statistics = Some(Arc::new(read_statistics(s, &columns)));
                        }
                        f
                    })
                    .collect(),
            )
        })
        .collect();
    let config = FileScanConfigBuilder::from(config.clone())
        .with_source(rebuilt)
        .with_file_groups(groups)
        .with_statistics(read_statistics(&config.statistics(), &columns))
        .build();
    Ok(Some(DataSourceExec::from_data_source(config)))
}

/// The properties of `schema` (the columns of `input` by position, some of
/// another type): `input`'s ordering as far as it sorts by columns whose type
/// is kept (a scan of files written sorted stays sorted, and DataFusion
/// relies on it).
fn kept_orderings(input: &Arc<dyn ExecutionPlan>, schema: &SchemaRef) -> EquivalenceProperties {
    let read = input.schema();
    let kept = |e: &Arc<dyn PhysicalExpr>| {
        collect_columns(e).iter().all(|c| {
            read.fields()
                .get(c.index())
                .zip(schema.fields().get(c.index()))
                .is_some_and(|(r, o)| r.data_type() == o.data_type())
        })
    };
    let prefix: Vec<_> = input
        .output_ordering()
        .into_iter()
        .flat_map(|o| o.iter())
        .take_while(|s| kept(&s.expr))
        .cloned()
        .collect();
    let mut properties = EquivalenceProperties::new(schema.clone());
    properties.add_ordering(prefix);
    properties
}

/// Filters the batches of a scan that reads some string columns as
/// dictionaries by `predicate` (tests of those columns), then casts the
/// columns to the types of `schema`. A pre-filter: every filter is applied
/// above it (the provider declares them inexact), so a batch most of whose
/// rows pass goes on whole. A node of its own rather than a
/// `FilterExec` and a `ProjectionExec`: DataFusion's filter pushdown would
/// merge the filters above into a `FilterExec` here, ahead of its own
/// predicate, and compare every row's string again. Filters from above pass
/// through to the scan for pruning (on the string values, cast back) and
/// stay above.
#[derive(Debug)]
pub struct DictionaryFilterExec {
    input: Arc<dyn ExecutionPlan>,
    /// `None`: no test, the columns are only given back.
    predicate: Option<Predicate>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// The tests of a [`DictionaryFilterExec`], twice: as one expression over
/// its input (shown, pushed to the scan, and evaluated where a column is
/// not a dictionary after all) and per column on the dictionary's values
/// (see [`DictionaryMask`]).
#[derive(Debug, Clone)]
struct Predicate {
    expr: Arc<dyn PhysicalExpr>,
    masks: Arc<[DictionaryMask]>,
}

impl DictionaryFilterExec {
    fn new(input: Arc<dyn ExecutionPlan>, predicate: Option<Predicate>, schema: SchemaRef) -> Self {
        let properties = Arc::new(PlanProperties::new(
            kept_orderings(&input, &schema),
            input.output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        DictionaryFilterExec {
            input,
            predicate,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// This node giving those of the `wanted` columns it reads as
    /// dictionaries on as dictionaries (grouping on their codes, see
    /// [`super::dictionary_groups`]); `None` when it reads none of them so.
    pub(crate) fn keeping(&self, wanted: &[usize]) -> Option<Self> {
        let read = self.input.schema();
        let mut kept = false;
        let fields: Vec<FieldRef> = self
            .schema
            .fields()
            .iter()
            .zip(read.fields())
            .enumerate()
            .map(|(i, (out, r))| {
                let keep = wanted.contains(&i)
                    && *r.data_type() == dictionary_type()
                    && out.data_type() != r.data_type();
                kept |= keep;
                match keep {
                    true => Arc::new(Field::clone(out).with_data_type(dictionary_type())),
                    false => out.clone(),
                }
            })
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            self.schema.metadata().clone(),
        ));
        kept.then(|| Self::new(self.input.clone(), self.predicate.clone(), schema))
    }

    /// `expr` (over this node's output) over its input: the columns read
    /// as dictionaries cast back to the output's types.
    fn over_input(&self, expr: &Arc<dyn PhysicalExpr>) -> DfResult<Arc<dyn PhysicalExpr>> {
        let input = self.input.schema();
        Ok(expr
            .clone()
            .transform_down(|e| {
                let Some(c) = e.downcast_ref::<Column>() else {
                    return Ok(Transformed::no(e));
                };
                let (Some(out), Some(read)) = (
                    self.schema.fields().get(c.index()),
                    input.fields().get(c.index()),
                ) else {
                    return Ok(Transformed::no(e));
                };
                if out.data_type() == read.data_type() {
                    return Ok(Transformed::no(e));
                }
                let cast = CastExpr::new_with_target_field(e.clone(), out.clone(), None);
                Ok(Transformed::new(
                    Arc::new(cast),
                    true,
                    TreeNodeRecursion::Jump,
                ))
            })?
            .data)
    }
}

impl DisplayAs for DictionaryFilterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match &self.predicate {
            Some(p) => write!(f, "DictionaryFilterExec: {}", p.expr),
            None => write!(f, "DictionaryFilterExec: decode only"),
        }
    }
}

impl ExecutionPlan for DictionaryFilterExec {
    fn name(&self) -> &str {
        "DictionaryFilterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        match &self.predicate {
            Some(p) => f(&p.expr),
            None => Ok(TreeNodeRecursion::Continue),
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = one_child(self.name(), &mut children)?;
        Ok(Arc::new(DictionaryFilterExec::new(
            input,
            self.predicate.clone(),
            self.schema.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let batch_size = context.session_config().batch_size();
        let input = self.input.execute(partition, context)?;
        let memos = self.predicate.iter().flat_map(|p| p.masks.iter());
        Ok(Box::pin(DictionaryFilterStream {
            input,
            memos: memos.map(|_| Memo::default()).collect(),
            predicate: self.predicate.clone(),
            schema: self.schema.clone(),
            // batches of at least half the size go on without a copy
            coalescer: BatchCoalescer::new(self.schema.clone(), batch_size)
                .with_biggest_coalesce_batch_size(Some(batch_size / 2)),
            done: false,
            metrics: BaselineMetrics::new(&self.metrics, partition),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    /// The scan's, as upper bounds, in the output's types (the filters
    /// above estimate their selectivity from them as they would from the
    /// scan's).
    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> DfResult<Arc<Statistics>> {
        let Some(input) = input_stats.first() else {
            return Ok(Arc::new(Statistics::new_unknown(&self.schema)));
        };
        let mut stats = input.as_ref().clone().to_inexact();
        for (c, f) in stats.column_statistics.iter_mut().zip(self.schema.fields()) {
            cast_bounds(c, f.data_type());
        }
        Ok(Arc::new(stats))
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::LowerEqual
    }

    /// Filters from above go on to the scan (for pruning; they stay above
    /// unless the scan applies them itself), with this node's own predicate.
    fn gather_filters_for_pushdown(
        &self,
        phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> DfResult<FilterDescription> {
        let over_input = parent_filters
            .iter()
            .map(|f| self.over_input(f))
            .collect::<DfResult<Vec<_>>>()?;
        let mut child = ChildFilterDescription::from_child(&over_input, &self.input)?;
        if let (FilterPushdownPhase::Pre, Some(p)) = (phase, &self.predicate) {
            child = child.with_self_filter(p.expr.clone());
        }
        Ok(FilterDescription::new().with_child(child))
    }
}

/// The batches of a [`DictionaryFilterExec`]: filtered, cast, and gathered
/// into batches of the session's size again.
struct DictionaryFilterStream {
    input: SendableRecordBatchStream,
    predicate: Option<Predicate>,
    /// One per mask of the predicate.
    memos: Vec<Memo>,
    schema: SchemaRef,
    coalescer: BatchCoalescer,
    done: bool,
    metrics: BaselineMetrics,
}

impl DictionaryFilterStream {
    /// Filters `batch` and hands the rows left to the coalescer. A batch
    /// most of whose rows pass goes on whole: this is a pre-filter (the
    /// filters above drop the rest), and copying most of a batch costs more
    /// than comparing a few more strings there.
    fn push(&mut self, batch: RecordBatch) -> DfResult<()> {
        let _timer = self.metrics.elapsed_compute().timer();
        let Some(predicate) = &self.predicate else {
            let batch = super::conform::conform(&batch, &self.schema)?;
            return pass(&mut self.coalescer, batch);
        };
        let mask = match code_rows(predicate, &mut self.memos, &batch)? {
            Some(rows) => Arc::new(BooleanArray::new(rows, None)),
            None => predicate
                .expr
                .evaluate(&batch)?
                .into_array(batch.num_rows())?,
        };
        let Some(mask) = mask.as_any().downcast_ref::<BooleanArray>() else {
            return datafusion::common::internal_err!("a dictionary filter gave no booleans");
        };
        let kept = match mask.true_count() {
            0 => return Ok(()),
            n if n * 2 >= batch.num_rows() => batch,
            _ => filter_record_batch(&batch, mask)?,
        };
        let batch = super::conform::conform(&kept, &self.schema)?;
        pass(&mut self.coalescer, batch)
    }
}

/// The rows of `batch` every mask of `predicate` keeps, decided on the
/// dictionaries' values; `None` when a column is not such a dictionary.
fn code_rows(
    predicate: &Predicate,
    memos: &mut [Memo],
    batch: &RecordBatch,
) -> DfResult<Option<BooleanBuffer>> {
    let mut kept: Option<BooleanBuffer> = None;
    for (mask, memo) in predicate.masks.iter().zip(memos) {
        let Some(rows) = mask.rows(batch, memo)? else {
            return Ok(None);
        };
        kept = Some(match kept {
            Some(k) => &k & &rows,
            None => rows,
        });
    }
    Ok(kept)
}

/// Hands `batch` to `coalescer`: one of more than half the session's batch
/// size goes on uncopied, the rows buffered before it first (as a smaller
/// batch). The coalescer alone would merge it with a buffered remainder,
/// and once out of step with its input (a row group's last, short batch)
/// it would copy every batch after it (6% of a cached `GROUP BY`'s CPU).
fn pass(coalescer: &mut BatchCoalescer, batch: RecordBatch) -> DfResult<()> {
    let whole = coalescer
        .biggest_coalesce_batch_size()
        .unwrap_or(usize::MAX);
    if batch.num_rows() > whole && coalescer.get_buffered_rows() > 0 {
        coalescer.finish_buffered_batch()?;
    }
    coalescer.push_batch(batch)?;
    Ok(())
}

impl Stream for DictionaryFilterStream {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(batch) = self.coalescer.next_completed_batch() {
                let poll = Poll::Ready(Some(Ok(batch)));
                return self.metrics.record_poll(poll);
            }
            if self.done {
                return Poll::Ready(None);
            }
            match ready!(self.input.poll_next_unpin(cx)) {
                Some(Ok(batch)) => {
                    if let Err(e) = self.push(batch) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    self.done = true;
                    if let Err(e) = self.coalescer.finish_buffered_batch() {
                        return Poll::Ready(Some(Err(e.into())));
                    }
                }
            }
        }
    }
}

impl RecordBatchStream for DictionaryFilterStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// Opens each file with the reader DataFusion chose and presents its
/// footer with an Arrow schema that reads `columns` as dictionaries where
/// the file stores them so.
#[derive(Debug)]
struct DictionaryReads {
    inner: Arc<dyn ParquetFileReaderFactory>,
    columns: Arc<[String]>,
}

impl ParquetFileReaderFactory for DictionaryReads {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> DfResult<Box<dyn AsyncFileReader + Send>> {
        let inner = self
            .inner
            .create_reader(partition_index, file, metadata_size_hint, metrics)?;
        Ok(Box::new(DictionaryFooter {
            inner,
            columns: self.columns.clone(),
        }))
    }
}

/// A file reader whose footer asks for dictionaries (see [`DictionaryReads`]).
struct DictionaryFooter {
    inner: Box<dyn AsyncFileReader + Send>,
    columns: Arc<[String]>,
}

impl AsyncFileReader for DictionaryFooter {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.inner.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        self.inner.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        let DictionaryFooter { inner, columns } = self;
        async move {
            let metadata = inner.get_metadata(options).await?;
            with_dictionaries(metadata, columns)
        }
        .boxed()
    }
}

/// `metadata` with its Arrow schema (what the reader decodes columns as)
/// asking for dictionaries for those of `columns` the file stores
/// dictionary-encoded in every row group; unchanged when there are none.
fn with_dictionaries(
    metadata: Arc<ParquetMetaData>,
    columns: &[String],
) -> parquet::errors::Result<Arc<ParquetMetaData>> {
    let file = metadata.file_metadata();
    let schema = parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())?;
    let mut changed = false;
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| {
            let string = matches!(
                f.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            );
            if string && columns.contains(f.name()) && stored_as_dictionary(&metadata, f.name()) {
                changed = true;
                Arc::new(Field::clone(f).with_data_type(dictionary_type()))
            } else {
                f.clone()
            }
        })
        .collect();
    if !changed {
        return Ok(metadata);
    }
    let schema = Schema::new_with_metadata(fields, schema.metadata().clone());
    let mut kv: Vec<KeyValue> = file
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter(|kv| kv.key != ARROW_SCHEMA_META_KEY)
        .cloned()
        .collect();
    kv.push(KeyValue::new(
        ARROW_SCHEMA_META_KEY.to_string(),
        encode_arrow_schema(&schema),
    ));
    let file = FileMetaData::new(
        file.version(),
        file.num_rows(),
        file.created_by().map(str::to_string),
        Some(kv),
        file.schema_descr_ptr(),
        file.column_orders().cloned(),
    );
    let rewritten = ParquetMetaDataBuilder::new(file)
        .set_row_groups(metadata.row_groups().to_vec())
        .set_column_index(metadata.column_index().cloned())
        .set_offset_index(metadata.offset_index().cloned())
        .build();
    Ok(Arc::new(rewritten))
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, DictionaryArray, Int32Array, Int64Array, StringArray};
    use arrow::datatypes::Int32Type;
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// A batch of `rows` rows: ids from `start`, a dictionary of three kinds.
    fn batch(schema: &SchemaRef, start: i64, rows: usize) -> RecordBatch {
        let keys = Int32Array::from_iter_values((0..rows).map(|i| (i % 3) as i32));
        let values = Arc::new(StringArray::from(vec!["a", "b", "c"]));
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(start..start + rows as i64)),
                Arc::new(DictionaryArray::<Int32Type>::try_new(keys, values).unwrap()),
            ],
        )
        .unwrap()
    }

    /// Batches of more than half the session's batch size pass uncopied,
    /// also after a short one (a row group's last): the short one goes on
    /// alone rather than putting the coalescer out of step with the input.
    #[tokio::test]
    async fn batches_of_more_than_half_the_size_pass_uncopied() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("kind", dictionary_type(), false),
        ]));
        let sizes = [8192, 3000, 8192, 8192, 5000];
        let mut start = 0;
        let mut input = Vec::new();
        for rows in sizes {
            input.push(batch(&schema, start, rows));
            start += rows as i64;
        }
        let scan =
            MemorySourceConfig::try_new_exec(&[input.clone()], schema.clone(), None).unwrap();
        // the dictionary kept (as a GROUP BY on codes asks) and decoded
        let decoded = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("kind", DataType::Utf8View, false),
        ]));
        for output in [schema.clone(), decoded] {
            let exec = Arc::new(DictionaryFilterExec::new(scan.clone(), None, output));
            let task = SessionContext::new().task_ctx();
            assert_eq!(task.session_config().batch_size(), 8192);
            let got = collect(exec, task).await.unwrap();
            let got_sizes: Vec<usize> = got.iter().map(RecordBatch::num_rows).collect();
            assert_eq!(got_sizes, sizes);
            // the short one was buffered (copied); the others went on whole
            for (g, i) in got.iter().zip(&input).filter(|(_, i)| i.num_rows() > 4096) {
                let (g, i) = (
                    g.column(0).as_primitive::<arrow::datatypes::Int64Type>(),
                    i.column(0).as_primitive::<arrow::datatypes::Int64Type>(),
                );
                assert_eq!(g.values().as_ptr(), i.values().as_ptr(), "copied");
            }
        }
    }
}
