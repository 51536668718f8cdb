//! Running one statement: admission per account, the session, the catalog statements the
//! engine answers itself (`CREATE EXTERNAL TABLE`, `DROP TABLE`, `CREATE TABLE … AS
//! SELECT`), everything else planned and run by DataFusion under the time limit, results
//! cut at the inline limits, staged writes published on success and dropped otherwise, and
//! the history row.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{CreateExternalTable, DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{
    CreateTableOptions, Expr, ObjectType, SqlOption, Statement as SqlStatement, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use feiyun_iam::Caller;
use futures::StreamExt;

use crate::catalog::{self, TableDef};
use crate::history::{self, HistoryRow};
use crate::region::Region;
use crate::scope::Scope;
use crate::{Access, FooterCache, Limits, SqlError};

/// Bytes of a table's definition (its CREATE EXTERNAL TABLE statement).
const MAX_DEFINITION: usize = 16 * 1024;

/// Objects named in a statement's audit record.
const AUDITED_OBJECTS: usize = 100;

/// A statement to run and who runs it.
pub struct Statement<'a> {
    pub caller: Arc<Caller>,
    pub text: &'a str,
    /// Where it came from (`http`, `pg`, `job:NAME`), kept in the history.
    pub source: &'a str,
    pub origin: Option<crate::Origin>,
}

/// What a statement returned and read.
#[derive(Debug)]
pub struct Outcome {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: u64,
    /// The result was longer than the inline limits and was cut.
    pub truncated: bool,
    /// The PostgreSQL command tag (`SELECT 3`, `COPY 10`, `CREATE TABLE`).
    pub tag: String,
}

/// What a statement read, whatever its end.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub objects_read: u64,
    pub bytes_read: u64,
    /// The first objects read (for the audit record).
    pub objects: Vec<String>,
    pub elapsed: Duration,
}

pub struct Sql {
    region: Arc<dyn Region>,
    access: Arc<dyn Access>,
    limits: Limits,
    footers: Arc<FooterCache>,
    running: Mutex<HashMap<String, usize>>,
    /// Statements run here, not on the request's runtime: planning recurses deeply (its
    /// threads get 16 MiB stacks), execution is CPU-bound, and a panic in a reader ends the
    /// statement, not the connection.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Sql {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Aborts the statement's task when the request that waits for it goes away.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A statement's place among its account's running ones.
struct Admitted<'a> {
    sql: &'a Sql,
    account: String,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let mut g = crate::scope::lock(&self.sql.running);
        if let Some(n) = g.get_mut(&self.account) {
            *n -= 1;
            if *n == 0 {
                g.remove(&self.account);
            }
        }
    }
}

