//! One statement's DataFusion session: its own runtime (a memory pool of the per-query
//! limit, spilling into the region's spill directory, caches that live as long as the
//! statement), `s3://BUCKET` URLs resolved to [`BucketStore`]s bound to the statement's
//! [`Scope`], the caller's account catalog as the `public` schema, and `s3://` paths usable
//! as tables.

use std::sync::Arc;

use std::sync::Weak;

use datafusion::catalog::{
    CatalogProvider, DynamicFileCatalog, MemoryCatalogProvider, TableProvider, UrlTableFactory,
};
use datafusion::datasource::listing::{
    ListingTable, ListingTableConfig, ListingTableConfigExt, ListingTableUrl,
};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionState;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::object_store::ObjectStore;
use datafusion::prelude::{SessionConfig, SessionContext};
use parking_lot::RwLock;
use url::Url;

use crate::Limits;
use crate::catalog::{AccountSchema, TableDef};
use crate::scope::Scope;
use crate::store::BucketStore;

/// `s3://BUCKET` → that bucket, as the statement's caller.
#[derive(Debug)]
struct Buckets {
    scope: Arc<Scope>,
}

impl ObjectStoreRegistry for Buckets {
    fn register_store(
        &self,
        _url: &Url,
        _store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        None
    }

    fn get_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        if url.scheme() != "s3" {
            return Err(DataFusionError::Plan(format!(
                "{url}: only s3://BUCKET/… locations of this region can be read or written"
            )));
        }
        let bucket = url.host_str().unwrap_or_default();
        if bucket.is_empty() {
            return Err(DataFusionError::Plan(format!("{url} names no bucket")));
        }
        Ok(Arc::new(BucketStore {
            scope: self.scope.clone(),
            bucket: bucket.to_owned(),
        }))
    }
}

/// The session a statement of `scope`'s caller runs in.
pub(crate) fn build(
    scope: Arc<Scope>,
    limits: &Limits,
    tables: Vec<TableDef>,
) -> DfResult<SessionContext> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(limits.memory_per_query)))
        .with_disk_manager_builder(
            DiskManagerBuilder::default()
                .with_mode(DiskManagerMode::Directories(vec![limits.spill_dir.clone()])),
        )
        .with_max_temp_directory_size(limits.spill_per_query)
        .with_object_store_registry(Arc::new(Buckets { scope }))
        .build_arc()?;
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema("datafusion", "public")
        .with_target_partitions(limits.partitions);
    let opts = config.options_mut();
    opts.sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
    // Parquet footers: one read of the last 512 KiB instead of two round trips.
    opts.execution.parquet.metadata_size_hint = Some(512 * 1024);
    opts.execution.parquet.pushdown_filters = true;
    // Files a statement writes carry Parquet's own types only: an embedded Arrow schema
    // would make a later file of the same table (string vs string view) unmergeable.
    opts.execution.parquet.skip_arrow_metadata = true;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let paths = Arc::new(S3Paths {
        state: std::sync::OnceLock::new(),
    });
    let catalogs = DynamicFileCatalog::new(
        Arc::clone(ctx.state().catalog_list()),
        paths.clone() as Arc<dyn UrlTableFactory>,
    );
    let ctx: SessionContext = SessionStateBuilder::new_from_existing(ctx.state())
        .with_catalog_list(Arc::new(catalogs))
        .build()
        .into();
    let _ = paths.state.set(ctx.state_weak_ref());
    let schema = Arc::new(AccountSchema {
        tables,
        state: ctx.state_weak_ref(),
    });
    let catalog = MemoryCatalogProvider::new();
    catalog.register_schema("public", schema)?;
    ctx.register_catalog("datafusion", Arc::new(catalog));
    Ok(ctx)
}

/// `FROM 's3://bucket/path'`: a listing table over the path, its format from the file
/// extension and its schema inferred. Unlike DataFusion's own URL tables, a path that cannot
/// be opened — not listable, not readable, nothing there — fails with its reason instead of
/// becoming "table not found".
#[derive(Debug)]
struct S3Paths {
    state: std::sync::OnceLock<Weak<RwLock<SessionState>>>,
}

#[async_trait::async_trait]
impl UrlTableFactory for S3Paths {
    async fn try_new(&self, url: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if !url.contains("://") && !url.starts_with('/') {
            return Ok(None);
        }
        let table_url = table_url(url)?;
        let state = self
            .state
            .get()
            .and_then(Weak::upgrade)
            .map(|s| s.read().clone())
            .ok_or_else(|| DataFusionError::Internal("the session is gone".into()))?;
        // Checked before anything is listed: only the region's buckets are reachable.
        state.runtime_env().object_store(table_url.object_store())?;
        let cfg = ListingTableConfig::new(table_url)
            .infer_options(&state)
            .await?
            .infer_partitions_from_path(&state)
            .await?
            .infer_schema(&state)
            .await?;
        Ok(Some(Arc::new(ListingTable::try_new(cfg)?)))
    }
}

/// A path as a listing URL; `*`, `?` and `[` in it make the segments from the first one
/// holding them a glob over the objects below the part before (DataFusion's own parsing
/// does that only for local paths).
fn table_url(path: &str) -> DfResult<ListingTableUrl> {
    let Some(at) = path.find(['*', '?', '[']) else {
        return ListingTableUrl::parse(path);
    };
    let split = path[..at].rfind('/').map_or(0, |i| i + 1);
    let (base, glob) = path.split_at(split);
    if !base.contains("://") {
        return ListingTableUrl::parse(path);
    }
    let url = Url::parse(base).map_err(|e| DataFusionError::Plan(format!("{path}: {e}")))?;
    let pattern = glob::Pattern::new(glob)
        .map_err(|e| DataFusionError::Plan(format!("{path}: not a glob: {e}")))?;
    ListingTableUrl::try_new(url, Some(pattern))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_in_s3_paths_filter_below_their_prefix() {
        let u = table_url("s3://lake/json/*.json").unwrap();
        assert_eq!(u.prefix().as_ref(), "json");
        let p = |s: &str| datafusion::object_store::path::Path::from(s);
        assert!(u.contains(&p("json/orders.json"), false));
        assert!(!u.contains(&p("json/orders.csv"), false));
        let plain = table_url("s3://lake/json/").unwrap();
        assert!(plain.contains(&p("json/a/b.json"), false));
    }
}
