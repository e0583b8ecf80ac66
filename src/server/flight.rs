//! Arrow Flight SQL over the store (arrow-flight's `FlightSqlService`).
//!
//! Queries are planned in `GetFlightInfo` (the announced schema is the
//! physical plan's, exactly what `DoGet` then sends) and executed in `DoGet`
//! as a stream: batches go out as DataFusion produces them, and a client that
//! disconnects drops the stream, which stops the query. Prepared statements
//! and tickets live in bounded, expiring maps owned by the key that made
//! them. Updates (`executescript`, prepared `executemany`) run through the
//! same statement layer as `om sql`; bulk ingest writes one new dataset
//! version from the streamed batches.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, CommandGetCatalogs,
    CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest,
    CommandStatementQuery, CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt,
    SqlInfo, TableExistsOption, TableNotExistOption, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::common::ScalarValue;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::stream::{AbortHandle, Abortable};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::ServerState;
use super::auth::{Credential, Identity, key_of};
use super::error::{ErrorKind, ServerError};
use crate::Omega;
use crate::backends::conform::conform;
use crate::store::{Object, PutMode, PutOptions};

/// A statement prepared by a client: its SQL (`?` already numbered) and the
/// parameters bound last.
#[derive(Clone)]
pub struct Prepared {
    sql: String,
    query: bool,
    /// Rows of `$1, $2, …` values bound last (a query takes at most one):
    /// `None` until a client binds any, possibly `Some` of no rows (an
    /// `executemany` over an empty sequence, which runs nothing).
    params: Option<Vec<Vec<ScalarValue>>>,
}

impl Prepared {
    /// The one row of parameters a query runs with.
    fn query_params(&self) -> Result<&[ScalarValue], ServerError> {
        match self.params.as_deref().unwrap_or_default() {
            [] => Ok(&[]),
            [row] => Ok(row),
            rows => Err(ServerError::bad_request(format!(
                "a query runs with one row of parameters, {} were bound; use executemany for updates",
                rows.len()
            ))),
        }
    }
}

/// A planned query waiting for its `DoGet`.
#[derive(Clone)]
pub struct Planned {
    plan: Arc<dyn ExecutionPlan>,
    ctx: Arc<TaskContext>,
    /// What `GetFlightInfo` announced and `DoGet` sends.
    schema: SchemaRef,
}

/// A ticket: the planned query and the verified key it was planned for
/// (`None`: anonymous).
#[derive(Clone)]
pub struct Issued {
    planned: Planned,
    credential: Option<Credential>,
}

/// The Flight SQL service.
#[derive(Clone)]
pub struct OmegaFlightSql {
    state: Arc<ServerState>,
    /// Queries streaming now, by ticket handle: their owner and what stops them.
    running: Arc<std::sync::Mutex<std::collections::HashMap<String, (String, AbortHandle)>>>,
}

/// Removes a finished (or dropped) stream from the running queries.
struct Finished {
    running: Arc<std::sync::Mutex<std::collections::HashMap<String, (String, AbortHandle)>>>,
    handle: String,
}

