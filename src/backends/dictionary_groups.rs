//! Grouping on dictionary codes.
//!
//! A `GROUP BY` of a string column with few distinct values (a category, a
//! status, TPC-H's `l_returnflag`) makes DataFusion hash every row's string:
//! the scan decodes the column's dictionary into one view per row, and the
//! aggregate hashes and compares those views. DuckDB and Polars group such a
//! column by its dictionary codes. Where the scan reads the column as a
//! dictionary (a [`DictionaryFilterExec`] gives it back as strings, see
//! [`super::dictionary_filter`]), the [`GroupOnCodes`] rule (a physical
//! optimizer rule that runs after DataFusion's own) keeps it a dictionary up
//! to the aggregate and lets the aggregate group 32-bit codes:
//!
//! ```text
//! DecodeGroupsExec        group codes back to the strings (one row per group)
//!   AggregateExec         groups by the codes (a partial aggregate of one
//!                         column: DenseAggregateExec, the code is the group)
//!     EncodeGroupsExec    each batch's dictionary keys mapped to codes
//!       ...               filters, projections, repartitions between
//!         DictionaryFilterExec   the column kept a dictionary
//! ```
//!
//! Each file's (and each row group's) dictionary numbers its values its own
//! way, so the keys are mapped to codes shared by the whole plan
//! ([`GroupCodes`]): a batch's mapping costs one lookup per distinct value of
//! its dictionary, and each row's code is then picked by its key. The output
//! of the aggregate is what it was (the same schema, rows and values), so the
//! rest of the plan (the final aggregate, sorts, joins) does not change.
//!
//! The rule rewrites only what it can prove unchanged: an aggregate that
//! reads raw rows in no particular order, without grouping sets, whose
//! grouped string columns are not used by its aggregate functions, over
//! nodes that pass those columns through untouched (projections that name
//! them bare, filters, repartitions and hash joins that do not look at
//! them). Anything else keeps DataFusion's plan.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, RecordBatch, RecordBatchOptions, StringArray,
    StringViewBuilder,
};
use arrow::datatypes::{DataType, Field, FieldRef, Int32Type, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{HashSet, JoinSide, internal_err};
use datafusion::config::ConfigOptions;
use datafusion::error::Result as DfResult;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateInputMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::{
    CardinalityEffect, ChildrenPropertiesMode, ReplaceChildrenOptions,
};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::joins::utils::build_join_schema;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, InputOrderMode,
    PlanProperties,
};
use futures::{Stream, StreamExt, ready};

use super::dense_aggregate::DenseAggregateExec;
use super::dictionary_filter::{DictionaryFilterExec, dictionary_type, read_as_dictionaries};
use super::one_child;

/// The physical optimizer rule (see the module doc).
#[derive(Debug, Default)]
pub struct GroupOnCodes;

