//! Hot tables in memory: the decoded Arrow batches of a table's latest
//! version, held by a process that lives long (`om serve`, an embedding
//! application) so that its queries skip Parquet decoding altogether.
//!
//! Contract:
//! - **What is cached**: tables whose record carries the attribute
//!   `cache = "memory"` (`ALTER TABLE t SET (cache = 'memory')`,
//!   `om datasets cache t`), or every table when
//!   [`MemoryCache::set_all_tables`] is on. The mark is an attribute, so it
//!   stays with the dataset across new versions.
//! - **Never stale**: an entry is keyed by the dataset and valid only for
//!   the Delta version it was loaded from (a Delta version never changes). A
//!   query that resolves a newer version loads that one (a commit in this
//!   process starts the load at once); an older entry is never served.
//! - **Bounded**: the entries' decoded sizes never exceed the budget; the
//!   least recently read entries are dropped to make room. A version larger
//!   than the whole budget is remembered as "too large" and read from
//!   Parquet as if unmarked (no load is retried until the version changes or
//!   the budget grows). The load stops as soon as it passes the budget.
//! - **Same answers**: the cache holds the rows of the version exactly as
//!   the Parquet scan returns them (row filters, masks and access checks
//!   apply above it, per query, as they do to the scan).
//! - A budget of 0 (the library's default: a short-lived process would only
//!   pay for a load it never reuses) turns the cache off.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, DictionaryArray};
use arrow::datatypes::{DataType, Field, FieldRef, Int32Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::{DataSourceExec, MemorySourceConfig};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;

use super::batch_pruning::BatchStatistics;
use super::dictionary_filter::{self, dictionary_type};
use super::dictionary_groups::GroupCodes;
use crate::store::Metadata;
use crate::store::error::{Result, StoreError};

/// The attribute that marks a table for the cache, and its one value that
/// does.
pub const CACHE_ATTRIBUTE: &str = "cache";
pub const CACHE_MEMORY: &str = "memory";

/// True when `meta`'s attributes ask for the memory cache.
pub fn marked(meta: &Metadata) -> bool {
    meta.attributes
        .get(CACHE_ATTRIBUTE)
        .and_then(|v| v.as_str())
        .is_some_and(|v| v == CACHE_MEMORY)
}

/// A dataset: bucket, store prefix, name.
type Key = (String, String, String);

/// The data an entry was loaded from: the Delta table's URL and version.
pub(crate) type Source = (String, u64);

#[derive(Debug)]
struct Entry {
    source: Source,
    /// The store version that was read when loading (for display).
    version: u64,
    /// `None`: the version did not fit in the budget.
    table: Option<Arc<CachedTable>>,
    rows: u64,
    bytes: u64,
    loaded: DateTime<Utc>,
    hits: u64,
    last_used: u64,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<Key, Entry>,
    /// Bytes held by entries with a table.
    used: u64,
    /// A counter for least-recently-used order.
    tick: u64,
}

impl State {
    fn remove(&mut self, key: &Key) {
        if let Some(e) = self.entries.remove(key)
            && e.table.is_some()
        {
            self.used -= e.bytes;
        }
    }

    /// Drops the least recently read entries until `bytes` more fit in `budget`.
    fn make_room(&mut self, bytes: u64, budget: u64) {
        while self.used + bytes > budget {
            let oldest = self
                .entries
                .iter()
                .filter(|(_, e)| e.table.is_some())
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.remove(&k),
                None => break,
            }
        }
    }
}

/// One entry as `omega.system.cache` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheEntryInfo {
    pub bucket: String,
    pub name: String,
    pub version: u64,
    pub rows: u64,
    pub bytes: u64,
    /// `held`, or `too large` (the version exceeds the budget; read from Parquet).
    pub state: &'static str,
    pub loaded: DateTime<Utc>,
    pub hits: u64,
}

/// The memory cache of one store in this process (shared by every session
/// opened on it). See the module doc for its contract.
#[derive(Debug, Default)]
pub struct MemoryCache {
    budget: AtomicU64,
    all_tables: AtomicBool,
    state: Mutex<State>,
    /// One load at a time per dataset: concurrent first readers wait for it.
    loading: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

impl MemoryCache {
    /// A cache holding at most `budget` bytes of decoded batches (0: off).
    pub fn new(budget: u64) -> Self {
        let cache = Self::default();
        cache.budget.store(budget, Ordering::Relaxed);
        cache
    }