impl Sql {
    pub fn new(
        region: Arc<dyn Region>,
        access: Arc<dyn Access>,
        limits: Limits,
    ) -> Result<Self, SqlError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(limits.partitions.max(1))
            .thread_name("sql")
            .thread_stack_size(16 * 1024 * 1024)
            .enable_all()
            .build()
            .map_err(|e| SqlError::Internal(format!("cannot start the SQL runtime: {e}")))?;
        Ok(Self {
            footers: Arc::new(FooterCache::new(limits.footer_cache)),
            region,
            access,
            limits,
            running: Mutex::default(),
            runtime: Some(runtime),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn footers(&self) -> &FooterCache {
        &self.footers
    }

    pub fn region(&self) -> &Arc<dyn Region> {
        &self.region
    }

    fn admit(&self, account: &str) -> Result<Admitted<'_>, SqlError> {
        let mut g = crate::scope::lock(&self.running);
        let total: usize = g.values().sum();
        if total >= self.limits.total {
            return Err(SqlError::TooMany(format!(
                "the region already runs {total} statements; wait for one to finish"
            )));
        }
        let n = g.entry(account.to_owned()).or_default();
        if *n >= self.limits.per_account {
            return Err(SqlError::TooMany(format!(
                "the account already runs {} statements; wait for one to finish",
                self.limits.per_account
            )));
        }
        *n += 1;
        Ok(Admitted {
            sql: self,
            account: account.to_owned(),
        })
    }

    /// Runs one statement and records it in the account's history. Dropping the future
    /// cancels the statement and drops what it staged.
    pub async fn execute(
        self: &Arc<Self>,
        st: Statement<'_>,
    ) -> (Result<Outcome, SqlError>, Stats) {
        let started = Instant::now();
        let start_ms = history::now_ms();
        let account = st.caller.principal.account.clone();
        let scope = Arc::new(Scope::new(
            st.caller.clone(),
            st.origin,
            self.access.clone(),
            self.region.clone(),
            self.footers.clone(),
            self.limits.max_objects,
        ));
        let mut guard = HistoryGuard {
            region: self.region.clone(),
            row: Some(HistoryRow::started(&st, start_ms)),
            scope: scope.clone(),
            started,
        };
        let result = match self.admit(&account) {
            Err(e) => Err(e),
            Ok(_admitted) => self.spawn(&scope, st.text.to_owned()).await,
        };
        let stats = stats_of(&scope, started);
        guard.finish(&result, &stats).await;
        (result, stats)
    }

    /// Runs the statement on the SQL runtime under the time limit, publishing what it
    /// staged when it succeeds and dropping it otherwise.
    async fn spawn(
        self: &Arc<Self>,
        scope: &Arc<Scope>,
        text: String,
    ) -> Result<Outcome, SqlError> {
        let Some(rt) = &self.runtime else {
            return Err(SqlError::Internal("the SQL runtime is shut down".into()));
        };
        let (me, inner) = (self.clone(), scope.clone());
        let task = rt.spawn(async move {
            let timeout = me.limits.timeout;
            let result = match tokio::time::timeout(timeout, me.run(&inner, &text)).await {
                Ok(r) => r,
                Err(_) => Err(SqlError::Timeout(timeout.as_secs())),
            };
            match result {
                Ok(out) if inner.has_staged() => match publish(&inner).await {
                    Ok(()) => Ok(out),
                    Err(e) => Err(e),
                },
                Ok(out) => Ok(out),
                Err(e) => {
                    inner.discard().await;
                    Err(e)
                }
            }
        });
        let mut task = AbortOnDrop(task);
        match (&mut task.0).await {
            Ok(r) => r.map_err(|e| scope.name_objects(e)),
            Err(e) if e.is_panic() => {
                scope.discard().await;
                let what = e
                    .into_panic()
                    .downcast::<String>()
                    .map(|s| *s)
                    .or_else(|p| p.downcast::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|_| "a panic".into());
                tracing::error!(panic = %what, "a SQL statement panicked");
                Err(scope.name_objects(SqlError::Data(format!(
                    "the data could not be read ({what})"
                ))))
            }
            Err(_) => Err(SqlError::Cancelled),
        }
    }

    async fn run(&self, scope: &Arc<Scope>, text: &str) -> Result<Outcome, SqlError> {
        let mut stmts =
            DFParser::parse_sql_with_dialect(text, &PostgreSqlDialect {}).map_err(df_error)?;
        let stmt = match (stmts.pop_front(), stmts.is_empty()) {
            (Some(s), true) => s,
            (None, _) => return Err(SqlError::Invalid("the statement is empty".into())),
            (Some(_), false) => {
                return Err(SqlError::Invalid("send one statement at a time".into()));
            }
        };
        let tables = catalog::load(self.region.as_ref(), scope.account()).await?;
        let ctx =
            crate::session::build(scope.clone(), &self.limits, tables.clone()).map_err(df_error)?;
        match stmt {
            DfStatement::CreateExternalTable(c) => {
                let text = text.trim().trim_end_matches(';');
                self.create_table(scope, &ctx, &tables, c, text).await
            }
            DfStatement::Statement(s) => match *s {
                SqlStatement::Drop {
                    object_type: ObjectType::Table,
                    if_exists,
                    names,
                    ..
                } => self.drop_tables(scope, &tables, names, if_exists).await,
                SqlStatement::CreateTable(ct) if ct.query.is_some() => {
                    self.create_table_as(scope, &ctx, &tables, ct).await
                }
                other => {
                    self.query(&ctx, DfStatement::Statement(Box::new(other)))
                        .await
                }
            },
            other => self.query(&ctx, other).await,
        }
    }

    /// Plans and runs a statement DataFusion answers, collecting its result up to the
    /// inline limits.
    async fn query(&self, ctx: &SessionContext, stmt: DfStatement) -> Result<Outcome, SqlError> {
        let tag = command_tag(&stmt);
        let plan = ctx
            .state()
            .statement_to_plan(stmt)
            .await
            .map_err(df_error)?;
        if let LogicalPlan::Ddl(d) = &plan {
            return Err(SqlError::Invalid(format!(
                "{} is not supported: tables are made with CREATE EXTERNAL TABLE … LOCATION 's3://…' or CREATE TABLE … WITH (location = 's3://…') AS SELECT",
                d.name()
            )));
        }
        // No SET, PREPARE or transactions: a statement's session is its own, and a SET of
        // the runtime's settings (its spill directory) would reach the host's file system.
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(df_error)?;
        let df = ctx.execute_logical_plan(plan).await.map_err(df_error)?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let mut stream = df.execute_stream().await.map_err(df_error)?;
        let (mut batches, mut rows, mut bytes, mut truncated) = (Vec::new(), 0u64, 0usize, false);
        while let Some(b) = stream.next().await {
            let b = b.map_err(df_error)?;
            let room = self.limits.max_rows.saturating_sub(rows as usize);
            let size = b.get_array_memory_size();
            if b.num_rows() > room || bytes + size > self.limits.max_bytes {
                let keep = room.min(b.num_rows());
                if keep > 0 && bytes + size <= self.limits.max_bytes {
                    batches.push(b.slice(0, keep));
                    rows += keep as u64;
                }
                truncated = true;
                break;
            }
            bytes += size;
            rows += b.num_rows() as u64;
            batches.push(b);
        }
        let tag = match tag.as_str() {
            "SELECT" => format!("SELECT {rows}"),
            "INSERT" => format!("INSERT 0 {}", count_of(&batches)),
            "COPY" => format!("COPY {}", count_of(&batches)),
            t => t.to_owned(),
        };
        Ok(Outcome {
            schema,
            batches,
            rows,
            truncated,
            tag,
        })
    }

    /// `CREATE EXTERNAL TABLE`: opened once as the caller (so a location it cannot list
    /// or read, or files of another format, fail now), then kept in the catalog.
    async fn create_table(
        &self,
        scope: &Arc<Scope>,
        ctx: &SessionContext,
        tables: &[TableDef],
        c: CreateExternalTable,
        text: &str,
    ) -> Result<Outcome, SqlError> {
        let name = table_name(&c.name.to_string())?;
        scope.table_action("sql:CreateTable", &name)?;
        if text.len() > MAX_DEFINITION {
            return Err(SqlError::Invalid(format!(
                "a table definition is at most {MAX_DEFINITION} bytes"
            )));
        }
        room_for_table(tables, &name)?;
        for l in &c.locations {
            if !l.starts_with("s3://") {
                return Err(SqlError::Invalid(format!(
                    "{l}: a table's location is s3://BUCKET/PREFIX/ in this region"
                )));
            }
        }
        if c.temporary {
            return Err(SqlError::Invalid(
                "temporary tables are not supported".into(),
            ));
        }
        let (replace, if_not_exists) = (c.or_replace, c.if_not_exists);
        // The statement as written: DataFusion's own rendering of it drops the columns,
        // partitions and options.
        let sql = text.to_owned();
        catalog::provider(&ctx.state(), &sql)
            .await
            .map_err(df_error)?;
        let def = TableDef {
            name: name.clone(),
            sql,
            owner: scope.caller.principal.arn.clone(),
            created_ms: history::now_ms(),
        };
        if !catalog::store(self.region.as_ref(), scope.account(), &def, replace).await?
            && !if_not_exists
        {
            return Err(SqlError::AlreadyExists(format!(
                "the table {name} already exists"
            )));
        }
        Ok(tagged("CREATE TABLE"))
    }

    async fn drop_tables(
        &self,
        scope: &Arc<Scope>,
        tables: &[TableDef],
        names: Vec<datafusion::sql::sqlparser::ast::ObjectName>,
        if_exists: bool,
    ) -> Result<Outcome, SqlError> {
        for n in names {
            let name = table_name(&n.to_string())?;
            scope.table_action("sql:DropTable", &name)?;
            let known = tables.iter().any(|t| t.name == name);
            let dropped =
                known && catalog::drop_table(self.region.as_ref(), scope.account(), &name).await?;
            if !dropped && !if_exists {
                return Err(SqlError::NotFound(format!(
                    "the table {name} does not exist"
                )));
            }
        }
        Ok(tagged("DROP TABLE"))
    }

    /// `CREATE TABLE name WITH (location = 's3://…/', format = 'parquet') AS SELECT …`:
    /// the result is written under the location (which must hold nothing yet), then the
    /// table is kept in the catalog as an external table over it.
    async fn create_table_as(
        &self,
        scope: &Arc<Scope>,
        ctx: &SessionContext,
        tables: &[TableDef],
        ct: datafusion::sql::sqlparser::ast::CreateTable,
    ) -> Result<Outcome, SqlError> {
        let name = table_name(&ct.name.to_string())?;
        scope.table_action("sql:CreateTable", &name)?;
        room_for_table(tables, &name)?;
        let opts = match &ct.table_options {
            CreateTableOptions::With(o) | CreateTableOptions::Options(o) => o.clone(),
            _ => vec![],
        };
        let mut location = None;
        let mut format = "parquet".to_owned();
        for o in &opts {
            let SqlOption::KeyValue { key, value } = o else {
                continue;
            };
            let v = match value {
                Expr::Value(v) => match &v.value {
                    Value::SingleQuotedString(s) => s.clone(),
                    other => other.to_string(),
                },
                other => other.to_string(),
            };
            match key.value.to_ascii_lowercase().as_str() {
                "location" | "external_location" => location = Some(v),
                "format" => format = v.to_ascii_lowercase(),
                k => {
                    return Err(SqlError::Invalid(format!(
                        "unknown table option {k}: CREATE TABLE … AS SELECT takes location and format"
                    )));
                }
            }
        }
        let Some(mut location) = location else {
            return Err(SqlError::Invalid(
                "CREATE TABLE … AS SELECT needs WITH (location = 's3://BUCKET/PREFIX/')".into(),
            ));
        };
        if !location.starts_with("s3://") || location.contains(['\'', '\\']) {
            return Err(SqlError::Invalid(format!(
                "{location}: a table's location is s3://BUCKET/PREFIX/ in this region, without quotes"
            )));
        }
        if !location.ends_with('/') {
            location.push('/');
        }
        let stored_as = match format.as_str() {
            "parquet" => "PARQUET",
            "csv" => "CSV",
            "json" | "ndjson" => "JSON",
            f => {
                return Err(SqlError::Invalid(format!(
                    "format {f}: CREATE TABLE … AS SELECT writes parquet, csv or json"
                )));
            }
        };
        if tables.iter().any(|t| t.name == name) {
            if ct.if_not_exists {
                return Ok(tagged("CREATE TABLE"));
            }
            if !ct.or_replace {
                return Err(SqlError::AlreadyExists(format!(
                    "the table {name} already exists"
                )));
            }
        }
        self.require_empty(scope, &location).await?;
        let Some(query) = &ct.query else {
            return Err(SqlError::Invalid("CREATE TABLE needs AS SELECT".into()));
        };
        let copy = format!("COPY ({query}) TO '{location}' STORED AS {stored_as}");
        let copy_stmt = DFParser::parse_sql_with_dialect(&copy, &PostgreSqlDialect {})
            .map_err(df_error)?
            .pop_front()
            .ok_or_else(|| SqlError::Internal("empty COPY".into()))?;
        let out = self.query(ctx, copy_stmt).await?;
        let rows = count_of(&out.batches);
        let header = if stored_as == "CSV" {
            " OPTIONS ('format.has_header' 'true')"
        } else {
            ""
        };
        // Publish before the catalog row: a table never names data that is not there.
        publish(scope).await?;
        let def_sql = format!(
            "CREATE EXTERNAL TABLE {name} STORED AS {stored_as} LOCATION '{location}'{header}"
        );
        let def = TableDef {
            name: name.clone(),
            sql: def_sql,
            owner: scope.caller.principal.arn.clone(),
            created_ms: history::now_ms(),
        };
        if !catalog::store(self.region.as_ref(), scope.account(), &def, ct.or_replace).await? {
            return Err(SqlError::AlreadyExists(format!(
                "the table {name} was created by another statement meanwhile; the result is at {location}"
            )));
        }
        Ok(Outcome {
            tag: format!("SELECT {rows}"),
            ..tagged("CREATE TABLE")
        })
    }

    /// Fails unless nothing is stored under `location` (a CTAS never mixes with old files).
    async fn require_empty(&self, scope: &Arc<Scope>, location: &str) -> Result<(), SqlError> {
        let rest = &location["s3://".len()..];
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        scope
            .may_list(bucket, prefix)
            .await
            .map_err(SqlError::AccessDenied)?;
        let page = self
            .region
            .list(bucket, prefix, None, 1, false)
            .await
            .map_err(|e| SqlError::NotFound(e.to_string()))?;
        if !page.objects.is_empty() {
            return Err(SqlError::AlreadyExists(format!(
                "{location} already holds objects; CREATE TABLE … AS SELECT writes to an empty location"
            )));
        }
        Ok(())
    }
}

/// Publishes what the statement staged in a task of its own: a statement cancelled while
/// publishing still publishes all of it, never part.
async fn publish(scope: &Arc<Scope>) -> Result<(), SqlError> {
    let scope = scope.clone();
    match tokio::spawn(async move { scope.publish().await }).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(SqlError::Internal(e)),
        Err(e) => Err(SqlError::Internal(format!("publishing failed: {e}"))),
    }
}