impl PhysicalOptimizerRule for GroupOnCodes {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            Ok(match on_codes(aggregate)? {
                Some(rewritten) => Transformed::yes(rewritten),
                None => Transformed::no(node),
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "group_on_dictionary_codes"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
}

/// `aggregate` grouping on codes, or `None` when the rule does not apply.
fn on_codes(aggregate: &AggregateExec) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let group_by = aggregate.group_expr();
    if aggregate.mode().input_mode() != AggregateInputMode::Raw
        || group_by.has_grouping_set()
        || group_by.is_empty()
        || !matches!(aggregate.input_order_mode(), InputOrderMode::Linear)
        || aggregate
            .aggr_expr()
            .iter()
            .any(|a| !a.order_bys().is_empty())
    {
        return Ok(None);
    }
    let input = aggregate.input();
    let schema = input.schema();
    // columns the aggregate functions (or their FILTERs) read stay strings
    let mut used = HashSet::new();
    for a in aggregate.aggr_expr() {
        for e in a.expressions() {
            used.extend(collect_columns(&e).into_iter().map(|c| c.index()));
        }
    }
    for f in aggregate.filter_expr().iter().flatten() {
        used.extend(collect_columns(f).into_iter().map(|c| c.index()));
    }
    let wanted: Vec<usize> = group_by
        .expr()
        .iter()
        .filter_map(|(e, _)| e.downcast_ref::<Column>().map(Column::index))
        .filter(|i| !used.contains(i) && is_string(schema.field(*i).data_type()))
        .collect();
    if wanted.is_empty() {
        return Ok(None);
    }
    let Some(below) = dictionaries_below(input, &wanted)? else {
        return Ok(None);
    };
    let changed = changed_columns(&schema, &below.schema());
    if changed.is_empty()
        || changed.iter().any(|i| {
            !wanted.contains(i) || *below.schema().field(*i).data_type() != dictionary_type()
        })
    {
        return Ok(None);
    }
    let codes = Arc::new(GroupCodes::default());
    let encode: Arc<dyn ExecutionPlan> =
        Arc::new(GroupCodesExec::encode(below, &changed, codes.clone()));
    let grouped = AggregateExec::try_new(
        *aggregate.mode(),
        group_by.clone(),
        aggregate.aggr_expr().to_vec(),
        aggregate.filter_expr().to_vec(),
        encode.clone(),
        encode.schema(),
    )?
    .with_limit_options(aggregate.limit_options());
    // a partial aggregate of one code column indexes its groups by the code
    let grouped = Arc::new(grouped);
    let grouped: Arc<dyn ExecutionPlan> = match DenseAggregateExec::try_new(grouped.clone()) {
        Some(dense) => Arc::new(dense),
        None => grouped,
    };
    // the aggregate's first columns are its groups, in order
    let decoded: Vec<(usize, FieldRef)> = group_by
        .expr()
        .iter()
        .enumerate()
        .filter(|(_, (e, _))| {
            e.downcast_ref::<Column>()
                .is_some_and(|c| changed.contains(&c.index()))
        })
        .map(|(j, _)| (j, aggregate.schema().field(j).clone().into()))
        .collect();
    let decode = GroupCodesExec::new(grouped, Direction::Decode, decoded, codes);
    if decode.schema() != aggregate.schema() {
        return Ok(None);
    }
    Ok(Some(Arc::new(decode)))
}

/// Indices of the columns whose type differs between `before` and `after`.
fn changed_columns(before: &Schema, after: &Schema) -> Vec<usize> {
    before
        .fields()
        .iter()
        .zip(after.fields())
        .enumerate()
        .filter(|(_, (b, a))| b.data_type() != a.data_type())
        .map(|(i, _)| i)
        .collect()
}

/// `plan` rebuilt so that some of the `wanted` columns of its output come
/// out as dictionaries (and no other column changes), or `None` when none
/// can. Passes through the nodes the module doc names; a column a node
/// looks at (a filter's predicate, a hash partitioning's key, a computed
/// projection) is not asked of the node's input.
fn dictionaries_below(
    plan: &Arc<dyn ExecutionPlan>,
    wanted: &[usize],
) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(filter) = plan.downcast_ref::<DictionaryFilterExec>() {
        return Ok(filter
            .keeping(wanted)
            .map(|f| Arc::new(f) as Arc<dyn ExecutionPlan>));
    }
    if let Some(scan) = read_as_dictionaries(plan, wanted)? {
        return Ok(Some(scan));
    }
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        return join_dictionaries(join, plan, wanted);
    }
    let passes = plan.downcast_ref::<FilterExec>().is_some()
        || plan.downcast_ref::<ProjectionExec>().is_some()
        || plan.downcast_ref::<RepartitionExec>().is_some()
        || plan.downcast_ref::<CoalescePartitionsExec>().is_some()
        || plan.downcast_ref::<CooperativeExec>().is_some();
    let [child] = plan.children()[..] else {
        return Ok(None);
    };
    if !passes {
        return Ok(None);
    }
    // the input columns each wanted output column is, and those the node reads
    let mut looked_at = HashSet::new();
    let mut from: Vec<usize> = Vec::new();
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        for (i, p) in projection.expr().iter().enumerate() {
            match p.expr.downcast_ref::<Column>() {
                Some(c) if wanted.contains(&i) => from.push(c.index()),
                Some(_) => {}
                None => looked_at.extend(collect_columns(&p.expr).into_iter().map(|c| c.index())),
            }
        }
    } else {
        plan.apply_expressions(&mut |e| {
            looked_at.extend(collect_columns(e).into_iter().map(|c| c.index()));
            Ok(TreeNodeRecursion::Continue)
        })?;
        match plan
            .downcast_ref::<FilterExec>()
            .and_then(|f| f.projection().clone())
        {
            Some(projection) => from.extend(wanted.iter().filter_map(|i| projection.get(*i))),
            None => from.extend_from_slice(wanted),
        }
    }
    from.retain(|i| !looked_at.contains(i));
    from.sort_unstable();
    from.dedup();
    if from.is_empty() {
        return Ok(None);
    }
    let Some(input) = dictionaries_below(child, &from)? else {
        return Ok(None);
    };
    rebuilt_over(plan, vec![input], wanted)
}

