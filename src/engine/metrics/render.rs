//! Prometheus text exposition (format 0.0.4) of a [`Registry`].
//!
//! Which families carry a `shard` label: the ones where an operator wants to
//! see imbalance between event loops (connections open and accepted, frames,
//! bytes, loop turns). Prometheus forbids mixing a labelled and an unlabelled
//! series of one family, so those families have per-shard series only and
//! the process-wide figure is `sum(holdfast_frames_total)` in PromQL. Every
//! other family (closes and rejects by reason, panics, the loop-turn
//! histogram, process figures) is rendered once, already summed over shards:
//! a per-shard split of those would multiply the series count (9 close
//! reasons × shards, 12 buckets × shards) for little insight.
//!
//! Rendering reads only relaxed atomics, so a scrape never waits for a shard
//! and a shard never waits for a scrape. The price is that figures read at
//! slightly different instants need not agree exactly (say,
//! `holdfast_loop_turn_seconds_sum` against `_count`).

use std::fmt::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{
    BreakerState, CloseReason, DropReason, FailFast, LOOP_TURN_BUCKETS, Registry, RejectReason,
    ReloadResult, ShardMetrics, UPSTREAM_LATENCY_BUCKETS, UpstreamError, UpstreamMetrics,
};

/// Renders every metric, summed over shards, with per-shard series where
/// imbalance matters. Appends to `out`; a `/proc` file that cannot be read
/// leaves its series out rather than failing the scrape.
pub fn render(registry: &Registry, out: &mut String) {
    // `fmt::Write` for `String` never fails; the `Result` only exists so
    // the helpers below can use `?`.
    let _ = render_to(registry, out);
}

/// The figures read from `/proc` and `getrlimit`, each `None` when it could
/// not be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ProcessFigures {
    /// File descriptors open, not counting the one used to list them.
    open_fds: Option<u64>,
    /// The RLIMIT_NOFILE soft limit.
    max_fds: Option<u64>,
    /// Resident set size in bytes.
    resident_memory_bytes: Option<u64>,
}

fn render_to(registry: &Registry, out: &mut String) -> fmt::Result {
    let shards = &registry.shards;
    connections(out, shards)?;
    traffic(out, shards)?;
    push(out, shards)?;
    loop_turn_histogram(out, shards)?;
    let names = registry.upstreams.lock().map(|names| names.clone());
    let names = names.unwrap_or_default();
    if !names.is_empty() {
        upstreams(out, registry, &names)?;
    }
    if registry.backend == "uring" {
        uring(out, shards)?;
    }
    state(out, registry)?;
    front(out, registry)?;
    memory(out, registry)?;
    process(out, registry)
}

/// Load shedding's signals, per shard, and whether it sheds.
fn shedding(out: &mut String, shards: &[Arc<ShardMetrics>]) -> fmt::Result {
    per_shard(
        out,
        "holdfast_accept_queue",
        "gauge",
        "Connections waiting in the shard's accept queue, as last sampled (--shed-accept-queue).",
        shards,
        |s| s.accept_queue.get(),
    )?;
    header(
        out,
        "holdfast_loop_lag_seconds",
        "gauge",
        "The longest loop turn's work in the last 10 ms window (--shed-loop-lag).",
    )?;
    for (index, shard) in shards.iter().enumerate() {
        let us = shard.loop_lag_us.get();
        let (whole, micros) = (us / 1_000_000, us % 1_000_000);
        writeln!(
            out,
            "holdfast_loop_lag_seconds{{shard=\"{index}\"}} {whole}.{micros:06}"
        )?;
    }
    single(
        out,
        "holdfast_fds_left",
        "gauge",
        "Descriptors RLIMIT_NOFILE leaves for connections, as of the last accept (--shed-fds-left).",
        shards.iter().map(|s| s.fds_left.get()).min().unwrap_or(0),
    )?;
    per_shard(
        out,
        "holdfast_shedding",
        "gauge",
        "1 while the shard sheds new connections.",
        shards,
        |s| s.shedding.get(),
    )
}

/// The front door's figures.
fn front(out: &mut String, registry: &Registry) -> fmt::Result {
    let shards = &registry.shards;
    single(
        out,
        "holdfast_ip_table_entries",
        "gauge",
        "Client addresses the per-address limits hold (at most --ip-table-max).",
        registry.ip_table_entries.load(Ordering::Relaxed),
    )?;
    single(
        out,
        "holdfast_throttled_total",
        "counter",
        "Times a connection was over --request-rate and stopped being read.",
        sum(shards, |s| s.throttled.get()),
    )?;
    shedding(out, shards)?;
    let ms = sum(shards, |s| s.throttled_ms.get());
    header(
        out,
        "holdfast_throttled_seconds_total",
        "counter",
        "Time connections spent not read for --request-rate.",
    )?;
    writeln!(
        out,
        "holdfast_throttled_seconds_total {}.{:03}",
        ms / 1000,
        ms % 1000
    )
}

