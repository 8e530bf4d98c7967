//! The result of a pub/sub run: rates, latency, the checks' counts, as
//! text for people or one JSON line.

use std::fmt::Write as _;
use std::time::Duration;

use super::super::{BenchOptions, json_escape, new_histogram};
use super::worker::Outcome;
use super::{Phases, Plan, PubSubOptions, missing};

/// What a pub/sub run measured.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The settings it ran with.
    pub options: BenchOptions,
    /// Connections established.
    pub connected: u64,
    /// Subscriptions confirmed before publishing started.
    pub subscribed: u64,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// PUBLISH commands answered in the measured window.
    pub published: u64,
    /// Messages received (intact, once) in the measured window.
    pub delivered: u64,
    /// PUBLISH commands answered over the whole run.
    pub published_total: u64,
    /// Messages received (intact, once) over the whole run.
    pub delivered_total: u64,
    /// Deliveries the answered PUBLISH commands owed (each counts its
    /// channel's subscribers).
    pub owed_total: u64,
    /// Messages owed and never received.
    pub missing: u64,
    /// Messages received twice.
    pub duplicates: u64,
    /// Messages received after a later one of the same publisher.
    pub out_of_order: u64,
    /// Messages whose payload was not what was sent.
    pub corrupt: u64,
    /// Messages on a channel (or pattern) not subscribed to.
    pub wrong_channel: u64,
    /// PUBLISH replies counting other than the channel's subscribers.
    pub receivers_mismatch: u64,
    /// Connections lost to errors.
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Publish-to-delivery latency percentiles in ns: p50, p99, p99.9, max.
    pub latency_nanos: [u64; 4],
    /// CPU time (user + system) `--server-pid` used in the measured window.
    pub server_cpu: Option<Duration>,
    /// How long connecting and subscribing took.
    pub connect_time: Duration,
    /// Connects refused and tried again.
    pub connect_retries: u64,
    /// How long the drain after the window took.
    pub drain_time: Duration,
}

impl Summary {
    /// Merges the threads' outcomes.
    pub fn new(
        options: &BenchOptions,
        plan: &Plan,
        phases: &Phases,
        outcomes: Vec<Outcome>,
    ) -> Result<Summary, String> {
        let mut histogram = new_histogram();
        let mut summary = Summary {
            options: options.clone(),
            connected: 0,
            subscribed: 0,
            elapsed: options.duration,
            published: 0,
            delivered: 0,
            published_total: 0,
            delivered_total: 0,
            owed_total: 0,
            missing: missing(&outcomes, plan),
            duplicates: 0,
            out_of_order: 0,
            corrupt: 0,
            wrong_channel: 0,
            receivers_mismatch: 0,
            errors: 0,
            first_error: None,
            latency_nanos: [0; 4],
            server_cpu: phases.server_cpu,
            connect_time: phases.connect_time,
            connect_retries: 0,
            drain_time: phases.drain_time,
        };
        for outcome in outcomes {
            histogram
                .add(&outcome.histogram)
                .map_err(|error| format!("merging histograms: {error}"))?;
            summary.add(outcome);
        }
        summary.latency_nanos = [
            histogram.value_at_quantile(0.5),
            histogram.value_at_quantile(0.99),
            histogram.value_at_quantile(0.999),
            histogram.max(),
        ];
        Ok(summary)
    }

    fn add(&mut self, outcome: Outcome) {
        let (subs, pubs) = (&outcome.subscribers, &outcome.publishers);
        self.connected += outcome.connected;
        self.subscribed += outcome.subscribed;
        self.connect_retries += outcome.retries;
        self.published += pubs.published_window;
        self.published_total += pubs.published_total;
        self.owed_total += pubs.owed_total;
        self.receivers_mismatch += pubs.receivers_mismatch;
        self.delivered += subs.delivered_window;
        self.delivered_total += subs.delivered_total;
        self.duplicates += subs.duplicates;
        self.out_of_order += subs.out_of_order;
        self.corrupt += subs.corrupt;
        self.wrong_channel += subs.wrong_channel;
        self.errors += outcome.errors;
        self.first_error = self.first_error.take().or(outcome.first_error);
    }

    fn pubsub(&self) -> PubSubOptions {
        self.options.pubsub.clone().unwrap_or_default()
    }

    /// Whether every check passed: no error, every message owed received
    /// once, in order, intact, on its channel, every receiver count right.
    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

    /// The checks that failed, with their counts.
    pub fn failures(&self) -> Vec<(&'static str, u64)> {
        [
            ("errors", self.errors),
            ("missing", self.missing),
            ("duplicates", self.duplicates),
            ("out_of_order", self.out_of_order),
            ("corrupt", self.corrupt),
            ("wrong_channel", self.wrong_channel),
            ("receivers_mismatch", self.receivers_mismatch),
        ]
        .into_iter()
        .filter(|&(_, count)| count > 0)
        .collect()
    }