/// `join` rebuilt so that some of the `wanted` columns of its output come
/// out as dictionaries, asked of the side each comes from. A hash join
/// passes a column of either side on by `take` (or as nulls for an outer
/// join's unmatched rows) whatever its type, so any column the join does not
/// look at (its keys and filter) may be a dictionary: a `GROUP BY` of a
/// dimension's string after a join with a fact table groups codes.
fn join_dictionaries(
    join: &HashJoinExec,
    plan: &Arc<dyn ExecutionPlan>,
    wanted: &[usize],
) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let (left, right) = (join.left(), join.right());
    let (_, columns) = build_join_schema(&left.schema(), &right.schema(), join.join_type());
    // per side (left, right): the columns the join looks at and those asked
    let side = |s: JoinSide| usize::from(s == JoinSide::Right);
    let mut looked_at: [HashSet<usize>; 2] = Default::default();
    for (l, r) in join.on() {
        looked_at[0].extend(collect_columns(l).into_iter().map(|c| c.index()));
        looked_at[1].extend(collect_columns(r).into_iter().map(|c| c.index()));
    }
    for c in join
        .filter()
        .map(|f| f.column_indices())
        .unwrap_or_default()
    {
        if c.side != JoinSide::None {
            looked_at[side(c.side)].insert(c.index);
        }
    }
    let mut from: [Vec<usize>; 2] = Default::default();
    for i in wanted {
        let j = match &join.projection {
            Some(projection) => projection.get(*i).copied(),
            None => Some(*i),
        };
        let Some(c) = j.and_then(|j| columns.get(j)) else {
            return Ok(None);
        };
        if c.side != JoinSide::None && !looked_at[side(c.side)].contains(&c.index) {
            from[side(c.side)].push(c.index);
        }
    }
    // a side that changes nothing stays; rebuilt_over drops a join neither changed
    let mut children = vec![left.clone(), right.clone()];
    for (child, from) in children.iter_mut().zip(&mut from) {
        from.sort_unstable();
        from.dedup();
        if from.is_empty() {
            continue;
        }
        if let Some(input) = dictionaries_below(child, from)? {
            *child = input;
        }
    }
    rebuilt_over(plan, children, wanted)
}

/// `plan` over `children` (some of whose columns became dictionaries), its
/// output types following theirs; `None` when none of its output columns
/// changes type or one not `wanted` does (a column passed on twice, one of
/// them not wanted, changes both).
fn rebuilt_over(
    plan: &Arc<dyn ExecutionPlan>,
    mut children: Vec<Arc<dyn ExecutionPlan>>,
    wanted: &[usize],
) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let rebuilt: Arc<dyn ExecutionPlan> = match plan.downcast_ref::<ProjectionExec>() {
        // a projection's replace_children keeps the output types it was
        // planned with, whatever its new input gives
        Some(projection) if children.len() == 1 => Arc::new(ProjectionExec::try_new(
            projection.expr().to_vec(),
            children.swap_remove(0),
        )?),
        _ => plan.clone().replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )?,
    };
    let changed = changed_columns(&plan.schema(), &rebuilt.schema());
    if changed.is_empty() || changed.iter().any(|i| !wanted.contains(i)) {
        return Ok(None);
    }
    Ok(Some(rebuilt))
}