    pub fn budget(&self) -> u64 {
        self.budget.load(Ordering::Relaxed)
    }

    /// Changes the budget; entries beyond a smaller one are dropped (least
    /// recently read first), and "too large" verdicts are forgotten.
    pub fn set_budget(&self, bytes: u64) {
        self.budget.store(bytes, Ordering::Relaxed);
        let mut s = self.lock();
        s.entries.retain(|_, e| e.table.is_some());
        s.make_room(0, bytes);
    }

    /// Caches every table read, marked or not (for a process that serves a
    /// working set that fits in memory).
    pub fn set_all_tables(&self, on: bool) {
        self.all_tables.store(on, Ordering::Relaxed);
    }

    /// Whether reads of `meta` go through the cache.
    pub fn wants(&self, meta: &Metadata) -> bool {
        self.budget() > 0 && (self.all_tables.load(Ordering::Relaxed) || marked(meta))
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    /// What the cache holds (and the versions it refused), by bucket and name.
    pub fn entries(&self) -> Vec<CacheEntryInfo> {
        let s = self.lock();
        let mut out: Vec<_> = s
            .entries
            .iter()
            .map(|((bucket, _, name), e)| CacheEntryInfo {
                bucket: bucket.clone(),
                name: name.clone(),
                version: e.version,
                rows: e.rows,
                bytes: e.bytes,
                state: if e.table.is_some() {
                    "held"
                } else {
                    "too large"
                },
                loaded: e.loaded,
                hits: e.hits,
            })
            .collect();
        out.sort_by(|a, b| (&a.bucket, &a.name).cmp(&(&b.bucket, &b.name)));
        out
    }

    /// Drops what is held for `meta`'s dataset (it was unmarked).
    pub fn forget(&self, meta: &Metadata) {
        self.lock().remove(&key(meta));
    }

    /// Drops the entry of `meta`'s dataset if it holds `source` (that
    /// version's data is being deleted).
    pub(crate) fn forget_source(&self, meta: &Metadata, source: &Source) {
        let key = key(meta);
        let mut s = self.lock();
        if s.entries.get(&key).is_some_and(|e| &e.source == source) {
            s.remove(&key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry for `key` if it was loaded from `source`: its table, or
    /// `Some(None)` when that version was too large or is older than the
    /// one held (a time-travel read does not displace the latest version).
    fn lookup(&self, key: &Key, source: &Source, version: u64) -> Option<Option<Arc<CachedTable>>> {
        let mut s = self.lock();
        s.tick += 1;
        let tick = s.tick;
        let e = s.entries.get_mut(key)?;
        if &e.source != source {
            return (version < e.version).then_some(None);
        }
        if e.table.is_some() {
            e.hits += 1;
            e.last_used = tick;
        }
        Some(e.table.clone())
    }

    /// The provider a query of `meta` (whose Delta data is `source`, read by
    /// `scan`) should use: the cached batches, loaded now if needed, or
    /// `scan` itself when the version does not fit.
    pub(crate) async fn provider(
        &self,
        meta: &Metadata,
        source: Source,
        scan: Arc<dyn TableProvider>,
        session: &SessionContext,
    ) -> Result<Arc<dyn TableProvider>> {
        let key = key(meta);
        if let Some(hit) = self.lookup(&key, &source, meta.version) {
            return Ok(hit.map(|t| t as _).unwrap_or(scan));
        }
        let gate = self
            .loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let _loading = gate.lock().await;
        // another reader may have loaded it while this one waited
        if let Some(hit) = self.lookup(&key, &source, meta.version) {
            return Ok(hit.map(|t| t as _).unwrap_or(scan));
        }
        let budget = self.budget();
        let loaded = match load(&meta.name, &scan, session, budget).await? {
            Some((partitions, rows)) => {
                // statistics and dictionaries made before taking the lock
                // other readers need
                let spread = session.state().config().target_partitions();
                let table = CachedTable::new(scan.schema(), partitions, spread, &meta.name)?;
                let bytes = table.bytes();
                Some((Arc::new(table), rows, bytes))
            }
            None => None,
        };
        let mut s = self.lock();
        s.remove(&key);
        s.tick += 1;
        let mut entry = Entry {
            source,
            version: meta.version,
            table: None,
            rows: 0,
            bytes: 0,
            loaded: Utc::now(),
            hits: 0,
            last_used: s.tick,
        };
        let provider = match loaded {
            Some((table, rows, bytes)) => {
                s.make_room(bytes, budget);
                s.used += bytes;
                entry.table = Some(table.clone());
                entry.rows = rows;
                entry.bytes = bytes;
                table as Arc<dyn TableProvider>
            }
            None => scan,
        };
        s.entries.insert(key, entry);
        Ok(provider)
    }
}

fn key(meta: &Metadata) -> Key {
    (meta.bucket.clone(), meta.prefix.clone(), meta.name.clone())
}

/// Partitions of batches and their rows: every partition of the scan read
/// concurrently; `None` as soon as their decoded bytes pass `budget`.
async fn load(
    name: &str,
    scan: &Arc<dyn TableProvider>,
    session: &SessionContext,
    budget: u64,
) -> Result<Option<(Vec<Vec<RecordBatch>>, u64)>> {
    let failed = |e: datafusion::error::DataFusionError| StoreError::table(name, e);
    let state = session.state();
    let plan = scan.scan(&state, None, &[], None).await.map_err(failed)?;
    let task = session.task_ctx();
    let bytes = Arc::new(AtomicU64::new(0));
    let over = Arc::new(AtomicBool::new(false));
    let reads = (0..plan.properties().partitioning.partition_count()).map(|i| {
        let (plan, task, bytes, over) = (plan.clone(), task.clone(), bytes.clone(), over.clone());
        async move {
            let mut stream = plan.execute(i, task)?;
            let mut batches = Vec::new();
            while let Some(b) = stream.try_next().await? {
                let size = b.get_array_memory_size() as u64;
                if bytes.fetch_add(size, Ordering::Relaxed) + size > budget {
                    over.store(true, Ordering::Relaxed);
                }
                if over.load(Ordering::Relaxed) {
                    break;
                }
                batches.push(b);
            }
            Ok::<_, datafusion::error::DataFusionError>(batches)
        }
    });
    let partitions = futures::future::try_join_all(reads).await.map_err(failed)?;
    if over.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let rows = partitions
        .iter()
        .flatten()
        .map(|b| b.num_rows() as u64)
        .sum();
    Ok(Some((partitions, rows)))
}

/// `partitions`' batches, in order, dealt into `n` partitions of about as
/// many rows each, each a run of consecutive batches (so that a filter on
/// a sorted column still finds its rows in one place). The scan's
/// partitions follow its files and can be uneven (one of two held 62% of
/// a 10M-row table's batches), and a table of one file is one partition:
/// a query of the cache runs on as many cores as it has partitions.
fn balanced(partitions: Vec<Vec<RecordBatch>>, n: usize) -> Vec<Vec<RecordBatch>> {
    let n = n.max(1);
    let batches: Vec<RecordBatch> = partitions.into_iter().flatten().collect();
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut out = vec![Vec::new(); n];
    let mut seen = 0;
    for b in batches {
        // the partition the batch's middle row falls in
        let middle = seen + b.num_rows() / 2;
        seen += b.num_rows();
        out[(middle * n / total.max(1)).min(n - 1)].push(b);
    }
    out
}

/// `batches` (all of `schema`) with each string column that has few
/// distinct values (categories, codes, flags: at most one for every four
/// rows) held as a dictionary, and the schema they then have. A view
/// takes 16 bytes a row, a dictionary's key 4, and a filter of the column
/// is decided once per distinct value ([`dictionary_filter`]). A column is
/// tried on its first batch, then kept as it was unless all its batches
/// together have few distinct values.
fn with_dictionaries(
    schema: &SchemaRef,
    mut batches: Vec<Vec<RecordBatch>>,
) -> (SchemaRef, Vec<Vec<RecordBatch>>) {
    let packed = |a: &ArrayRef| arrow::compute::cast(a, &dictionary_type()).ok();
    // distinct values (per batch) and rows of packed columns
    let few = |columns: &mut dyn Iterator<Item = &ArrayRef>| {
        let (mut values, mut rows) = (0, 0);
        for c in columns {
            let Some(d) = c.as_any_dictionary_opt() else {
                return false;
            };
            values += d.values().len();
            rows += c.len();
        }
        values * 4 <= rows
    };
    let mut held = schema.clone();
    for c in 0..schema.fields().len() {
        let first = batches
            .iter()
            .flatten()
            .next()
            .and_then(|b| packed(b.column(c)));
        if *schema.field(c).data_type() != DataType::Utf8View
            || !first.is_some_and(|d| few(&mut std::iter::once(&d)))
        {
            continue;
        }
        let mut fields: Vec<FieldRef> = held.fields().iter().cloned().collect();
        fields[c] = Arc::new(Field::clone(&fields[c]).with_data_type(dictionary_type()));
        let with = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        let repack = |b: &RecordBatch| -> Option<RecordBatch> {
            let mut columns = b.columns().to_vec();
            columns[c] = packed(&columns[c])?;
            RecordBatch::try_new(with.clone(), columns).ok()
        };
        let Some(repacked) = batches
            .iter()
            .map(|p| p.iter().map(repack).collect())
            .collect::<Option<Vec<Vec<RecordBatch>>>>()
        else {
            continue;
        };
        if few(&mut repacked.iter().flatten().map(|b| b.column(c))) {
            batches = shared_dictionary(&repacked, c).unwrap_or(repacked);
            held = with;
        }
    }
    (held, batches)
}

/// Most values a column's dictionary shared by all its batches may have:
/// a string filter is decided on a batch's dictionary values, once per
/// batch, so a shared dictionary stays much smaller than a batch.
const SHARED_DICTIONARY_VALUES: usize = 1024;

/// `batches` with column `c` (dictionaries of [`dictionary_type`]) keyed
/// into one values array they all share, or `None` when the column has more
/// than [`SHARED_DICTIONARY_VALUES`] distinct values. Codes for grouping
/// are then the keys themselves, in every batch (no per-batch mapping and
/// `take`, see [`super::dictionary_groups`]).
fn shared_dictionary(batches: &[Vec<RecordBatch>], c: usize) -> Option<Vec<Vec<RecordBatch>>> {
    // the codes a GROUP BY would give: values numbered in the order met
    let codes = GroupCodes::default();
    // per batch, the shared key of each of its own dictionary's values
    let mut mappings = Vec::new();
    for b in batches.iter().flatten() {
        let own = b.column(c).as_dictionary_opt::<Int32Type>()?;
        mappings.push(codes.encode(own.values()).ok()?);
        if codes.len().ok()? > SHARED_DICTIONARY_VALUES {
            return None;
        }
    }
    let shared: ArrayRef = Arc::new(codes.values().ok()?);
    let mut mappings = mappings.into_iter();
    batches
        .iter()
        .map(|p| {
            p.iter()
                .map(|b| {
                    let own = b.column(c).as_dictionary_opt::<Int32Type>()?;
                    let keys = arrow::compute::take(&mappings.next()?, own.keys(), None).ok()?;
                    let keys = keys.as_primitive_opt::<Int32Type>()?.clone();
                    let column =
                        DictionaryArray::<Int32Type>::try_new(keys, shared.clone()).ok()?;
                    let mut columns = b.columns().to_vec();
                    columns[c] = Arc::new(column);
                    RecordBatch::try_new(b.schema(), columns).ok()
                })
                .collect()
        })
        .collect()
}

/// A version's batches as a read-only table (inserts are refused: writes
/// go through the store). A scan reads only the batches whose statistics
/// say they may hold rows passing its filters.
#[derive(Debug)]
pub(crate) struct CachedTable {
    /// The table's schema, which its scans give.
    schema: SchemaRef,
    /// The batches' schema: the table's, with some string columns held as
    /// dictionaries (see [`with_dictionaries`]).
    held: SchemaRef,
    partitions: Vec<Vec<RecordBatch>>,
    /// Of the batches of every partition, in order.
    statistics: BatchStatistics,
}

impl CachedTable {
    /// The table of `partitions` (batches of `schema`), spread over
    /// `spread` partitions.
    fn new(
        schema: SchemaRef,
        partitions: Vec<Vec<RecordBatch>>,
        spread: usize,
        name: &str,
    ) -> Result<Self> {
        if let Some(b) = partitions
            .iter()
            .flatten()
            .find(|b| !schema.contains(&b.schema()))
        {
            return Err(StoreError::table(
                name,
                format!(
                    "a cached batch's schema {} differs from the table's {schema}",
                    b.schema()
                ),
            ));
        }
        let partitions = balanced(partitions, spread);
        // of the values as the table has them: filters are in its types
        let batches: Vec<_> = partitions.iter().flatten().collect();
        let statistics = BatchStatistics::new(schema.clone(), &batches);
        let (held, partitions) = with_dictionaries(&schema, partitions);
        Ok(Self {
            schema,
            held,
            partitions,
            statistics,
        })
    }

    /// The memory its batches take, a dictionary's values shared by
    /// several batches counted once.
    fn bytes(&self) -> u64 {
        let mut counted: HashSet<*const u8> = HashSet::new();
        let mut bytes = 0;
        for column in self.partitions.iter().flatten().flat_map(|b| b.columns()) {
            bytes += match column.as_any_dictionary_opt() {
                Some(d) => {
                    let values = d.values();
                    let first = counted.insert(Arc::as_ptr(values) as *const u8);
                    d.keys().get_array_memory_size()
                        + if first {
                            values.get_array_memory_size()
                        } else {
                            0
                        }
                }
                None => column.get_array_memory_size(),
            } as u64;
        }
        bytes
    }
}

#[async_trait]
impl TableProvider for CachedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let partitions = match self.statistics.keep(state, filters)? {
            None => self.partitions.clone(),
            Some(keep) => {
                let mut keep = keep.into_iter();
                self.partitions
                    .iter()
                    .map(|p| {
                        p.iter()
                            .filter(|_| keep.next().unwrap_or(true))
                            .cloned()
                            .collect()
                    })
                    .collect()
            }
        };
        let source =
            MemorySourceConfig::try_new(&partitions, self.held.clone(), projection.cloned())?;
        let scan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(source);
        let output = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let read = scan.schema();
        if read
            .fields()
            .iter()
            .zip(output.fields())
            .all(|(r, o)| r.data_type() == o.data_type())
        {
            return Ok(scan);
        }
        // string filters decided on the dictionaries, the rows left given
        // back in the table's types
        let tests = dictionary_filter::string_tests(&self.schema, projection, filters)
            .into_iter()
            .filter(|(i, _)| self.held.field(*i).data_type() != self.schema.field(*i).data_type())
            .collect();
        dictionary_filter::decoded(scan, &self.schema, tests, &output)
    }

    /// Filters prune batches by their statistics; the rows of a kept batch
    /// are filtered above the scan.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }
}

/// The cache registered on `session` (a session extension), if any.
pub fn of(session: &SessionContext) -> Option<Arc<MemoryCache>> {
    session
        .state_ref()
        .read()
        .config()
        .get_extension::<MemoryCache>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringViewArray};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("kind", DataType::Utf8View, true),
            Field::new("name", DataType::Utf8View, false),
        ]))
    }

    /// `rows` rows from `start`: ids, one of three kinds (or NULL), unique names.
    fn batch(start: i64, rows: i64) -> RecordBatch {
        let ids = start..start + rows;
        let kinds = ids
            .clone()
            .map(|i| [Some("a"), Some("b"), None][(i % 3) as usize]);
        let names = ids.clone().map(|i| format!("a long unique name {i}"));
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(ids.clone())),
                Arc::new(StringViewArray::from_iter(kinds)),
                Arc::new(StringViewArray::from_iter_values(names)),
            ],
        )
        .unwrap()
    }

    fn ids(partitions: &[Vec<RecordBatch>]) -> Vec<Vec<i64>> {
        partitions
            .iter()
            .map(|p| {
                p.iter()
                    .map(|b| {
                        b.column(0)
                            .as_primitive::<arrow::datatypes::Int64Type>()
                            .value(0)
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn batches_are_dealt_into_partitions_of_even_rows_in_order() {
        let uneven = vec![
            vec![batch(0, 10)],
            (1..8).map(|i| batch(i * 10, 10)).collect(),
        ];
        let two = balanced(uneven.clone(), 2);
        assert_eq!(ids(&two), vec![vec![0, 10, 20, 30], vec![40, 50, 60, 70]]);
        let three = balanced(uneven.clone(), 3);
        assert_eq!(
            three.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![3, 2, 3]
        );
        assert_eq!(ids(&three).concat(), ids(&two).concat(), "order kept");
        // a table of one partition (one file) is spread too
        let one = balanced(vec![uneven.concat()], 2);
        assert_eq!(ids(&one), ids(&two));
        // batches of unequal rows: by rows, not by count
        let rows = balanced(
            vec![vec![
                batch(0, 100),
                batch(100, 10),
                batch(110, 10),
                batch(120, 10),
            ]],
            2,
        );
        assert_eq!(ids(&rows), vec![vec![0], vec![100, 110, 120]]);
        assert_eq!(balanced(Vec::new(), 2), vec![Vec::<RecordBatch>::new(); 2]);
        assert_eq!(balanced(uneven, 0).len(), 1);
    }

    #[test]
    fn only_strings_with_few_values_become_dictionaries_and_keep_their_values() {
        let batches = vec![
            vec![batch(0, 3000)],
            vec![batch(3000, 3000), batch(6000, 5)],
        ];
        let (held, packed) = with_dictionaries(&schema(), batches.clone());
        assert_eq!(held.field(0).data_type(), &DataType::Int64);
        assert_eq!(held.field(1).data_type(), &dictionary_type());
        assert_eq!(
            held.field(2).data_type(),
            &DataType::Utf8View,
            "unique names stay"
        );
        for (before, after) in batches.iter().flatten().zip(packed.iter().flatten()) {
            assert_eq!(after.schema(), held);
            let back = super::super::conform::conform(after, &schema()).unwrap();
            assert_eq!(&back, before);
            assert_eq!(after.column(1).null_count(), before.column(1).null_count());
        }
        // one values array for all batches: keys are codes of the whole table
        let values: Vec<&ArrayRef> = packed
            .iter()
            .flatten()
            .map(|b| b.column(1).as_any_dictionary().values())
            .collect();
        assert!(values.iter().all(|v| Arc::ptr_eq(v, values[0])));
        assert_eq!(values[0].len(), 2, "a, b (NULL is a key's)");
        // a table of them counts the shared values once
        let table = CachedTable::new(schema(), batches.clone(), 2, "t").unwrap();
        let keys: usize = table
            .partitions
            .iter()
            .flatten()
            .map(|b| {
                b.column(0).get_array_memory_size()
                    + b.column(1)
                        .as_any_dictionary()
                        .keys()
                        .get_array_memory_size()
                    + b.column(2).get_array_memory_size()
            })
            .sum();
        assert_eq!(
            table.bytes(),
            (keys + values[0].get_array_memory_size()) as u64
        );

        // more distinct values than a shared dictionary holds (but few for
        // the rows): each batch keeps its own
        let many: Vec<Vec<RecordBatch>> = vec![
            (0..10)
                .map(|j| {
                    let b = batch(j * 8000, 8000);
                    let kinds: ArrayRef = Arc::new(StringViewArray::from_iter_values(
                        (0..8000).map(|i| format!("k{}", (i + j * 7) % 1100)),
                    ));
                    RecordBatch::try_new(
                        schema(),
                        vec![b.column(0).clone(), kinds, b.column(2).clone()],
                    )
                    .unwrap()
                })
                .collect(),
        ];
        let (held, packed) = with_dictionaries(&schema(), many.clone());
        assert_eq!(held.field(1).data_type(), &dictionary_type());
        let first = packed[0][0].column(1).as_any_dictionary().values().clone();
        assert!(
            !Arc::ptr_eq(packed[0][1].column(1).as_any_dictionary().values(), &first),
            "not shared"
        );
        for (before, after) in many.iter().flatten().zip(packed.iter().flatten()) {
            let back = super::super::conform::conform(after, &schema()).unwrap();
            assert_eq!(&back, before);
        }
        // batches that together have many distinct values keep the column
        // as it was
        let mixed = vec![vec![batch(0, 3000), {
            let b = batch(0, 3000);
            let kinds: ArrayRef = Arc::new(StringViewArray::from_iter_values(
                (0..3000).map(|i| format!("k{i}")),
            ));
            RecordBatch::try_new(
                schema(),
                vec![b.column(0).clone(), kinds, b.column(2).clone()],
            )
            .unwrap()
        }]];
        let (held, kept) = with_dictionaries(&schema(), mixed.clone());
        assert_eq!(held, schema());
        assert_eq!(kept, mixed);
    }
}