/// `--max-buffer-memory`: taken, the limit, the connections waiting.
fn memory(out: &mut String, registry: &Registry) -> fmt::Result {
    let shards = &registry.shards;
    single(
        out,
        "holdfast_buffer_memory_bytes",
        "gauge",
        "Bytes of --max-buffer-memory the shards have taken (two rings per busy connection, and spare).",
        registry.buffer_memory.load(Ordering::Relaxed),
    )?;
    single(
        out,
        "holdfast_buffer_memory_limit_bytes",
        "gauge",
        "--max-buffer-memory in force.",
        registry.buffer_memory_limit.load(Ordering::Relaxed),
    )?;
    single(
        out,
        "holdfast_buffer_memory_waiting",
        "gauge",
        "Client connections waiting (not read) for buffer memory.",
        sum(shards, |s| s.memory_waiting.get()),
    )?;
    single(
        out,
        "holdfast_buffer_memory_waits_total",
        "counter",
        "Times a client connection waited for buffer memory.",
        sum(shards, |s| s.memory_waits.get()),
    )?;
    single(
        out,
        "holdfast_buffer_memory_overdraws_total",
        "counter",
        "Units of two rings taken past --max-buffer-memory (rings already held: upstream links, pushes, io_uring receives).",
        sum(shards, |s| s.memory_overdraws.get()),
    )?;
    let ms = sum(shards, |s| s.memory_wait_ms.get());
    header(
        out,
        "holdfast_buffer_memory_wait_seconds_total",
        "counter",
        "Time client connections spent waiting for buffer memory.",
    )?;
    writeln!(
        out,
        "holdfast_buffer_memory_wait_seconds_total {}.{:03}",
        ms / 1000,
        ms % 1000
    )
}

/// Connections: open and accepted per shard, rejects and closes by reason.
fn connections(out: &mut String, shards: &[Arc<ShardMetrics>]) -> fmt::Result {
    per_shard(
        out,
        "holdfast_connections_open",
        "gauge",
        "Client connections open now (admin connections excluded).",
        shards,
        |s| s.connections_open.get(),
    )?;
    per_shard(
        out,
        "holdfast_connections_accepted_total",
        "counter",
        "Client connections accepted (rejected ones excluded).",
        shards,
        |s| s.accepted.get(),
    )?;
    header(
        out,
        "holdfast_connections_rejected_total",
        "counter",
        "Connections closed at once on accept, by reason.",
    )?;
    for reason in RejectReason::ALL {
        let value = sum(shards, |s| s.rejected[reason.index()].get());
        let reason = reason.as_str();
        writeln!(
            out,
            "holdfast_connections_rejected_total{{reason=\"{reason}\"}} {value}"
        )?;
    }
    header(
        out,
        "holdfast_connections_closed_total",
        "counter",
        "Client connections closed, by reason.",
    )?;
    for reason in CloseReason::ALL {
        let value = sum(shards, |s| s.closed[reason.index()].get());
        let reason = reason.as_str();
        writeln!(
            out,
            "holdfast_connections_closed_total{{reason=\"{reason}\"}} {value}"
        )?;
    }
    single(
        out,
        "holdfast_handler_panics_total",
        "counter",
        "Service calls that panicked (each closes its connection).",
        sum(shards, |s| s.handler_panics.get()),
    )
}

/// Server push: messages written, dropped by reason, refused mailings,
/// bytes queued for slow consumers, groups.
fn push(out: &mut String, shards: &[Arc<ShardMetrics>]) -> fmt::Result {
    per_shard(
        out,
        "holdfast_pushed_total",
        "counter",
        "Pushed messages written to connections.",
        shards,
        |s| s.pushed.get(),
    )?;
    header(
        out,
        "holdfast_push_dropped_total",
        "counter",
        "Pushed messages not written, by reason.",
    )?;
    for reason in DropReason::ALL {
        let mut value = sum(shards, |s| s.push_dropped[reason.index()].get());
        if reason == DropReason::MailboxFull {
            value += sum(shards, |s| s.mailbox_refused.load(Ordering::Relaxed));
        }
        let reason = reason.as_str();
        writeln!(
            out,
            "holdfast_push_dropped_total{{reason=\"{reason}\"}} {value}"
        )?;
    }
    per_shard(
        out,
        "holdfast_push_queued_bytes",
        "gauge",
        "Bytes of pushes queued behind full output rings (slow consumers).",
        shards,
        |s| s.push_queued_bytes.get(),
    )?;
    per_shard(
        out,
        "holdfast_groups",
        "gauge",
        "Groups (Pub/Sub channels and patterns) with a member on the shard.",
        shards,
        |s| s.groups.get(),
    )?;
    per_shard(
        out,
        "holdfast_heartbeats_total",
        "counter",
        "Heartbeat pings sent.",
        shards,
        |s| s.heartbeats.get(),
    )
}

/// Frames, bytes, shards and loop turns.
fn traffic(out: &mut String, shards: &[Arc<ShardMetrics>]) -> fmt::Result {
    per_shard(
        out,
        "holdfast_frames_total",
        "counter",
        "Frames served.",
        shards,
        |s| s.frames.get(),
    )?;
    per_shard(
        out,
        "holdfast_bytes_read_total",
        "counter",
        "Bytes read from client sockets.",
        shards,
        |s| s.bytes_read.get(),
    )?;
    per_shard(
        out,
        "holdfast_bytes_written_total",
        "counter",
        "Bytes written to client sockets.",
        shards,
        |s| s.bytes_written.get(),
    )?;
    single(
        out,
        "holdfast_shards",
        "gauge",
        "Event loops (one thread each).",
        shards.len() as u64,
    )?;
    per_shard(
        out,
        "holdfast_loop_iterations_total",
        "counter",
        "Event loop turns (one poll and the work after it).",
        shards,
        |s| s.loop_iterations.get(),
    )
}

/// The driver in use and whether the server accepts.
fn state(out: &mut String, registry: &Registry) -> fmt::Result {
    header(
        out,
        "holdfast_backend_info",
        "gauge",
        "The I/O driver in use; the value is always 1.",
    )?;
    writeln!(
        out,
        "holdfast_backend_info{{backend=\"{}\"}} 1",
        registry.backend
    )?;
    single(
        out,
        "holdfast_ready",
        "gauge",
        "1 while accepting connections, 0 once draining.",
        u64::from(registry.ready.load(Ordering::Relaxed)),
    )?;
    single(
        out,
        "holdfast_generation",
        "gauge",
        "Which process this is across binary upgrades: 1 when started afresh, one more than \
         the process it took the listeners from.",
        registry.generation.load(Ordering::Relaxed),
    )?;
    config(out, registry)
}