/// Codes for the distinct strings of the grouped columns, shared by the
/// encoding and decoding ends of one rewritten aggregate (all partitions).
/// Grows with the distinct values seen, which the aggregate above holds
/// as groups too.
#[derive(Debug, Default)]
pub struct GroupCodes {
    inner: Mutex<Codes>,
}

#[derive(Debug, Default)]
struct Codes {
    by_value: HashMap<String, i32>,
    values: Vec<String>,
}

impl GroupCodes {
    fn lock(&self) -> DfResult<std::sync::MutexGuard<'_, Codes>> {
        self.inner.lock().map_err(|_| {
            datafusion::error::DataFusionError::Internal("group codes poisoned".into())
        })
    }

    /// The code of each of `values` (strings; `None` for a null value).
    pub(crate) fn encode(&self, values: &ArrayRef) -> DfResult<Int32Array> {
        let mut codes = self.lock()?;
        let mut code = |s: &str| -> DfResult<i32> {
            if let Some(c) = codes.by_value.get(s) {
                return Ok(*c);
            }
            let Ok(c) = i32::try_from(codes.values.len()) else {
                return internal_err!("more than 2^31 distinct group values");
            };
            codes.by_value.insert(s.to_string(), c);
            codes.values.push(s.to_string());
            Ok(c)
        };
        let mut out = Vec::with_capacity(values.len());
        match values.data_type() {
            DataType::Utf8 => {
                for v in values.as_string::<i32>() {
                    out.push(v.map(&mut code).transpose()?);
                }
            }
            DataType::LargeUtf8 => {
                for v in values.as_string::<i64>() {
                    out.push(v.map(&mut code).transpose()?);
                }
            }
            DataType::Utf8View => {
                for v in values.as_string_view() {
                    out.push(v.map(&mut code).transpose()?);
                }
            }
            t => return internal_err!("dictionary of {t} grouped as strings"),
        }
        Ok(Int32Array::from(out))
    }

    /// Every value given a code so far, in code order (the values array of
    /// a dictionary whose keys are these codes).
    pub(crate) fn values(&self) -> DfResult<StringArray> {
        Ok(StringArray::from_iter_values(&self.lock()?.values))
    }

    /// How many values have a code.
    pub(crate) fn len(&self) -> DfResult<usize> {
        Ok(self.lock()?.values.len())
    }

    /// The strings of `codes`, as `to`.
    fn decode(&self, codes: &Int32Array, to: &DataType) -> DfResult<ArrayRef> {
        let held = self.lock()?;
        let mut out = StringViewBuilder::with_capacity(codes.len());
        for c in codes {
            match c.and_then(|c| held.values.get(usize::try_from(c).ok()?)) {
                Some(v) => out.append_value(v),
                None if c.is_none() => out.append_null(),
                None => return internal_err!("group code {c:?} was never given out"),
            }
        }
        let strings: ArrayRef = Arc::new(out.finish());
        Ok(match to {
            DataType::Utf8View => strings,
            to => arrow::compute::cast(&strings, to)?,
        })
    }
}

/// Which way a [`GroupCodesExec`] converts its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Dictionaries to their codes (`Int32`, nulls kept), under the aggregate.
    Encode,
    /// The aggregate's codes back to the strings they stand for.
    Decode,
}

/// Converts some columns between dictionaries and [`GroupCodes`]: shown as
/// `EncodeGroupsExec` under the aggregate and `DecodeGroupsExec` over it.
#[derive(Debug)]
pub struct GroupCodesExec {
    input: Arc<dyn ExecutionPlan>,
    direction: Direction,
    /// Column and the field it has in the output.
    columns: Vec<(usize, FieldRef)>,
    codes: Arc<GroupCodes>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl GroupCodesExec {
    /// `input` with its dictionary `columns` replaced by codes.
    fn encode(input: Arc<dyn ExecutionPlan>, columns: &[usize], codes: Arc<GroupCodes>) -> Self {
        let read = input.schema();
        let columns = columns
            .iter()
            .map(|i| {
                let field = Field::clone(read.field(*i)).with_data_type(DataType::Int32);
                (*i, Arc::new(field))
            })
            .collect();
        Self::new(input, Direction::Encode, columns, codes)
    }

    fn new(
        input: Arc<dyn ExecutionPlan>,
        direction: Direction,
        columns: Vec<(usize, FieldRef)>,
        codes: Arc<GroupCodes>,
    ) -> Self {
        let read = input.schema();
        let mut fields: Vec<FieldRef> = read.fields().iter().cloned().collect();
        for (i, f) in &columns {
            fields[*i] = f.clone();
        }
        let schema = Arc::new(Schema::new_with_metadata(fields, read.metadata().clone()));
        // orderings are dropped: codes do not sort as the strings do
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        ));
        GroupCodesExec {
            input,
            direction,
            columns,
            codes,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for GroupCodesExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let names: Vec<&str> = self
            .columns
            .iter()
            .map(|(_, f)| f.name().as_str())
            .collect();
        write!(f, "{}: {}", self.name(), names.join(", "))
    }
}