impl Drop for Finished {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.handle);
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl OmegaFlightSql {
    pub fn new(state: Arc<ServerState>) -> Self {
        Self {
            state,
            running: Default::default(),
        }
    }

    /// Cancels the queries of a FlightInfo this key received: a ticket not
    /// yet fetched is dropped, a stream running is stopped (its client sees
    /// CANCELLED). False when none of them is known (finished or not its own).
    fn cancel(&self, id: &Identity, info: &FlightInfo) -> bool {
        let mut found = false;
        for endpoint in &info.endpoint {
            let Some(ticket) = &endpoint.ticket else {
                continue;
            };
            let Ok(any) = arrow_flight::sql::Any::decode(ticket.ticket.clone()) else {
                continue;
            };
            let Ok(Some(t)) = any.unpack::<TicketStatementQuery>() else {
                continue;
            };
            let Ok(handle) = String::from_utf8(t.statement_handle.to_vec()) else {
                continue;
            };
            if self.state.tickets.take(&id.key_id, &handle).is_ok() {
                found = true;
            }
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((owner, abort)) = running.get(&handle)
                && *owner == id.key_id
            {
                abort.abort();
                found = true;
            }
        }
        found
    }

    async fn identify<T>(&self, request: &Request<T>) -> Result<Identity, Status> {
        let peer = request.remote_addr().map(|a| a.ip());
        Ok(self
            .state
            .auth
            .identify(authorization(request)?, peer)
            .await?)
    }

    /// The ticket `handle` for its `DoGet`, and its owner. A ticket planned
    /// for the key presented now, from a verification less than
    /// [`TICKET_TRUST`](super::auth::TICKET_TRUST) old, is handed over without
    /// reading the key's record again (one store read less per query; on S3
    /// one request); any other request is verified as usual.
    async fn ticket<T>(
        &self,
        request: &Request<T>,
        handle: &str,
    ) -> Result<(String, Planned), Status> {
        let key = authorization(request)?.and_then(key_of);
        if let Some(key) = key
            && let Some((owner, issued)) = self.state.tickets.take_if(handle, |issued| {
                issued
                    .credential
                    .as_ref()
                    .is_some_and(|c| c.vouches_for(&key))
            })
        {
            return Ok((owner, issued.planned));
        }
        let id = self.identify(request).await?;
        let issued = self.state.tickets.take(&id.key_id, handle)?;
        Ok((id.key_id, issued.planned))
    }

    /// Announces a planned query and keeps it for `DoGet`.
    fn announce(
        &self,
        id: &Identity,
        planned: Planned,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = planned.schema.clone();
        let issued = Issued {
            planned,
            credential: id.credential.clone(),
        };
        let handle = self.state.tickets.insert(&id.key_id, issued)?;
        let ticket = TicketStatementQuery {
            statement_handle: handle.into_bytes().into(),
        };
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
            .with_endpoint(
                FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec())),
            )
            .with_descriptor(descriptor)
            .with_ordered(true);
        Ok(Response::new(info))
    }

    /// Sends one in-memory batch (metadata answers).
    fn send_batch<E>(
        schema: SchemaRef,
        batch: Result<RecordBatch, E>,
    ) -> BoxStream<arrow_flight::FlightData>
    where
        FlightError: From<E>,
        E: Send + 'static,
    {
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async move {
                batch.map_err(FlightError::from)
            }))
            .map_err(Status::from);
        Box::pin(stream)
    }

    fn metadata_info(
        &self,
        schema: &Schema,
        command: impl ProstMessageExt,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
            .with_endpoint(
                FlightEndpoint::new().with_ticket(Ticket::new(command.as_any().encode_to_vec())),
            )
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    /// Table rows visible to the identity, from `information_schema.tables`
    /// (so the catalog's visibility rules apply): catalog, schema, name, type.
    async fn visible_tables(om: &Omega) -> Result<Vec<[String; 4]>, ServerError> {
        let df = om
            .sql("SELECT table_catalog, table_schema, table_name, table_type FROM information_schema.tables")
            .await?;
        let mut out = Vec::new();
        for batch in df.collect().await? {
            let cols: Vec<_> = (0..4)
                .map(|i| arrow::compute::cast(batch.column(i), &DataType::Utf8))
                .collect::<Result<_, _>>()?;
            let cols: Vec<&arrow::array::StringArray> = cols
                .iter()
                .map(|c| c.as_any().downcast_ref().expect("cast to Utf8"))
                .collect();
            for row in 0..batch.num_rows() {
                out.push(std::array::from_fn(|i| cols[i].value(row).to_string()));
            }
        }
        Ok(out)
    }
}