/// The reloads of the settings (`engine/reload/`).
fn config(out: &mut String, registry: &Registry) -> fmt::Result {
    let config = &registry.config;
    header(
        out,
        "holdfast_config_reloads_total",
        "counter",
        "Reloads of the settings (SIGHUP, POST /reload) by result: applied, invalid (the file \
         failed to load or validate) or refused (it changes a setting that is not live).",
    )?;
    for result in ReloadResult::ALL {
        let value = config.reloads[result.index()].load(Ordering::Relaxed);
        let name = result.name();
        writeln!(
            out,
            "holdfast_config_reloads_total{{result=\"{name}\"}} {value}"
        )?;
    }
    single(
        out,
        "holdfast_config_generation",
        "gauge",
        "The settings in effect: 1 at start, one more per applied reload.",
        config.generation.load(Ordering::Relaxed),
    )?;
    header(
        out,
        "holdfast_config_info",
        "gauge",
        "The SHA-256 of the --config file in effect (as sha256sum prints it; none without a \
         file); the value is always 1.",
    )?;
    let sha256 = config
        .sha256
        .lock()
        .map_or_else(|_| "none".into(), |s| s.clone());
    writeln!(out, "holdfast_config_info{{sha256=\"{sha256}\"}} 1")
}

/// The process figures, each left out when it could not be read, and the
/// fds nothing accounts for (needs the open count).
fn process(out: &mut String, registry: &Registry) -> fmt::Result {
    let process = ProcessFigures::read();
    let figures = [
        (
            "process_open_fds",
            "Number of open file descriptors.",
            process.open_fds,
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors (RLIMIT_NOFILE soft limit).",
            process.max_fds,
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            process.resident_memory_bytes,
        ),
    ];
    for (name, help, value) in figures {
        if let Some(value) = value {
            single(out, name, "gauge", help, value)?;
        }
    }
    if let Some(open_fds) = process.open_fds {
        header(
            out,
            "holdfast_fd_unaccounted",
            "gauge",
            "Open file descriptors that no connection, shard or known process \
             resource accounts for; non-zero for long means a leak.",
        )?;
        writeln!(
            out,
            "holdfast_fd_unaccounted {}",
            fd_unaccounted(open_fds, registry)
        )?;
    }
    Ok(())
}

/// The upstream families (only when the service calls upstreams), each
/// summed over shards, labelled by the upstream as written.
fn upstreams(out: &mut String, registry: &Registry, names: &[String]) -> fmt::Result {
    let shards = &registry.shards;
    // Escaped once per scrape, not once per series.
    let names: Vec<String> = names.iter().map(|n| escape(n)).collect();
    let names = &names[..];
    pending(out, shards)?;
    per_upstream(
        out,
        "holdfast_upstream_requests_total",
        "counter",
        "Requests sent (or queued to be sent) to each upstream.",
        (names, shards),
        |u| u.requests.get(),
    )?;
    per_upstream(
        out,
        "holdfast_upstream_health_checks_total",
        "counter",
        "Health checks (PING, --health-check-interval) sent to each upstream; their \
         failures count in holdfast_upstream_errors_total and the breaker.",
        (names, shards),
        |u| u.health_checks.get(),
    )?;
    per_upstream(
        out,
        "holdfast_upstream_redirects_total",
        "counter",
        "Replies of each upstream that sent their request to another (Redis Cluster's MOVED \
         and ASK), followed by the proxy.",
        (names, shards),
        |u| u.redirects.get(),
    )?;
    upstream_errors(out, names, shards)?;
    per_upstream(
        out,
        "holdfast_upstream_connects_total",
        "counter",
        "Connect attempts to each upstream.",
        (names, shards),
        |u| u.connects.get(),
    )?;
    upstream_latency(out, names, shards)?;
    upstream_connections(out, names, shards)?;
    per_upstream(
        out,
        "holdfast_upstream_queued",
        "gauge",
        "Requests waiting for an upstream connection.",
        (names, shards),
        |u| u.queued.get(),
    )?;
    breaker_states(out, names, shards)?;
    breaker_transitions(out, names, shards)
}

/// Replies awaited and the bytes they hold, per shard.
fn pending(out: &mut String, shards: &[Arc<ShardMetrics>]) -> fmt::Result {
    per_shard(
        out,
        "holdfast_pending_replies",
        "gauge",
        "Replies clients await from upstreams (or queued behind those).",
        shards,
        |s| s.pending.get(),
    )?;
    per_shard(
        out,
        "holdfast_pending_bytes",
        "gauge",
        "Bytes the buffers of awaited replies hold, idle ones kept for reuse included; \
         at most --max-pending-bytes.",
        shards,
        |s| s.pending_bytes.get(),
    )?;
    header(
        out,
        "holdfast_pending_bytes_full_total",
        "counter",
        "Times --max-pending-bytes was reached: a reply dropped or a split command refused \
         (outcome failed: the request got an error), or a client's reply left waiting \
         (outcome paused: the client is not read from until its earlier replies are written).",
    )?;
    for (index, shard) in shards.iter().enumerate() {
        for (outcome, value) in [
            ("failed", shard.pending_bytes_refused.get()),
            ("paused", shard.pending_bytes_paused.get()),
        ] {
            writeln!(
                out,
                "holdfast_pending_bytes_full_total{{shard=\"{index}\",outcome=\"{outcome}\"}} {value}"
            )?;
        }
    }
    Ok(())
}