    fn per_second(&self, count: u64) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            count as f64 / seconds
        } else {
            0.0
        }
    }

    /// Server CPU time per message delivered in the window, when measured.
    pub fn server_cpu_per_message(&self) -> Option<Duration> {
        let cpu = self.server_cpu?;
        let delivered = u32::try_from(self.delivered).ok().filter(|&n| n > 0);
        match delivered {
            Some(n) => Some(cpu / n),
            None if self.delivered > 0 => Some(Duration::from_secs_f64(
                cpu.as_secs_f64() / self.delivered as f64,
            )),
            None => None,
        }
    }

    /// The summary as one JSON object on one line (latencies in µs).
    pub fn to_json(&self) -> String {
        let fields: Vec<String> = self
            .json_fields()
            .into_iter()
            .map(|(key, value)| format!("\"{key}\":{value}"))
            .collect();
        format!("{{{}}}", fields.join(","))
    }

    fn json_fields(&self) -> Vec<(&'static str, String)> {
        let o = &self.options;
        let p = self.pubsub();
        let micros = |nanos: u64| format!("{:.1}", nanos as f64 / 1000.0);
        let mut fields = vec![
            ("mode", "\"pubsub\"".to_string()),
            ("target", format!("\"{}\"", o.target)),
            ("subscribers", p.subscribers.to_string()),
            ("subscribed", self.subscribed.to_string()),
            ("publishers", p.publishers.to_string()),
            ("channels", p.channels.to_string()),
            ("pattern", p.pattern.to_string()),
            ("size", o.size.to_string()),
            ("pipeline", o.pipeline.to_string()),
            ("rate", p.rate.to_string()),
            ("threads", o.threads.to_string()),
            ("idle", o.idle.to_string()),
            ("seconds", format!("{:.3}", self.elapsed.as_secs_f64())),
            ("published", self.published.to_string()),
            (
                "published_per_s",
                format!("{:.1}", self.per_second(self.published)),
            ),
            ("delivered", self.delivered.to_string()),
            (
                "delivered_per_s",
                format!("{:.1}", self.per_second(self.delivered)),
            ),
            ("p50_us", micros(self.latency_nanos[0])),
            ("p99_us", micros(self.latency_nanos[1])),
            ("p999_us", micros(self.latency_nanos[2])),
            ("max_us", micros(self.latency_nanos[3])),
            ("published_total", self.published_total.to_string()),
            ("delivered_total", self.delivered_total.to_string()),
            ("owed_total", self.owed_total.to_string()),
            ("missing", self.missing.to_string()),
            ("duplicates", self.duplicates.to_string()),
            ("out_of_order", self.out_of_order.to_string()),
            ("corrupt", self.corrupt.to_string()),
            ("wrong_channel", self.wrong_channel.to_string()),
            ("receivers_mismatch", self.receivers_mismatch.to_string()),
            ("errors", self.errors.to_string()),
            ("passed", self.passed().to_string()),
            ("connected", self.connected.to_string()),
            (
                "connect_s",
                format!("{:.3}", self.connect_time.as_secs_f64()),
            ),
            ("connect_retries", self.connect_retries.to_string()),
            ("drain_s", format!("{:.3}", self.drain_time.as_secs_f64())),
        ];
        if let Some(cpu) = self.server_cpu {
            fields.push(("server_cpu_s", format!("{:.3}", cpu.as_secs_f64())));
        }
        if let Some(per) = self.server_cpu_per_message() {
            let us = per.as_secs_f64() * 1e6;
            fields.push(("server_cpu_us_per_msg", format!("{us:.4}")));
        }
        if let Some(error) = &self.first_error {
            fields.push(("first_error", format!("\"{}\"", json_escape(error))));
        }
        fields
    }

    /// The summary for people, several lines.
    pub fn to_text(&self) -> String {
        let o = &self.options;
        let p = self.pubsub();
        let pace = match p.rate {
            0 => format!("flat out, {} in flight each", o.pipeline),
            rate => format!("{rate} msg/s in all"),
        };
        let mut text = format!(
            "holdfast bench --pubsub: {}, {} {}subscribers ({} confirmed) on {} channel{}, {} publisher{} {}, {} B, {} thread{}, {:.1}s measured\n",
            o.target,
            p.subscribers,
            if p.pattern { "pattern " } else { "" },
            self.subscribed,
            p.channels,
            plural(p.channels),
            p.publishers,
            plural(p.publishers),
            pace,
            o.size,
            o.threads,
            plural(o.threads),
            self.elapsed.as_secs_f64(),
        );
        let _ = writeln!(
            text,
            "connect   {:.3} s for all connections and subscriptions ({} refused and retried), then {:.1} s warm-up",
            self.connect_time.as_secs_f64(),
            self.connect_retries,
            o.warmup.as_secs_f64()
        );
        if o.idle {
            let _ = writeln!(
                text,
                "idle      {} subscribed connections held for {:.1} s, nothing published",
                self.subscribed,
                self.elapsed.as_secs_f64()
            );
        } else {
            self.load_lines(&mut text);
        }
        let _ = write!(text, "errors    {}", self.errors);
        if let Some(error) = &self.first_error {
            let _ = write!(text, " (first: {error})");
        }
        text.push('\n');
        if !self.passed() {
            let failed: Vec<String> = self
                .failures()
                .iter()
                .map(|(name, count)| format!("{name} {count}"))
                .collect();
            let _ = writeln!(text, "FAILED    {}", failed.join(", "));
        }
        text
    }

    /// The lines of a run that published: rates, latency, CPU, checks.
    fn load_lines(&self, text: &mut String) {
        let p = self.pubsub();
        let micros = |nanos: u64| format!("{:.1} µs", nanos as f64 / 1000.0);
        let published = self.per_second(self.published);
        let _ = writeln!(text, "published {} ({published:.0}/s)", self.published);
        if p.rate > 0 && published < 0.95 * p.rate as f64 {
            let _ = writeln!(
                text,
                "WARNING   the publishers fell behind --rate {} (the server, or this client, could not keep up)",
                p.rate
            );
        }
        let _ = writeln!(
            text,
            "delivered {} ({:.0}/s)",
            self.delivered,
            self.per_second(self.delivered)
        );
        let _ = writeln!(
            text,
            "latency   p50 {}  p99 {}  p99.9 {}  max {} (publish to delivery)",
            micros(self.latency_nanos[0]),
            micros(self.latency_nanos[1]),
            micros(self.latency_nanos[2]),
            micros(self.latency_nanos[3]),
        );
        if let Some(cpu) = self.server_cpu {
            let per = self.server_cpu_per_message().unwrap_or_default();
            let _ = writeln!(
                text,
                "server    {:.3} s CPU, {:.3} µs per delivered message",
                cpu.as_secs_f64(),
                per.as_secs_f64() * 1e6
            );
        }
        let _ = writeln!(
            text,
            "checked   {} delivered of {} owed over the run (drain {:.3} s): missing {}, duplicates {}, out of order {}, corrupt {}, wrong channel {}, wrong receiver counts {}",
            self.delivered_total,
            self.owed_total,
            self.drain_time.as_secs_f64(),
            self.missing,
            self.duplicates,
            self.out_of_order,
            self.corrupt,
            self.wrong_channel,
            self.receivers_mismatch,
        );
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        Summary {
            options: BenchOptions {
                pubsub: Some(PubSubOptions::default()),
                ..BenchOptions::default()
            },
            connected: 101,
            subscribed: 100,
            elapsed: Duration::from_secs(2),
            published: 1000,
            delivered: 100_000,
            published_total: 1200,
            delivered_total: 120_000,
            owed_total: 120_000,
            missing: 0,
            duplicates: 0,
            out_of_order: 0,
            corrupt: 0,
            wrong_channel: 0,
            receivers_mismatch: 0,
            errors: 0,
            first_error: None,
            latency_nanos: [10_000, 99_000, 999_500, 2_000_000],
            server_cpu: Some(Duration::from_millis(100)),
            connect_time: Duration::from_millis(20),
            connect_retries: 0,
            drain_time: Duration::from_millis(3),
        }
    }

    #[test]
    fn json_line_exactly() {
        let expected = r#"{"mode":"pubsub","target":"127.0.0.1:7000","subscribers":100,"subscribed":100,"publishers":1,"channels":1,"pattern":false,"size":64,"pipeline":1,"rate":0,"threads":1,"idle":false,"seconds":2.000,"published":1000,"published_per_s":500.0,"delivered":100000,"delivered_per_s":50000.0,"p50_us":10.0,"p99_us":99.0,"p999_us":999.5,"max_us":2000.0,"published_total":1200,"delivered_total":120000,"owed_total":120000,"missing":0,"duplicates":0,"out_of_order":0,"corrupt":0,"wrong_channel":0,"receivers_mismatch":0,"errors":0,"passed":true,"connected":101,"connect_s":0.020,"connect_retries":0,"drain_s":0.003,"server_cpu_s":0.100,"server_cpu_us_per_msg":1.0000}"#;
        assert_eq!(summary().to_json(), expected);
    }

    #[test]
    fn any_failed_check_fails_the_run_and_is_named() {
        assert!(summary().passed());
        let text = summary().to_text();
        assert!(text.contains("delivered 100000 (50000/s)"), "{text}");
        assert!(text.contains("1.000 µs per delivered message"), "{text}");
        assert!(!text.contains("FAILED"), "{text}");
        let set: [fn(&mut Summary); 7] = [
            |s| s.errors = 1,
            |s| s.missing = 1,
            |s| s.duplicates = 1,
            |s| s.out_of_order = 1,
            |s| s.corrupt = 1,
            |s| s.wrong_channel = 1,
            |s| s.receivers_mismatch = 1,
        ];
        for change in set {
            let mut bad = summary();
            change(&mut bad);
            assert!(!bad.passed());
            assert!(bad.to_json().contains("\"passed\":false"));
            assert!(bad.to_text().contains("FAILED    "), "{}", bad.to_text());
        }
    }
}
