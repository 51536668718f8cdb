//! HTTP routes: which function a host name and path belong to, and which names a route may take
//! (only under the configured functions domains, never the region's own).

use super::*;

impl<M: MetaStore> Functions<M> {
    /// The region's own host names (its S3 domains), which routes may not take (set once).
    pub fn set_own_hosts(&self, hosts: Vec<String>) {
        let _ = self
            .own_hosts
            .set(hosts.iter().map(|h| h.to_ascii_lowercase()).collect());
    }

    /// The domains function routes may use (`fc_domains`; set once).
    pub fn set_route_domains(&self, domains: Vec<String>) {
        let _ = self
            .route_domains
            .set(domains.iter().map(|d| d.to_ascii_lowercase()).collect());
    }

    /// Whether `host` is a functions domain or under one.
    pub(crate) fn in_route_domain(&self, host: &str) -> bool {
        self.route_domains
            .get()
            .is_some_and(|ds| ds.iter().any(|d| same_or_under(host, d)))
    }

    /// Whether a route may not take `host`: it is one of the region's own names or under one.
    pub(crate) fn is_own_host(&self, host: &str) -> bool {
        self.own_hosts
            .get()
            .is_some_and(|own| own.iter().any(|d| same_or_under(host, d)))
    }

    /// The function (and qualifier) an HTTP route gives a request for `host` (a `Host`
    /// header, port allowed) and `path`, if any.
    pub fn route(&self, host: &str, path: &str) -> Option<(String, Option<String>)> {
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let mut table = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if table.generation != generation
            && let Some(fresh) = self.build_routes(generation)
        {
            table = Arc::new(fresh);
            *self.routes.write().unwrap_or_else(|p| p.into_inner()) = table.clone();
        }
        if table.by_host.is_empty() {
            return None;
        }
        let name = match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        table
            .by_host
            .get(&name)?
            .iter()
            .find(|(prefix, _, _)| records::under(prefix, path))
            .map(|(_, f, q)| (f.clone(), q.clone()))
    }

    /// The route table from the stored records; `None` (keep the old one, try again on the
    /// next request) when they cannot be read.
    pub(super) fn build_routes(&self, generation: u64) -> Option<Routes> {
        let mut by_host: HashMap<String, Vec<(String, String, Option<String>)>> = HashMap::new();
        let all = self
            .list()
            .inspect_err(|e| tracing::error!(error = %e, "cannot read the functions' routes"))
            .ok()?;
        for f in all {
            for t in &f.triggers {
                if let Source::Http { host, path } = &t.source {
                    // A route stored before `fc_domains` existed, or outside the domains
                    // now configured, takes no host.
                    if !self.in_route_domain(host) || self.is_own_host(host) {
                        tracing::warn!(function = %f.name, host, "route outside the functions domains ignored");
                        continue;
                    }
                    by_host.entry(host.clone()).or_default().push((
                        path.clone(),
                        f.name.clone(),
                        t.qualifier.clone(),
                    ));
                }
            }
        }
        for routes in by_host.values_mut() {
            routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        }
        Some(Routes {
            generation,
            by_host,
        })
    }
}

/// The HTTP routes of all functions: per host, (path prefix, function, qualifier), longest
/// prefix first.
#[derive(Default)]
pub(super) struct Routes {
    generation: u64,
    by_host: HashMap<String, Vec<(String, String, Option<String>)>>,
}

/// `host` is `domain` or a name under it.
pub(super) fn same_or_under(host: &str, domain: &str) -> bool {
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.ends_with('.'))
}