/// Failures by kind, then requests refused without being sent by reason.
fn upstream_errors(
    out: &mut String,
    names: &[String],
    shards: &[Arc<ShardMetrics>],
) -> fmt::Result {
    header(
        out,
        "holdfast_upstream_errors_total",
        "counter",
        "Upstream failures by kind: connect attempts that failed; requests that timed out, \
         lost their connection, or were too large.",
    )?;
    for (index, name) in names.iter().enumerate() {
        for kind in UpstreamError::ALL {
            let value = sum(shards, |s| s.upstreams[index].errors[kind.index()].get());
            writeln!(
                out,
                "holdfast_upstream_errors_total{{upstream=\"{name}\",kind=\"{}\"}} {value}",
                kind.as_str()
            )?;
        }
    }
    header(
        out,
        "holdfast_upstream_fail_fast_total",
        "counter",
        "Requests refused at once without being sent, by reason.",
    )?;
    for (index, name) in names.iter().enumerate() {
        for reason in FailFast::ALL {
            let value = sum(shards, |s| {
                s.upstreams[index].fail_fast[reason.index()].get()
            });
            writeln!(
                out,
                "holdfast_upstream_fail_fast_total{{upstream=\"{name}\",reason=\"{}\"}} {value}",
                reason.as_str()
            )?;
        }
    }
    Ok(())
}

/// `holdfast_upstream_latency_seconds`, one histogram per upstream summed
/// over shards; `_count` is the `+Inf` bucket, as for the loop turns.
fn upstream_latency(
    out: &mut String,
    names: &[String],
    shards: &[Arc<ShardMetrics>],
) -> fmt::Result {
    const LATENCY: &str = "holdfast_upstream_latency_seconds";
    header(
        out,
        LATENCY,
        "histogram",
        "From a request handed to an upstream connection to its reply read.",
    )?;
    for (index, name) in names.iter().enumerate() {
        let bucket =
            |bucket: usize| sum(shards, |s| s.upstreams[index].latency.buckets[bucket].get());
        let mut cumulative: u64 = 0;
        for (bucket_index, bound) in UPSTREAM_LATENCY_BUCKETS.iter().enumerate() {
            cumulative = cumulative.wrapping_add(bucket(bucket_index));
            writeln!(
                out,
                "{LATENCY}_bucket{{upstream=\"{name}\",le=\"{bound}\"}} {cumulative}"
            )?;
        }
        cumulative = cumulative.wrapping_add(bucket(UPSTREAM_LATENCY_BUCKETS.len()));
        writeln!(
            out,
            "{LATENCY}_bucket{{upstream=\"{name}\",le=\"+Inf\"}} {cumulative}"
        )?;
        let sum_us = sum(shards, |s| s.upstreams[index].latency.sum_us.get());
        writeln!(
            out,
            "{LATENCY}_sum{{upstream=\"{name}\"}} {}",
            sum_us as f64 / 1e6
        )?;
        writeln!(out, "{LATENCY}_count{{upstream=\"{name}\"}} {cumulative}")?;
    }
    Ok(())
}

