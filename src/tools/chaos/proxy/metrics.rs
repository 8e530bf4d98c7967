//! The proxy's counters, read by `GET /metrics` on the API port (where
//! Toxiproxy serves its own) in Prometheus' text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected_max_conns: AtomicU64,
    pub upstream_failed: AtomicU64,
    pub accept_errors: AtomicU64,
    pub resets: AtomicU64,
    /// Bytes read from clients (upstream stream) and from upstreams.
    pub bytes: [AtomicU64; 2],
    pub queued_bytes: AtomicU64,
    pub proxies: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut line = |name: &str, kind: &str, labels: &str, value: u64| {
            let _ = writeln!(out, "# TYPE {name} {kind}\n{name}{labels} {value}");
        };
        line(
            "holdfast_chaos_proxy_proxies",
            "gauge",
            "",
            get(&self.proxies),
        );
        line(
            "holdfast_chaos_proxy_connections_open",
            "gauge",
            "",
            get(&self.open),
        );
        line(
            "holdfast_chaos_proxy_connections_accepted_total",
            "counter",
            "",
            get(&self.accepted),
        );
        let rejected = "holdfast_chaos_proxy_connections_rejected_total";
        line(
            rejected,
            "counter",
            "{reason=\"max_conns\"}",
            get(&self.rejected_max_conns),
        );
        line(
            rejected,
            "counter",
            "{reason=\"upstream\"}",
            get(&self.upstream_failed),
        );
        line(
            rejected,
            "counter",
            "{reason=\"accept_error\"}",
            get(&self.accept_errors),
        );
        line(
            "holdfast_chaos_proxy_resets_total",
            "counter",
            "",
            get(&self.resets),
        );
        let bytes = "holdfast_chaos_proxy_bytes_total";
        line(
            bytes,
            "counter",
            "{stream=\"upstream\"}",
            get(&self.bytes[0]),
        );
        line(
            bytes,
            "counter",
            "{stream=\"downstream\"}",
            get(&self.bytes[1]),
        );
        line(
            "holdfast_chaos_proxy_queued_bytes",
            "gauge",
            "",
            get(&self.queued_bytes),
        );
        out
    }
}