/// Plans `sql` with `params` bound: a query stays lazy (executed in DoGet);
/// any other statement runs now and its result (a `count`) is what DoGet sends.
async fn plan(
    state: &ServerState,
    om: &Omega,
    sql: &str,
    params: &[ScalarValue],
) -> Result<Planned, ServerError> {
    let df = state.statement(om, sql, params).await?;
    let ctx = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await?;
    let schema = flight_schema(&plan.schema());
    Ok(Planned { plan, ctx, schema })
}

/// Runs a statement (or script) to completion; the number of rows it wrote.
/// `om` is the request's own session (see [`super::request_session`]).
async fn update(om: &Omega, sql: &str, params: &[ScalarValue]) -> Result<i64, ServerError> {
    let df = om.sql_with_params(sql, params).await?;
    let batches = df.collect().await?;
    Ok(count_of(&batches))
}

/// Runs a prepared write once per bound parameter row (once when nothing
/// was bound, never when no rows were); the rows written in all.
async fn run_rows(om: &Omega, prepared: &Prepared) -> Result<i64, ServerError> {
    // one private session for all the rows: a row's SET reaches the next rows
    let om = &super::request_session(om, &prepared.sql)?;
    let Some(rows) = &prepared.params else {
        return update(om, &prepared.sql, &[]).await;
    };
    let mut total = 0;
    for row in rows {
        total += update(om, &prepared.sql, row).await?.max(0);
    }
    Ok(total)
}

/// A one-row `count` result.
fn count_batch(count: i64) -> Result<RecordBatch, ServerError> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::Int64,
        false,
    )]));
    Ok(RecordBatch::try_new(
        schema,
        vec![Arc::new(arrow::array::Int64Array::from(vec![count]))],
    )?)
}

/// The rows a statement reports: the sum of its `count` column, or -1 when
/// it reports none (a query run as an update).
fn count_of(batches: &[RecordBatch]) -> i64 {
    let mut total = None;
    for batch in batches {
        if let Ok(i) = batch.schema().index_of("count")
            && let Ok(c) = arrow::compute::cast(batch.column(i), &DataType::Int64)
            && let Some(c) = c.as_any().downcast_ref::<arrow::array::Int64Array>()
        {
            *total.get_or_insert(0) += c.iter().flatten().sum::<i64>();
        }
    }
    total.unwrap_or(-1)
}

/// The schema clients see: dictionary columns are sent as their values
/// (arrow-flight's encoder hydrates them), so the announcement says so too.
pub fn flight_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, value) => {
                f.as_ref().clone().with_data_type(value.as_ref().clone())
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The parameter rows a DoPut binds: `None` when it sends no parameter
/// schema (nothing bound), else every row of its batches (maybe none).
async fn bound_rows(
    request: Request<PeekableFlightDataStream>,
) -> Result<Option<Vec<Vec<ScalarValue>>>, Status> {
    let mut decoded = parameter_batches(request);
    let mut rows = Vec::new();
    while let Some(batch) = decoded.next().await.transpose().map_err(Status::from)? {
        for row in 0..batch.num_rows() {
            rows.push(params_of(&batch, row)?);
        }
    }
    let bound = decoded.schema().is_some_and(|s| !s.fields().is_empty());
    Ok(bound.then_some(rows))
}

/// Row `row` of a parameter batch as `$1, $2, …` values.
fn params_of(batch: &RecordBatch, row: usize) -> Result<Vec<ScalarValue>, ServerError> {
    batch
        .columns()
        .iter()
        .map(|c| ScalarValue::try_from_array(c, row).map_err(ServerError::from))
        .collect()
}

/// The parameter batches a client streams with DoPut.
fn parameter_batches(request: Request<PeekableFlightDataStream>) -> FlightRecordBatchStream {
    // A message with only the command (arrow-rs' client sends one) has no
    // IPC header to decode.
    let stream = request
        .into_inner()
        .try_filter(|data| futures::future::ready(!data.data_header.is_empty()))
        .map_err(|s| FlightError::Tonic(Box::new(s)));
    FlightRecordBatchStream::new_from_flight_data(stream)
}

/// The request's `authorization` header, if any.
fn authorization<T>(request: &Request<T>) -> Result<Option<&str>, Status> {
    Ok(request
        .metadata()
        .get("authorization")
        .map(|v| v.to_str().map_err(|_| ServerError::unauthenticated()))
        .transpose()?)
}

fn handle_text(bytes: &[u8]) -> Result<String, Status> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Status::invalid_argument("the handle is not one this server issued"))
}

fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &Default::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| {
            Status::internal(format!("cannot encode the schema: {e}"))
        })?;
    Ok(bytes)
}

fn sql_info() -> Result<SqlInfoData, Status> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "omegastore");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, true);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.build()
        .map_err(|e| Status::internal(format!("cannot build SqlInfo: {e}")))
}

#[tonic::async_trait]
impl FlightSqlService for OmegaFlightSql {
    type FlightService = OmegaFlightSql;

    /// Basic (any user, the key as password) or Bearer credentials; the
    /// bearer token handed back is the key itself.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<BoxStream<HandshakeResponse>>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ServerError::unauthenticated)?;
        let key = key_of(header).ok_or_else(ServerError::unauthenticated)?;
        let peer = request.remote_addr().map(|a| a.ip());
        self.state.auth.for_key(&key, peer).await?;
        let token = format!("Bearer {key}");
        let output = futures::stream::iter(vec![Ok(HandshakeResponse {
            protocol_version: 0,
            payload: key.into_bytes().into(),
        })]);
        let mut response: Response<BoxStream<HandshakeResponse>> = Response::new(Box::pin(output));
        let value =
            MetadataValue::try_from(token.as_str()).map_err(|_| ServerError::unauthenticated())?;
        response.metadata_mut().insert("authorization", value);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let id = self.identify(&request).await?;
        let sql = crate::sql::number_question_marks(&query.query).map_err(ServerError::from)?;
        let planned = plan(&self.state, &id.om, &sql, &[]).await?;
        self.announce(&id, planned, request.into_inner())
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let id = self.identify(&request).await?;
        let handle = handle_text(&cmd.prepared_statement_handle)?;
        let prepared = self.state.statements.get(&id.key_id, &handle)?;
        let once = match prepared.params.as_deref() {
            None => Some(&[][..]),
            Some([row]) => Some(row.as_slice()),
            Some(_) => None,
        };
        let planned = if prepared.query {
            plan(&self.state, &id.om, &prepared.sql, prepared.query_params()?).await?
        } else if let Some(params) = once {
            // A write or script executed as a query (ADBC's `cursor.execute`)
            // with one row of parameters at most: it runs here, and DoGet
            // sends what its last statement returns (a query's rows, a
            // write's count), as for an unprepared statement.
            plan(&self.state, &id.om, &prepared.sql, params).await?
        } else {
            // Executed once per bound row (none when no rows were bound);
            // DoGet sends the rows written in all.
            let om = id.om.clone();
            let total = self
                .state
                .write(async move { run_rows(&om, &prepared).await })
                .await?;
            let batches = vec![count_batch(total)?];
            let df = id
                .om
                .session()
                .read_batches(batches)
                .map_err(ServerError::from)?;
            let ctx = Arc::new(df.task_ctx());
            let plan = df.create_physical_plan().await.map_err(ServerError::from)?;
            let schema = flight_schema(&plan.schema());
            Planned { plan, ctx, schema }
        };
        self.announce(&id, planned, request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let handle = handle_text(&ticket.statement_handle)?;
        let (key_id, planned) = self.ticket(&request, &handle).await?;
        // a worker is taken by the query itself once it is past its youth
        let stream = self
            .state
            .lanes
            .execute(planned.plan, planned.ctx)
            .map_err(ServerError::from)?;
        let schema = planned.schema.clone();
        let batches = stream.map(move |batch| {
            batch
                // typed as any other error of the request (a query out of
                // memory is UNAVAILABLE with its hint, not INTERNAL)
                .map_err(|e| FlightError::Tonic(Box::new(Status::from(ServerError::from(e)))))
                .and_then(|b| conform(&b, &schema).map_err(FlightError::from))
        });
        let (abort, registration) = AbortHandle::new_pair();
        let abort_check = abort.clone();
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(handle.clone(), (key_id, abort));
        let finished = Finished {
            running: self.running.clone(),
            handle,
        };
        let out = FlightDataEncoderBuilder::new()
            .with_schema(planned.schema)
            .with_max_flight_data_size(self.state.limits.flight_data_bytes)
            .build(batches)
            .map_err(Status::from);
        let aborted = abort_check;
        let tail = futures::stream::once(async move {
            drop(finished);
            aborted
                .is_aborted()
                .then(|| Err(Status::cancelled("the query was cancelled")))
        })
        .filter_map(futures::future::ready);
        let out = Abortable::new(out, registration).chain(tail);
        Ok(Response::new(Box::pin(out)))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.identify(&request).await?;
        let schema = query.into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let id = self.identify(&request).await?;
        let mut builder = query.into_builder();
        let mut names = id.om.session().catalog_names();
        names.sort();
        for name in names {
            builder.append(name);
        }
        let schema = builder.schema();
        Ok(Response::new(Self::send_batch(schema, builder.build())))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.identify(&request).await?;
        let schema = query.clone().into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let id = self.identify(&request).await?;
        let tables = Self::visible_tables(&id.om).await?;
        let mut pairs: Vec<(String, String)> =
            tables.into_iter().map(|[c, s, _, _]| (c, s)).collect();
        pairs.sort();
        pairs.dedup();
        let mut builder = query.into_builder();
        for (catalog, schema) in pairs {
            builder.append(catalog, schema);
        }
        let schema = builder.schema();
        Ok(Response::new(Self::send_batch(schema, builder.build())))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.identify(&request).await?;
        let schema = query.clone().into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let id = self.identify(&request).await?;
        let include_schema = query.include_schema;
        let mut builder = query.into_builder();
        for [catalog, schema, table, kind] in Self::visible_tables(&id.om).await? {
            let kind = if kind == "VIEW" { "VIEW" } else { "TABLE" };
            let table_schema = if include_schema {
                let reference = datafusion::common::TableReference::full(
                    catalog.as_str(),
                    schema.as_str(),
                    table.as_str(),
                );
                match id.om.session().table_provider(reference).await {
                    Ok(p) => p.schema(),
                    Err(_) => continue, // dropped since it was listed
                }
            } else {
                Arc::new(Schema::empty())
            };
            builder
                .append(catalog, schema, table, kind, &table_schema)
                .map_err(Status::from)?;
        }
        let schema = builder.schema();
        Ok(Response::new(Self::send_batch(schema, builder.build())))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.identify(&request).await?;
        let schema = Schema::new(vec![Field::new("table_type", DataType::Utf8, false)]);
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.identify(&request).await?;
        let schema = Arc::new(Schema::new(vec![Field::new(
            "table_type",
            DataType::Utf8,
            false,
        )]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(arrow::array::StringArray::from(vec![
                "TABLE", "VIEW",
            ]))],
        );
        Ok(Response::new(Self::send_batch(schema, batch)))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.identify(&request).await?;
        let info = sql_info()?;
        let schema = query.clone().into_builder(&info).schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.identify(&request).await?;
        let info = sql_info()?;
        let builder = query.into_builder(&info);
        let schema = builder.schema();
        Ok(Response::new(Self::send_batch(schema, builder.build())))
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let id = self.identify(&request).await?;
        let sql = crate::sql::number_question_marks(&command.query).map_err(ServerError::from)?;
        let om = id.om.clone();
        Ok(self
            .state
            .write(async move { update(&super::request_session(&om, &sql)?, &sql, &[]).await })
            .await?)
    }