/// Fails when the account holds `MAX_TABLES` tables and `name` is not one of them.
fn room_for_table(tables: &[TableDef], name: &str) -> Result<(), SqlError> {
    if tables.len() >= catalog::MAX_TABLES && !tables.iter().any(|t| t.name == name) {
        return Err(SqlError::Invalid(format!(
            "the account has {} tables, the most it may define",
            catalog::MAX_TABLES
        )));
    }
    Ok(())
}

fn tagged(tag: &str) -> Outcome {
    Outcome {
        schema: Arc::new(Schema::empty()),
        batches: vec![],
        rows: 0,
        truncated: false,
        tag: tag.to_owned(),
    }
}

/// The count a COPY or INSERT answers with (one row, one UInt64 column).
fn count_of(batches: &[RecordBatch]) -> u64 {
    batches
        .first()
        .filter(|b| b.num_columns() == 1 && b.num_rows() == 1)
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                .map(|a| a.value(0))
        })
        .unwrap_or(0)
}

fn command_tag(stmt: &DfStatement) -> String {
    match stmt {
        DfStatement::CopyTo(_) => "COPY".into(),
        DfStatement::Explain(_) => "SELECT".into(),
        DfStatement::Statement(s) => match s.as_ref() {
            SqlStatement::Insert(_) => "INSERT".into(),
            SqlStatement::Query(_) | SqlStatement::ShowTables { .. } => "SELECT".into(),
            SqlStatement::ShowColumns { .. } | SqlStatement::ExplainTable { .. } => "SELECT".into(),
            SqlStatement::Set(_) => "SET".into(),
            _ => "SELECT".into(),
        },
        _ => "SELECT".into(),
    }
}