/// Upstream connections by state.
fn upstream_connections(
    out: &mut String,
    names: &[String],
    shards: &[Arc<ShardMetrics>],
) -> fmt::Result {
    header(
        out,
        "holdfast_upstream_connections",
        "gauge",
        "Upstream connections by state: in_use (owing replies), idle, connecting.",
    )?;
    type State = (&'static str, fn(&UpstreamMetrics) -> u64);
    let states: [State; 3] = [
        ("in_use", |u| u.conns_in_use.get()),
        ("idle", |u| u.conns_idle.get()),
        ("connecting", |u| u.conns_connecting.get()),
    ];
    for (index, name) in names.iter().enumerate() {
        for (state, value) in states {
            let value = sum(shards, |s| value(&s.upstreams[index]));
            writeln!(
                out,
                "holdfast_upstream_connections{{upstream=\"{name}\",state=\"{state}\"}} {value}"
            )?;
        }
    }
    Ok(())
}

/// How many shards' breakers stand in each state: a count of shards, not a
/// sum, since each shard has its own breaker.
fn breaker_states(out: &mut String, names: &[String], shards: &[Arc<ShardMetrics>]) -> fmt::Result {
    header(
        out,
        "holdfast_upstream_breaker_state",
        "gauge",
        "Shards whose circuit breaker for the upstream is in each state (one breaker per shard).",
    )?;
    for (index, name) in names.iter().enumerate() {
        for state in BreakerState::ALL {
            let value = shards
                .iter()
                .filter(|s| s.upstreams[index].breaker_state.get() == state.index() as u64)
                .count();
            writeln!(
                out,
                "holdfast_upstream_breaker_state{{upstream=\"{name}\",state=\"{}\"}} {value}",
                state.name()
            )?;
        }
    }
    Ok(())
}

/// Breaker transitions from one state to another (never to itself).
fn breaker_transitions(
    out: &mut String,
    names: &[String],
    shards: &[Arc<ShardMetrics>],
) -> fmt::Result {
    header(
        out,
        "holdfast_upstream_breaker_transitions_total",
        "counter",
        "Circuit breaker state changes, summed over shards.",
    )?;
    for (index, name) in names.iter().enumerate() {
        for from in BreakerState::ALL {
            for to in BreakerState::ALL.into_iter().filter(|&to| to != from) {
                let value = sum(shards, |s| {
                    s.upstreams[index].transitions[from.index()][to.index()].get()
                });
                writeln!(
                    out,
                    "holdfast_upstream_breaker_transitions_total{{upstream=\"{name}\",from=\"{}\",to=\"{}\"}} {value}",
                    from.name(),
                    to.name()
                )?;
            }
        }
    }
    Ok(())
}

/// A family with one `upstream="name"` series per upstream, summed over
/// shards.
fn per_upstream(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    (names, shards): (&[String], &[Arc<ShardMetrics>]),
    value: impl Fn(&UpstreamMetrics) -> u64,
) -> fmt::Result {
    header(out, name, kind, help)?;
    for (index, upstream) in names.iter().enumerate() {
        let value = sum(shards, |s| value(&s.upstreams[index]));
        writeln!(out, "{name}{{upstream=\"{upstream}\"}} {value}")?;
    }
    Ok(())
}

/// A label value with `\` and `"` escaped (and newlines, which an upstream
/// name as written cannot hold anyway).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The io_uring driver's counters, rendered only when it runs.
fn uring(out: &mut String, shards: &[Arc<ShardMetrics>]) -> fmt::Result {
    type Family = (&'static str, &'static str, fn(&ShardMetrics) -> u64);
    let families: [Family; 5] = [
        (
            "holdfast_uring_enters_total",
            "io_uring_enter calls (each submits and most often waits).",
            |s| s.uring.enters.get(),
        ),
        (
            "holdfast_uring_enobufs_total",
            "Receives ended by an empty provided-buffer pool (see --uring-buffers).",
            |s| s.uring.enobufs.get(),
        ),
        (
            "holdfast_uring_cq_overflow_total",
            "Turns that found the completion queue overflowed (see --uring-entries).",
            |s| s.uring.cq_overflow.get(),
        ),
        (
            "holdfast_uring_short_sends_total",
            "Sends that wrote fewer bytes than asked (the rest is sent again).",
            |s| s.uring.short_sends.get(),
        ),
        (
            "holdfast_uring_stray_completions_total",
            "Completions naming no live operation; non-zero is a bug.",
            |s| s.uring.stray_completions.get(),
        ),
    ];
    for (name, help, value) in families {
        per_shard(out, name, "counter", help, shards, value)?;
    }
    Ok(())
}

/// Open fds minus every fd the process knows it holds: client connections,
/// each shard's own (listener, poller, waker, spare), and the rest
/// (`fds_other`: stdio, the admin listener, poller and admin connections,
/// the signal pipe). Signed, so an accounting bug that over-counts shows up
/// as a negative value instead of hiding at 0.
///
/// The fds are read at different instants from different threads, so a
/// connection opening during a scrape can make one scrape read ±1; only a
/// value that stays non-zero means a leak.
fn fd_unaccounted(open_fds: u64, registry: &Registry) -> i64 {
    let shards = &registry.shards;
    let accounted = sum(shards, |s| s.connections_open.get())
        .saturating_add(sum(shards, |s| s.upstream_conns_open.get()))
        .saturating_add(sum(shards, |s| s.fds_own.get()))
        .saturating_add(registry.fds_other.load(Ordering::Relaxed) as u64);
    (i128::from(open_fds) - i128::from(accounted)).clamp(i64::MIN.into(), i64::MAX.into()) as i64
}

/// `holdfast_loop_turn_seconds`, summed over shards. `_count` is the
/// `+Inf` bucket rather than the separate `count` counter, so the
/// histogram is self-consistent even though the shards keep writing while
/// it is read.
fn loop_turn_histogram(out: &mut String, shards: &[Arc<ShardMetrics>]) -> fmt::Result {
    const NAME: &str = "holdfast_loop_turn_seconds";
    header(
        out,
        NAME,
        "histogram",
        "Time one event loop turn spent on work (not waiting in poll).",
    )?;
    let mut cumulative: u64 = 0;
    for (index, bound) in LOOP_TURN_BUCKETS.iter().enumerate() {
        cumulative = cumulative.wrapping_add(sum(shards, |s| s.loop_turn.buckets[index].get()));
        writeln!(out, "{NAME}_bucket{{le=\"{bound}\"}} {cumulative}")?;
    }
    let last = LOOP_TURN_BUCKETS.len();
    cumulative = cumulative.wrapping_add(sum(shards, |s| s.loop_turn.buckets[last].get()));
    writeln!(out, "{NAME}_bucket{{le=\"+Inf\"}} {cumulative}")?;
    let sum_ns = sum(shards, |s| s.loop_turn.sum_ns.get());
    writeln!(out, "{NAME}_sum {}", sum_ns as f64 / 1e9)?;
    writeln!(out, "{NAME}_count {cumulative}")
}

impl ProcessFigures {
    fn read() -> ProcessFigures {
        ProcessFigures {
            open_fds: crate::engine::sys::open_fds(),
            max_fds: nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .ok()
                .map(|(soft, _hard)| soft),
            resident_memory_bytes: resident_memory_bytes(),
        }
    }
}

/// Resident memory from the `VmRSS:` line of `/proc/self/status`.
///
/// Why not `/proc/self/statm` × page size: the page size needs
/// `sysconf(_SC_PAGESIZE)`, which nix only offers behind a feature the crate
/// does not enable, and calling libc directly would need `unsafe`. The
/// kernel derives `VmRSS` from the same resident page count as `statm`
/// (shifted to kB), so the figure is the same.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

/// Parses `VmRSS:    1234 kB` out of `/proc/self/status` into bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    if words.next()? != "kB" {
        return None;
    }
    kib.checked_mul(1024)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) -> fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