    async fn do_put_statement_ingest(
        &self,
        command: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let id = self.identify(&request).await?;
        if command.temporary {
            return Err(ServerError::bad_request(
                "temporary tables are not supported; ingest into a dataset",
            )
            .into());
        }
        if command.transaction_id.is_some() {
            return Err(ServerError::bad_request("transactions are not supported").into());
        }
        let om = match &command.schema {
            Some(bucket) if !bucket.is_empty() => {
                id.om.bucket(bucket).map_err(ServerError::from)?
            }
            _ => id.om.clone(),
        };
        let name = command.table.clone();
        let options = command.table_definition_options.unwrap_or_default();
        let exists = om
            .datasets()
            .exists(&name)
            .await
            .map_err(ServerError::from)?;
        let mode = if exists {
            match options.if_exists() {
                TableExistsOption::Append => PutMode::Append,
                TableExistsOption::Replace => PutMode::Overwrite,
                TableExistsOption::Fail | TableExistsOption::Unspecified => {
                    return Err(ServerError::new(
                        ErrorKind::Conflict,
                        format!("dataset '{name}' already exists; ingest with mode 'append' or 'replace'"),
                    )
                    .into());
                }
            }
        } else {
            match options.if_not_exist() {
                TableNotExistOption::Create | TableNotExistOption::Unspecified => PutMode::Error,
                TableNotExistOption::Fail => {
                    return Err(ServerError::not_found(format!(
                        "dataset '{name}' does not exist; ingest with mode 'create' or 'create_append'"
                    ))
                    .into());
                }
            }
        };
        let mut decoded = parameter_batches(request);
        let first = decoded.next().await.transpose().map_err(Status::from)?;
        let schema = match (&first, decoded.schema()) {
            (Some(b), _) => b.schema(),
            (None, Some(s)) => s.clone(),
            (None, None) => {
                return Err(ServerError::bad_request("bulk ingest sent no schema").into());
            }
        };
        let rows = Arc::new(AtomicI64::new(0));
        let counter = rows.clone();
        let stream = futures::stream::iter(first.map(Ok))
            .chain(decoded)
            .map(move |b| {
                let b = b.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
                counter.fetch_add(b.num_rows() as i64, Ordering::Relaxed);
                Ok(b)
            });
        let object = Object::Stream(Box::pin(RecordBatchStreamAdapter::new(schema, stream)));
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        self.state
            .write(async move { om.datasets().put(object, &name, opts).await })
            .await?;
        Ok(rows.load(Ordering::Relaxed))
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let id = self.identify(&request).await?;
        let handle = handle_text(&query.prepared_statement_handle)?;
        let mut prepared = self.state.statements.get(&id.key_id, &handle)?;
        if let Some(rows) = bound_rows(request).await? {
            prepared.params = Some(rows);
        }
        self.state
            .statements
            .update(&id.key_id, &handle, prepared)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.into_bytes().into()),
        })
    }

    /// One execution per parameter row (ADBC's `executemany`), each its own
    /// atomic write; with no parameters, one execution.
    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let id = self.identify(&request).await?;
        let handle = handle_text(&query.prepared_statement_handle)?;
        let mut prepared = self.state.statements.get(&id.key_id, &handle)?;
        // Parameters come with this DoPut (ADBC) or were bound before it
        // (arrow-rs' client binds with a DoPut of the query command).
        if let Some(rows) = bound_rows(request).await? {
            prepared.params = Some(rows);
        }
        if prepared.params.as_ref().is_some_and(Vec::is_empty) {
            return Ok(0); // bound to no rows: nothing runs
        }
        let om = id.om.clone();
        Ok(self
            .state
            .write(async move { run_rows(&om, &prepared).await })
            .await?)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let id = self.identify(&request).await?;
        if query.transaction_id.is_some() {
            return Err(ServerError::bad_request("transactions are not supported").into());
        }
        let sql = crate::sql::number_question_marks(&query.query).map_err(ServerError::from)?;
        let is_query = crate::sql::is_single_query(&sql);
        let (dataset_schema, parameter_schema) = if is_query {
            let df = id.om.sql(&sql).await.map_err(ServerError::from)?;
            let types = df
                .logical_plan()
                .get_parameter_types()
                .map_err(ServerError::from)?;
            (
                flight_schema(df.schema().as_arrow()),
                parameter_schema(types),
            )
        } else {
            (Arc::new(Schema::empty()), Arc::new(Schema::empty()))
        };
        let prepared = Prepared {
            sql,
            query: is_query,
            params: None,
        };
        let handle = self.state.statements.insert(&id.key_id, prepared)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: ipc_schema(&dataset_schema)?,
            parameter_schema: ipc_schema(&parameter_schema)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let id = self.identify(&request).await?;
        let handle = handle_text(&query.prepared_statement_handle)?;
        self.state.statements.remove(&id.key_id, &handle);
        Ok(())
    }

    /// Flight SQL's CancelQuery (the FlightInfo the query was announced with).
    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let id = self.identify(&request).await?;
        let info = FlightInfo::decode(query.info)
            .map_err(|e| Status::invalid_argument(format!("not a FlightInfo: {e}")))?;
        if !self.cancel(&id, &info) {
            return Err(ServerError::not_found(
                "no such running query (finished, or not this key's)",
            )
            .into());
        }
        // CANCEL_RESULT_CANCELLED (arrow-flight does not re-export the enum)
        Ok(ActionCancelQueryResult { result: 1 })
    }

    /// Flight's own CancelFlightInfo (what newer clients send); anything
    /// else is an unknown action.
    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        if request.get_ref().r#type != "CancelFlightInfo" {
            return Err(Status::invalid_argument(format!(
                "unknown action '{}'",
                request.get_ref().r#type
            )));
        }
        let id = self.identify(&request).await?;
        let cancel = arrow_flight::CancelFlightInfoRequest::decode(request.get_ref().body.clone())
            .map_err(|e| Status::invalid_argument(format!("not a CancelFlightInfoRequest: {e}")))?;
        let info = cancel
            .info
            .ok_or_else(|| Status::invalid_argument("CancelFlightInfo without a FlightInfo"))?;
        let status = if self.cancel(&id, &info) {
            arrow_flight::CancelStatus::Cancelled
        } else {
            arrow_flight::CancelStatus::NotCancellable
        };
        let result = arrow_flight::CancelFlightInfoResult {
            status: status as i32,
        };
        let body = arrow_flight::Result {
            body: result.encode_to_vec().into(),
        };
        Ok(Response::new(Box::pin(futures::stream::iter(vec![Ok(
            body,
        )]))))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// `$1, $2, …` in numeric order (`$10` after `$9`), typed where DataFusion
/// could infer the type.
fn parameter_schema(types: std::collections::HashMap<String, Option<DataType>>) -> SchemaRef {
    let mut named: Vec<(u64, String, DataType)> = types
        .into_iter()
        .map(|(name, t)| {
            let index = name.trim_start_matches('$').parse().unwrap_or(u64::MAX);
            (index, name, t.unwrap_or(DataType::Null))
        })
        .collect();
    named.sort();
    Arc::new(Schema::new(
        named
            .into_iter()
            .map(|(_, name, t)| Field::new(name, t, true))
            .collect::<Vec<_>>(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_sort_by_number_not_text() {
        let types = (1..=11)
            .map(|i| (format!("${i}"), Some(DataType::Int64)))
            .collect();
        let schema = parameter_schema(types);
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names[1], "$2");
        assert_eq!(names[10], "$11");
    }

    #[test]
    fn dictionaries_are_announced_as_their_values() {
        let schema = Schema::new(vec![Field::new(
            "d",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            false,
        )]);
        assert_eq!(flight_schema(&schema).field(0).data_type(), &DataType::Utf8);
        assert!(!flight_schema(&schema).field(0).is_nullable());
    }
}