/// The catalog name of a table: one part (or `public.NAME`), folded as DataFusion folds
/// unquoted names.
fn table_name(raw: &str) -> Result<String, SqlError> {
    let raw = raw.strip_prefix("public.").unwrap_or(raw);
    let name = if raw.starts_with('"') && raw.ends_with('"') && raw.len() >= 2 {
        raw[1..raw.len() - 1].to_owned()
    } else {
        raw.to_ascii_lowercase()
    };
    catalog::valid_name(&name)?;
    Ok(name)
}

fn stats_of(scope: &Scope, started: Instant) -> Stats {
    let (objects_read, bytes_read) = scope.read_stats();
    Stats {
        objects_read,
        bytes_read,
        objects: scope.objects_read(AUDITED_OBJECTS),
        elapsed: started.elapsed(),
    }
}

/// Writes the history row when the statement ends — also when its future is dropped
/// (a cancelled statement), from a task of its own.
struct HistoryGuard {
    region: Arc<dyn Region>,
    row: Option<HistoryRow>,
    scope: Arc<Scope>,
    started: Instant,
}

impl HistoryGuard {
    async fn finish(&mut self, result: &Result<Outcome, SqlError>, stats: &Stats) {
        if let Some(mut row) = self.row.take() {
            row.end(result.as_ref().map(|o| o.rows), stats);
            history::record(self.region.as_ref(), row).await;
        }
    }
}

