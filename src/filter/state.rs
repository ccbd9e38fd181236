//! The filters as the running hub holds them: which are on for whom (the
//! flags, then `kube-system/yurt-hub-cfg` as it changes), what they know
//! of this node's pool, and how many objects each dropped or rewrote.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::{BodyFilter, Context, ContextSource, Counts, Filter, Filters, Session};
use crate::codec::Encoding;
use crate::request_info::RequestInfo;

pub struct FilterState {
    /// `--enable-resource-filter=false` switches every filter off.
    enabled: bool,
    base: Filters,
    filters: RwLock<Arc<Filters>>,
    context: RwLock<Arc<Context>>,
    dropped: [AtomicU64; Filter::ALL.len()],
    rewritten: [AtomicU64; Filter::ALL.len()],
}

impl FilterState {
    pub fn new(enabled: bool, filters: Filters, context: Context) -> FilterState {
        FilterState {
            enabled,
            base: filters.clone(),
            filters: RwLock::new(Arc::new(filters)),
            context: RwLock::new(Arc::new(context)),
            dropped: Default::default(),
            rewritten: Default::default(),
        }
    }

    /// Every filter on, the original's default address, node `edge-1` in no
    /// known pool.
    #[cfg(test)]
    pub fn for_tests() -> FilterState {
        FilterState::new(
            true,
            Filters::default(),
            Context {
                hub: super::HubAddress {
                    host: "169.254.2.1".into(),
                    port: 10268,
                },
                node_name: "edge-1".into(),
                pool: None,
                pool_nodes: None,
                topology: None,
            },
        )
    }

    /// Applies the data of `kube-system/yurt-hub-cfg` (components added per filter).
    pub fn set_configmap_data(&self, data: &BTreeMap<String, String>) {
        let filters = Arc::new(self.base.with_configmap_data(data));
        let mut current = self.filters.write().unwrap_or_else(|e| e.into_inner());
        if *current != filters {
            log::info!(
                "response filters: components added by yurt-hub-cfg: {}",
                filters.describe_extra()
            );
            *current = filters;
        }
    }

    pub fn context(&self) -> Arc<Context> {
        self.context
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_context(&self, context: Context) {
        *self.context.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(context);
    }

    /// The filters a request's answer goes through (none for most).
    pub fn for_request(&self, component: &str, info: &RequestInfo) -> Vec<Filter> {
        if !self.enabled {
            return Vec::new();
        }
        let filters = self
            .filters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        filters.for_request(component, info)
    }

    /// The filter of a response body of `content_type`, when it has one the
    /// filters read (JSON or protobuf objects, not tables).
    pub fn body_filter(
        self: &Arc<Self>,
        filters: &[Filter],
        info: &RequestInfo,
        content_type: Option<&str>,
    ) -> Option<BodyFilter> {
        if filters.is_empty() {
            return None;
        }
        let encoding = content_type.and_then(Encoding::from_content_type)?;
        let session = Session::new(
            filters.to_vec(),
            &info.resource,
            ContextSource::Live(self.clone()),
            encoding,
        );
        Some(BodyFilter::new(session, info.verb))
    }

    /// A session for answers the hub builds itself (offline).
    pub fn session(
        self: &Arc<Self>,
        filters: &[Filter],
        resource: &str,
        encoding: Encoding,
    ) -> Session {
        Session::new(
            filters.to_vec(),
            resource,
            ContextSource::Live(self.clone()),
            encoding,
        )
    }

    /// Adds what one answer's filters did to the metrics.
    pub fn record(&self, counts: &Counts) {
        for i in 0..Filter::ALL.len() {
            if counts.dropped[i] > 0 {
                self.dropped[i].fetch_add(counts.dropped[i], Ordering::Relaxed);
            }
            if counts.rewritten[i] > 0 {
                self.rewritten[i].fetch_add(counts.rewritten[i], Ordering::Relaxed);
            }
        }
    }

    /// What `/v1/readyz` says of filters still without the context they need.
    pub fn missing_context(&self) -> Option<String> {
        if !self.enabled {
            return None;
        }
        let filters = self
            .filters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let on: Vec<Filter> = Filter::ALL
            .into_iter()
            .filter(|f| filters.is_on(*f))
            .collect();
        super::lacking_context(&on, &self.context())
    }

    pub fn render_metrics(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP node_yurthub_filter_objects_total objects the response filters dropped from an answer or rewrote, by filter\n# TYPE node_yurthub_filter_objects_total counter"
        );
        for (i, filter) in Filter::ALL.iter().enumerate() {
            for (outcome, counter) in [
                ("dropped", &self.dropped[i]),
                ("rewritten", &self.rewritten[i]),
            ] {
                let _ = writeln!(
                    out,
                    "node_yurthub_filter_objects_total{{filter=\"{filter}\",outcome=\"{outcome}\"}} {}",
                    counter.load(Ordering::Relaxed)
                );
            }
        }
    }
}
