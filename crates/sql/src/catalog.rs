//! The per-account catalog of external tables, kept in the `analytics` metadata table as
//! `catalog/ACCOUNT/NAME` → the table's `CREATE EXTERNAL TABLE` statement (normalized) and
//! who created it. A statement sees its account's tables as the `public` schema; a table's
//! provider is built from its statement when a query names it, so its files are listed
//! (and its schema inferred) as the caller, at that moment.

use std::sync::{Arc, Weak};

use parking_lot::RwLock;

use async_trait::async_trait;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider, SchemaProvider, TableProvider,
};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use serde::{Deserialize, Serialize};

use crate::SqlError;
use crate::region::Region;

/// Tables one account may define.
pub const MAX_TABLES: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableDef {
    pub name: String,
    /// The normalized `CREATE EXTERNAL TABLE` statement.
    pub sql: String,
    /// Who created it (an ARN).
    pub owner: String,
    pub created_ms: i64,
}

fn prefix(account: &str) -> Vec<u8> {
    format!("catalog/{account}/").into_bytes()
}

fn row_key(account: &str, name: &str) -> Vec<u8> {
    format!("catalog/{account}/{name}").into_bytes()
}

/// A table name as the catalog keeps it: DataFusion folds unquoted names to lower case;
/// names are 1–128 characters of letters, digits and `_`.
pub fn valid_name(name: &str) -> Result<(), SqlError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(SqlError::Invalid(format!(
            "{name:?} is not a valid table name: use 1 to 128 letters, digits and underscores, not starting with a digit"
        )))
    }
}

pub async fn load(region: &dyn Region, account: &str) -> Result<Vec<TableDef>, SqlError> {
    let rows = region
        .rows(&prefix(account), None, MAX_TABLES)
        .await
        .map_err(|e| SqlError::Internal(e.to_string()))?;
    let mut out = Vec::with_capacity(rows.len());
    for (_, v) in rows {
        match serde_json::from_slice::<TableDef>(&v) {
            Ok(t) => out.push(t),
            Err(e) => tracing::error!(error = %e, "a catalog row cannot be read"),
        }
    }
    Ok(out)
}

/// Stores a table definition; `replace` overwrites one of the same name.
pub async fn store(
    region: &dyn Region,
    account: &str,
    def: &TableDef,
    replace: bool,
) -> Result<bool, SqlError> {
    let key = row_key(account, &def.name);
    let value = serde_json::to_vec(def).map_err(|e| SqlError::Internal(e.to_string()))?;
    let expect = if replace {
        vec![]
    } else {
        vec![(key.clone(), None)]
    };
    region
        .apply(expect, vec![(key, Some(value))])
        .await
        .map_err(|e| SqlError::Internal(e.to_string()))
}

/// Removes a table definition; `false` when there was none.
pub async fn drop_table(region: &dyn Region, account: &str, name: &str) -> Result<bool, SqlError> {
    let key = row_key(account, name);
    let Some(old) = region
        .row(&key)
        .await
        .map_err(|e| SqlError::Internal(e.to_string()))?
    else {
        return Ok(false);
    };
    region
        .apply(vec![(key.clone(), Some(old))], vec![(key, None)])
        .await
        .map_err(|e| SqlError::Internal(e.to_string()))
}

/// Builds a table's provider from its statement, in `state`'s runtime (the caller's
/// object stores and limits).
pub async fn provider(state: &SessionState, sql: &str) -> DfResult<Arc<dyn TableProvider>> {
    let mut stmts = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {})?;
    let Some(stmt @ Statement::CreateExternalTable(_)) = stmts.pop_front() else {
        return Err(DataFusionError::Plan(
            "a catalog entry is not a CREATE EXTERNAL TABLE".into(),
        ));
    };
    // Planned against an empty catalog: planning a CREATE looks its name up, and in the
    // account's catalog that lookup would open this very table again.
    let schema = MemoryCatalogProvider::new();
    schema.register_schema("public", Arc::new(MemorySchemaProvider::new()))?;
    let catalogs = MemoryCatalogProviderList::new();
    catalogs.register_catalog("datafusion".into(), Arc::new(schema));
    let planning = SessionStateBuilder::new_from_existing(state.clone())
        .with_catalog_list(Arc::new(catalogs))
        .build();
    let plan = planning.statement_to_plan(stmt).await?;
    let LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)) = plan else {
        return Err(DataFusionError::Plan(
            "a catalog entry is not a CREATE EXTERNAL TABLE".into(),
        ));
    };
    let factory = state
        .table_factories()
        .get(&cmd.file_type.to_ascii_uppercase())
        .ok_or_else(|| DataFusionError::Plan(format!("unsupported file type {}", cmd.file_type)))?;
    factory.create(state, &cmd).await
}

/// The account's tables as a schema of one statement's session.
pub struct AccountSchema {
    pub(crate) tables: Vec<TableDef>,
    pub(crate) state: Weak<RwLock<SessionState>>,
}

impl std::fmt::Debug for AccountSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountSchema")
            .field("tables", &self.tables.len())
            .finish()
    }
}

#[async_trait]
impl SchemaProvider for AccountSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.name.clone()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(def) = self.tables.iter().find(|t| t.name == name) else {
            return Ok(None);
        };
        let state = match self.state.upgrade() {
            Some(s) => s.read().clone(),
            None => return Ok(None),
        };
        let p = provider(&state, &def.sql).await.map_err(|e| {
            DataFusionError::Plan(format!("the table {name} cannot be opened: {e}"))
        })?;
        Ok(Some(p))
    }

    fn register_table(
        &self,
        name: String,
        _table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Err(DataFusionError::Plan(format!(
            "{name}: tables are made with CREATE EXTERNAL TABLE … LOCATION 's3://…' or CREATE TABLE … WITH (location = 's3://…') AS SELECT"
        )))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.iter().any(|t| t.name == name)
    }
}