impl Drop for HistoryGuard {
    fn drop(&mut self) {
        let Some(mut row) = self.row.take() else {
            return;
        };
        let stats = stats_of(&self.scope, self.started);
        row.end(Err(&SqlError::Cancelled), &stats);
        let region = self.region.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { history::record(region.as_ref(), row).await });
        }
    }
}

/// Maps DataFusion's errors onto ours, keeping their text (a parse error names its line
/// and column).
pub(crate) fn df_error(e: DataFusionError) -> SqlError {
    match map_df_error(e) {
        // The memory pool's refusal, wrapped by an operator that shared or re-raised it.
        SqlError::Data(m) | SqlError::Internal(m) if m.contains("Resources exhausted") => {
            SqlError::ResourcesExhausted(format!(
                "the statement needs more memory than its limit allows: {m}"
            ))
        }
        other => other,
    }
}

fn map_df_error(e: DataFusionError) -> SqlError {
    use datafusion::object_store::Error as OsError;
    match e {
        DataFusionError::Context(c, inner) => match map_df_error(*inner) {
            SqlError::Internal(m) => SqlError::Internal(format!("{c}: {m}")),
            other => other,
        },
        DataFusionError::Diagnostic(_, inner) => map_df_error(*inner),
        DataFusionError::Shared(inner) => map_df_error(DataFusionError::External(Box::new(
            SharedText(inner.to_string()),
        ))),
        DataFusionError::SQL(e, _) => SqlError::Invalid(format!("syntax error: {e}")),
        DataFusionError::Plan(m) => SqlError::Invalid(m),
        DataFusionError::SchemaError(e, _) => SqlError::Invalid(e.to_string()),
        DataFusionError::NotImplemented(m) => SqlError::Invalid(format!("not supported: {m}")),
        DataFusionError::Configuration(m) => SqlError::Invalid(m),
        DataFusionError::ResourcesExhausted(m) => SqlError::ResourcesExhausted(format!(
            "the statement needs more memory than its limit allows: {m}"
        )),
        DataFusionError::ObjectStore(e) => match *e {
            OsError::PermissionDenied { source, .. } => {
                SqlError::AccessDenied(format!("access denied: {source}"))
            }
            OsError::NotFound { path, .. } => SqlError::NotFound(format!("{path} does not exist")),
            other => SqlError::Data(other.to_string()),
        },
        DataFusionError::ParquetError(e) => {
            SqlError::Data(format!("a Parquet object cannot be read: {e}"))
        }
        DataFusionError::ArrowError(e, _) => SqlError::Data(e.to_string()),
        DataFusionError::Execution(m) => SqlError::Data(m),
        DataFusionError::External(e) => {
            if let Some(os) = e.downcast_ref::<datafusion::object_store::Error>() {
                return match os {
                    OsError::PermissionDenied { source, .. } => {
                        SqlError::AccessDenied(format!("access denied: {source}"))
                    }
                    OsError::NotFound { path, .. } => {
                        SqlError::NotFound(format!("{path} does not exist"))
                    }
                    other => SqlError::Data(other.to_string()),
                };
            }
            SqlError::Data(e.to_string())
        }
        other => SqlError::Internal(other.to_string()),
    }
}