impl ExecutionPlan for GroupCodesExec {
    fn name(&self) -> &str {
        match self.direction {
            Direction::Encode => "EncodeGroupsExec",
            Direction::Decode => "DecodeGroupsExec",
        }
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = one_child(self.name(), &mut children)?;
        Ok(Arc::new(GroupCodesExec::new(
            input,
            self.direction,
            self.columns.clone(),
            self.codes.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        Ok(Box::pin(GroupCodesStream {
            input,
            direction: self.direction,
            columns: self.columns.clone(),
            codes: self.codes.clone(),
            schema: self.schema.clone(),
            last: HashMap::new(),
            metrics: BaselineMetrics::new(&self.metrics, partition),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }
}

struct GroupCodesStream {
    input: SendableRecordBatchStream,
    direction: Direction,
    columns: Vec<(usize, FieldRef)>,
    codes: Arc<GroupCodes>,
    schema: SchemaRef,
    /// Encoding, per column, the last dictionary seen and its values'
    /// codes (`None`: the keys are the codes): a row group's batches share
    /// their dictionary, mapped once.
    last: HashMap<usize, (ArrayRef, Option<Int32Array>)>,
    metrics: BaselineMetrics,
}

impl GroupCodesStream {
    fn convert(&mut self, batch: RecordBatch) -> DfResult<RecordBatch> {
        let _timer = self.metrics.elapsed_compute().timer();
        let mut columns = batch.columns().to_vec();
        for (i, field) in &self.columns {
            columns[*i] = match self.direction {
                Direction::Encode => {
                    let Some(dictionary) = columns[*i].as_dictionary_opt::<Int32Type>() else {
                        return internal_err!(
                            "{} to group on codes is not a dictionary",
                            field.name()
                        );
                    };
                    let values = dictionary.values();
                    let mapping = match self.last.get(i) {
                        Some((seen, mapping)) if Arc::ptr_eq(seen, values) => mapping.clone(),
                        _ => {
                            let mapping = self.codes.encode(values)?;
                            // keys that are already the codes (the first
                            // dictionary, one every batch shares) need no take
                            let identity = mapping.null_count() == 0
                                && mapping
                                    .values()
                                    .iter()
                                    .enumerate()
                                    .all(|(k, c)| usize::try_from(*c) == Ok(k));
                            let mapping = (!identity).then_some(mapping);
                            self.last.insert(*i, (values.clone(), mapping.clone()));
                            mapping
                        }
                    };
                    match mapping {
                        Some(mapping) => arrow::compute::take(&mapping, dictionary.keys(), None)?,
                        None => Arc::new(dictionary.keys().clone()),
                    }
                }
                Direction::Decode => {
                    let Some(codes) = columns[*i].as_primitive_opt::<Int32Type>() else {
                        return internal_err!("group column {} is not codes", field.name());
                    };
                    self.codes.decode(codes, field.data_type())?
                }
            };
        }
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?)
    }
}

impl Stream for GroupCodesStream {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let poll = match ready!(self.input.poll_next_unpin(cx)) {
            Some(Ok(batch)) => Some(self.convert(batch)),
            other => other,
        };
        self.metrics.record_poll(Poll::Ready(poll))
    }
}

impl RecordBatchStream for GroupCodesStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}