/// A family with one unlabelled series.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) -> fmt::Result {
    header(out, name, kind, help)?;
    writeln!(out, "{name} {value}")
}

/// A family with one `shard="N"` series per shard and no unlabelled one
/// (see the module documentation).
fn per_shard(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    shards: &[Arc<ShardMetrics>],
    value: impl Fn(&ShardMetrics) -> u64,
) -> fmt::Result {
    header(out, name, kind, help)?;
    for (index, shard) in shards.iter().enumerate() {
        writeln!(out, "{name}{{shard=\"{index}\"}} {}", value(shard))?;
    }
    Ok(())
}

/// Sums one figure over shards. Counters wrap like the shards' own adds, so
/// a (theoretical) overflow cannot panic a debug build mid-scrape.
fn sum(shards: &[Arc<ShardMetrics>], value: impl Fn(&ShardMetrics) -> u64) -> u64 {
    shards
        .iter()
        .fold(0u64, |total, shard| total.wrapping_add(value(shard)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use prometheus_parse::{Sample, Scrape, Value};

    use super::*;

    /// Two fake shards with different, recognisable figures.
    fn two_shards() -> Registry {
        let a = ShardMetrics::default();
        let b = ShardMetrics::default();
        a.connections_open.set(3);
        b.connections_open.set(4);
        a.accepted.add(10);
        b.accepted.add(20);
        a.rejected[RejectReason::MaxConns.index()].add(1);
        b.rejected[RejectReason::MaxConns.index()].add(2);
        a.closed[CloseReason::Peer.index()].add(5);
        b.closed[CloseReason::Peer.index()].add(7);
        b.closed[CloseReason::IdleTimeout.index()].add(1);
        a.handler_panics.inc();
        b.handler_panics.add(2);
        a.frames.add(100);
        b.frames.add(200);
        a.bytes_read.add(1000);
        b.bytes_read.add(2000);
        a.bytes_written.add(1500);
        b.bytes_written.add(2500);
        a.loop_iterations.add(40);
        b.loop_iterations.add(60);
        a.loop_turn.observe_ns(5_000); // 5 µs: first bucket
        a.loop_turn.observe_ns(200_000); // 200 µs: le=0.0005
        b.loop_turn.observe_ns(5_000);
        b.loop_turn.observe_ns(2_000_000_000); // 2 s: +Inf only
        let registry = Registry::new(vec![Arc::new(a), Arc::new(b)], "epoll");
        registry.ready.store(true, Ordering::Relaxed);
        registry
    }

    fn scrape(registry: &Registry) -> (String, Scrape) {
        let mut text = String::new();
        render(registry, &mut text);
        let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))
            .expect("rendered text parses");
        (text, scrape)
    }

    fn samples<'a>(scrape: &'a Scrape, name: &str) -> Vec<&'a Sample> {
        scrape.samples.iter().filter(|s| s.metric == name).collect()
    }

    fn value(sample: &Sample) -> f64 {
        match sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            ref other => panic!("{}: not a scalar: {other:?}", sample.metric),
        }
    }

    /// The sum of every series of `name` whose labels include `label`.
    fn total(scrape: &Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
        samples(scrape, name)
            .into_iter()
            .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(value)
            .sum()
    }

    #[test]
    fn every_documented_family_present_with_its_type() {
        let (text, scrape) = scrape(&two_shards());
        let families = [
            ("holdfast_connections_open", "gauge"),
            ("holdfast_connections_accepted_total", "counter"),
            ("holdfast_connections_rejected_total", "counter"),
            ("holdfast_connections_closed_total", "counter"),
            ("holdfast_handler_panics_total", "counter"),
            ("holdfast_frames_total", "counter"),
            ("holdfast_bytes_read_total", "counter"),
            ("holdfast_bytes_written_total", "counter"),
            ("holdfast_pushed_total", "counter"),
            ("holdfast_push_dropped_total", "counter"),
            ("holdfast_push_queued_bytes", "gauge"),
            ("holdfast_groups", "gauge"),
            ("holdfast_heartbeats_total", "counter"),
            ("holdfast_shards", "gauge"),
            ("holdfast_loop_iterations_total", "counter"),
            ("holdfast_loop_turn_seconds", "histogram"),
            ("holdfast_backend_info", "gauge"),
            ("holdfast_ready", "gauge"),
            ("holdfast_generation", "gauge"),
            ("holdfast_config_reloads_total", "counter"),
            ("holdfast_config_generation", "gauge"),
            ("holdfast_config_info", "gauge"),
            ("process_open_fds", "gauge"),
            ("process_max_fds", "gauge"),
            ("process_resident_memory_bytes", "gauge"),
            ("holdfast_fd_unaccounted", "gauge"),
            ("holdfast_ip_table_entries", "gauge"),
            ("holdfast_throttled_total", "counter"),
            ("holdfast_throttled_seconds_total", "counter"),
            ("holdfast_accept_queue", "gauge"),
            ("holdfast_loop_lag_seconds", "gauge"),
            ("holdfast_fds_left", "gauge"),
            ("holdfast_shedding", "gauge"),
            ("holdfast_buffer_memory_bytes", "gauge"),
            ("holdfast_buffer_memory_limit_bytes", "gauge"),
            ("holdfast_buffer_memory_waiting", "gauge"),
            ("holdfast_buffer_memory_waits_total", "counter"),
            ("holdfast_buffer_memory_overdraws_total", "counter"),
            ("holdfast_buffer_memory_wait_seconds_total", "counter"),
        ];
        for (name, kind) in families {
            assert!(scrape.docs.contains_key(name), "no HELP for {name}");
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "no `# TYPE {name} {kind}`"
            );
            let found = samples(&scrape, name);
            assert!(!found.is_empty(), "no sample of {name}");
            for sample in found {
                let typed = matches!(
                    (&sample.value, kind),
                    (Value::Counter(_), "counter")
                        | (Value::Gauge(_), "gauge")
                        | (Value::Histogram(_), "histogram")
                );
                assert!(typed, "{name} parsed as {:?}", sample.value);
            }
        }
        // Every TYPE line names a family in the list: nothing undocumented.
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).unwrap();
            assert!(families.iter().any(|(n, _)| *n == name), "extra {name}");
        }
        // No empty lines or stray text: every line is a comment or a sample.
        for line in text.lines() {
            assert!(line.starts_with("# ") || line.contains(' '), "{line:?}");
        }
    }

    #[test]
    fn counters_summed_across_shards() {
        let (_, scrape) = scrape(&two_shards());
        let cases = [
            ("holdfast_connections_open", 7.0),
            ("holdfast_connections_accepted_total", 30.0),
            ("holdfast_handler_panics_total", 3.0),
            ("holdfast_frames_total", 300.0),
            ("holdfast_bytes_read_total", 3000.0),
            ("holdfast_bytes_written_total", 4000.0),
            ("holdfast_loop_iterations_total", 100.0),
            ("holdfast_shards", 2.0),
            ("holdfast_ready", 1.0),
        ];
        for (name, expected) in cases {
            assert_eq!(total(&scrape, name, None), expected, "{name}");
        }
        let rejected = "holdfast_connections_rejected_total";
        assert_eq!(total(&scrape, rejected, Some(("reason", "max_conns"))), 3.0);
        assert_eq!(total(&scrape, rejected, Some(("reason", "fd_limit"))), 0.0);
        let closed = "holdfast_connections_closed_total";
        assert_eq!(total(&scrape, closed, Some(("reason", "peer"))), 12.0);
        assert_eq!(
            total(&scrape, closed, Some(("reason", "idle_timeout"))),
            1.0
        );
        let backend = samples(&scrape, "holdfast_backend_info");
        assert_eq!(backend.len(), 1);
        assert_eq!(backend[0].labels.get("backend"), Some("epoll"));
        assert_eq!(value(backend[0]), 1.0);
    }

    #[test]
    fn per_shard_families_carry_one_series_per_shard() {
        let (_, scrape) = scrape(&two_shards());
        let open = samples(&scrape, "holdfast_connections_open");
        assert_eq!(open.len(), 2, "labelled series only, no unlabelled sum");
        assert_eq!(
            total(&scrape, "holdfast_frames_total", Some(("shard", "0"))),
            100.0
        );
        assert_eq!(
            total(&scrape, "holdfast_frames_total", Some(("shard", "1"))),
            200.0
        );
    }

    #[test]
    fn every_reason_present_even_at_zero() {
        let registry = Registry::new(vec![Arc::new(ShardMetrics::default())], "epoll");
        let (_, scrape) = scrape(&registry);
        for reason in CloseReason::ALL {
            let found = samples(&scrape, "holdfast_connections_closed_total")
                .into_iter()
                .filter(|s| s.labels.get("reason") == Some(reason.as_str()))
                .count();
            assert_eq!(found, 1, "close reason {}", reason.as_str());
        }
        for reason in RejectReason::ALL {
            let found = samples(&scrape, "holdfast_connections_rejected_total")
                .into_iter()
                .filter(|s| s.labels.get("reason") == Some(reason.as_str()))
                .count();
            assert_eq!(found, 1, "reject reason {}", reason.as_str());
        }
        assert_eq!(total(&scrape, "holdfast_ready", None), 0.0);
    }

    #[test]
    fn histogram_buckets_cumulative_and_count_matches() {
        let (_, scrape) = scrape(&two_shards());
        let histogram = samples(&scrape, "holdfast_loop_turn_seconds");
        assert_eq!(histogram.len(), 1);
        let Value::Histogram(ref buckets) = histogram[0].value else {
            panic!("not a histogram: {:?}", histogram[0].value);
        };
        assert_eq!(buckets.len(), LOOP_TURN_BUCKETS.len() + 1);
        for pair in buckets.windows(2) {
            assert!(pair[0].less_than < pair[1].less_than, "bounds ascend");
            assert!(pair[0].count <= pair[1].count, "cumulative: {pair:?}");
        }
        let count_at = |bound: f64| {
            buckets
                .iter()
                .find(|b| b.less_than == bound)
                .unwrap_or_else(|| panic!("no bucket le={bound}"))
                .count
        };
        assert_eq!(count_at(0.000_01), 2.0);
        assert_eq!(count_at(0.000_1), 2.0);
        assert_eq!(count_at(0.000_5), 3.0);
        assert_eq!(count_at(1.0), 3.0);
        assert_eq!(count_at(f64::INFINITY), 4.0);
        assert_eq!(
            total(&scrape, "holdfast_loop_turn_seconds_count", None),
            4.0
        );
        let sum = total(&scrape, "holdfast_loop_turn_seconds_sum", None);
        assert!((sum - 2.000_21).abs() < 1e-9, "sum {sum}");
    }

    /// Two shards with two upstreams (one name needing escapes) under
    /// io_uring, every figure set to a distinct value, so every family
    /// and every label combination renders something recognisable.
    fn full_registry() -> Registry {
        let mut next = 0u64;
        let mut fill = |counter: &dyn Fn(u64)| {
            next += 1;
            counter(next);
        };
        let shards: Vec<Arc<ShardMetrics>> = (0..2)
            .map(|_| {
                let s = ShardMetrics::with_upstreams(2);
                for gauge in [
                    &s.connections_open,
                    &s.accept_queue,
                    &s.loop_lag_us,
                    &s.fds_left,
                    &s.shedding,
                    &s.fds_own,
                    &s.pending,
                    &s.pending_bytes,
                    &s.pending_bytes_refused,
                    &s.pending_bytes_paused,
                    &s.upstream_conns_open,
                    &s.push_queued_bytes,
                    &s.groups,
                ] {
                    fill(&|v| gauge.set(v));
                }
                fill(&|v| {
                    s.mailbox_refused.fetch_add(v, Ordering::Relaxed);
                });
                let counters = [&s.accepted, &s.handler_panics, &s.frames, &s.bytes_read]
                    .into_iter()
                    .chain([&s.bytes_written, &s.loop_iterations])
                    .chain([&s.pushed, &s.heartbeats])
                    .chain(&s.push_dropped)
                    .chain([&s.throttled, &s.throttled_ms])
                    .chain(&s.rejected)
                    .chain(&s.closed)
                    .chain(&s.loop_turn.buckets)
                    .chain([&s.loop_turn.sum_ns, &s.loop_turn.count])
                    .chain([&s.uring.enters, &s.uring.enobufs, &s.uring.cq_overflow])
                    .chain([&s.uring.short_sends, &s.uring.stray_completions]);
                for counter in counters {
                    fill(&|v| counter.add(v));
                }
                for (index, u) in s.upstreams.iter().enumerate() {
                    let counters = [&u.requests, &u.connects, &u.latency.sum_us]
                        .into_iter()
                        .chain(&u.errors)
                        .chain(&u.fail_fast)
                        .chain(&u.latency.buckets)
                        .chain([&u.health_checks, &u.redirects]);
                    for counter in counters {
                        fill(&|v| counter.add(v));
                    }
                    let gauges = [
                        &u.conns_in_use,
                        &u.conns_idle,
                        &u.conns_connecting,
                        &u.queued,
                    ]
                    .into_iter()
                    .chain(u.transitions.iter().flatten());
                    for gauge in gauges {
                        fill(&|v| gauge.set(v));
                    }
                    u.breaker_state.set(index as u64 + 1);
                }
                Arc::new(s)
            })
            .collect();
        // Filled after the rest, so that the figures above keep their values.
        for s in &shards {
            for counter in [&s.memory_waits, &s.memory_wait_ms, &s.memory_overdraws] {
                fill(&|v| counter.add(v));
            }
            fill(&|v| s.memory_waiting.set(v));
        }
        let registry = Registry::new(shards, "uring");
        *registry.upstreams.lock().unwrap() = vec!["a:1".to_owned(), "b\\\"c".to_owned()];
        registry.config.reloads[ReloadResult::Applied.index()].store(2, Ordering::Relaxed);
        registry.config.reloads[ReloadResult::Refused.index()].store(1, Ordering::Relaxed);
        registry.config.generation.store(3, Ordering::Relaxed);
        *registry.config.sha256.lock().unwrap() = "e3b0c442".into();
        registry.ready.store(true, Ordering::Relaxed);
        registry.fds_other.store(5, Ordering::Relaxed);
        registry.ip_table_entries.store(7, Ordering::Relaxed);
        registry.buffer_memory.store(1 << 20, Ordering::Relaxed);
        registry
            .buffer_memory_limit
            .store(1 << 30, Ordering::Relaxed);
        registry
    }

    /// The whole exposition text of [`full_registry`], byte for byte, with
    /// only the values read from `/proc` (which change from run to run)
    /// replaced by `N`: pins the format against refactoring.
    #[test]
    fn full_text_unchanged() {
        let mut text = String::new();
        render(&full_registry(), &mut text);
        let masked: String = text
            .lines()
            .map(|line| match line.rsplit_once(' ') {
                Some((series, _))
                    if line.starts_with("process_")
                        || line.starts_with("holdfast_fd_unaccounted ") =>
                {
                    format!("{series} N\n")
                }
                _ => format!("{line}\n"),
            })
            .collect();
        let expected = include_str!("render_full.txt");
        // Line by line first, so a failure names the line rather than
        // printing 200 lines twice.
        for (number, (got, want)) in masked.lines().zip(expected.lines()).enumerate() {
            assert_eq!(got, want, "line {}", number + 1);
        }
        assert_eq!(masked, expected);
    }

    #[test]
    fn fd_unaccounted_subtracts_every_known_fd() {
        let registry = two_shards(); // 7 connections open
        registry.shards[0].fds_own.set(4);
        registry.shards[1].fds_own.set(4);
        registry.fds_other.store(6, Ordering::Relaxed);
        assert_eq!(fd_unaccounted(21, &registry), 0);
        assert_eq!(fd_unaccounted(23, &registry), 2);
        assert_eq!(fd_unaccounted(20, &registry), -1, "over-counting shows");
    }

    #[test]
    fn process_figures_read_on_linux() {
        let figures = ProcessFigures::read();
        // This test holds at least stdio open; the listing fd is excluded.
        assert!(figures.open_fds.is_some_and(|n| n >= 3), "{figures:?}");
        assert!(figures.max_fds.is_some_and(|n| n >= 3), "{figures:?}");
        assert!(
            figures.resident_memory_bytes.is_some_and(|n| n > 0),
            "{figures:?}"
        );
    }

    #[test]
    fn vm_rss_parsed_and_garbage_skipped() {
        let status = "Name:\tholdfast\nVmHWM:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
        assert_eq!(parse_vm_rss("Name:\tkernel-thread\n"), None);
    }
}