#[derive(Debug)]
struct SharedText(String);

impl std::fmt::Display for SharedText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SharedText {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_fold_like_datafusion_and_refuse_paths() {
        assert_eq!(table_name("Sales").unwrap(), "sales");
        assert_eq!(table_name("public.sales").unwrap(), "sales");
        assert_eq!(table_name("\"Sales\"").unwrap(), "Sales");
        assert!(table_name("a.b.c").is_err());
        assert!(table_name("9lives").is_err());
        assert!(table_name("../x").is_err());
    }

    #[test]
    fn a_memory_refusal_is_resources_exhausted_however_it_is_wrapped() {
        let e = DataFusionError::Context(
            "while sorting".into(),
            Box::new(DataFusionError::ResourcesExhausted("pool full".into())),
        );
        assert!(matches!(df_error(e), SqlError::ResourcesExhausted(_)));
        let e = DataFusionError::External(Box::new(SharedText(
            "Resources exhausted: Failed to allocate".into(),
        )));
        assert!(matches!(df_error(e), SqlError::ResourcesExhausted(_)));
    }

    #[test]
    fn history_text_is_cut_on_a_character_boundary() {
        let t = "é".repeat(10);
        assert_eq!(history::truncate(&t, 3), "ééé…");
        assert_eq!(history::truncate("abc", 3), "abc");
    }
}
