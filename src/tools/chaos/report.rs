//! The outcome of a scan: a verdict per check with its evidence, shown as
//! a terminal report card, JSON for CI, or one self-contained HTML page
//! with charts of the server's fds, RSS and CPU over the run.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use super::Check;
use super::procfs::Sample;
use crate::engine::codec::Protocol;

/// What a check concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The server does not make this mistake (as far as the check sees).
    Pass,
    /// The server makes it; the evidence says how.
    Fail,
    /// The check could not decide (e.g. it needs `--pid`).
    CannotTell,
}

impl Verdict {
    /// As the card and the JSON spell it.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::CannotTell => "cannot tell",
        }
    }
}

/// One check's verdict and the numbers behind it.
#[derive(Clone, Debug)]
pub struct Finding {
    /// The check.
    pub check: Check,
    /// Its verdict.
    pub verdict: Verdict,
    /// The evidence, in numbers.
    pub evidence: String,
}

impl Finding {
    /// A pass.
    pub fn pass(check: Check, evidence: impl Into<String>) -> Finding {
        Finding {
            check,
            verdict: Verdict::Pass,
            evidence: evidence.into(),
        }
    }

    /// A fail.
    pub fn fail(check: Check, evidence: impl Into<String>) -> Finding {
        Finding {
            check,
            verdict: Verdict::Fail,
            evidence: evidence.into(),
        }
    }

    /// A cannot tell.
    pub fn unknown(check: Check, evidence: impl Into<String>) -> Finding {
        Finding {
            check,
            verdict: Verdict::CannotTell,
            evidence: evidence.into(),
        }
    }
}

/// A whole scan.
#[derive(Clone, Debug)]
pub struct Report {
    /// The server scanned.
    pub addr: SocketAddr,
    /// Its protocol.
    pub protocol: Protocol,
    /// `--pid`, when given.
    pub pid: Option<u32>,
    /// How long the scan took.
    pub elapsed: Duration,
    /// One per check run, in order.
    pub findings: Vec<Finding>,
    /// The server's figures over the scan (with `--pid`).
    pub samples: Vec<Sample>,
}

impl Report {
    /// The finding of `check`, if it ran.
    pub fn finding(&self, check: Check) -> Option<&Finding> {
        self.findings.iter().find(|f| f.check == check)
    }

    /// How many findings have `verdict`.
    pub fn count(&self, verdict: Verdict) -> usize {
        self.findings
            .iter()
            .filter(|f| f.verdict == verdict)
            .count()
    }

    /// The exit status for the command: 1 when any check failed, else 0
    /// ("cannot tell" is not a failure).
    pub fn exit_code(&self) -> i32 {
        i32::from(self.count(Verdict::Fail) > 0)
    }

    fn title(&self) -> String {
        let pid = self.pid.map_or(String::new(), |p| format!(", pid {p}"));
        format!(
            "holdfast chaos scan {} ({}{pid})",
            self.addr,
            self.protocol.name()
        )
    }

    fn totals(&self) -> String {
        format!(
            "{} passed, {} failed, {} cannot tell in {:.1} s",
            self.count(Verdict::Pass),
            self.count(Verdict::Fail),
            self.count(Verdict::CannotTell),
            self.elapsed.as_secs_f64()
        )
    }

    /// The terminal report card.
    pub fn to_text(&self) -> String {
        let mut out = format!("{}\n", self.title());
        for f in &self.findings {
            let mark = match f.verdict {
                Verdict::Pass => "PASS",
                Verdict::Fail => "FAIL",
                Verdict::CannotTell => "  ? ",
            };
            let _ = writeln!(out, "  {mark}  {:<11} {}", f.check.name(), f.evidence);
        }
        let _ = writeln!(out, "{}", self.totals());
        out
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        let findings: Vec<String> = self
            .findings
            .iter()
            .map(|f| {
                format!(
                    "{{\"check\":{},\"verdict\":{},\"evidence\":{}}}",
                    json_string(f.check.name()),
                    json_string(f.verdict.name()),
                    json_string(&f.evidence)
                )
            })
            .collect();
        let pid = self.pid.map_or("null".into(), |p| p.to_string());
        format!(
            "{{\"addr\":{},\"protocol\":{},\"pid\":{pid},\"elapsed_seconds\":{:.3},\
             \"passed\":{},\"failed\":{},\"cannot_tell\":{},\"findings\":[{}]}}\n",
            json_string(&self.addr.to_string()),
            json_string(self.protocol.name()),
            self.elapsed.as_secs_f64(),
            self.count(Verdict::Pass),
            self.count(Verdict::Fail),
            self.count(Verdict::CannotTell),
            findings.join(",")
        )
    }

    /// One self-contained page: the card as a table and, with samples,
    /// SVG charts of fds, RSS and CPU over the run.
    pub fn to_html(&self) -> String {
        let mut rows = String::new();
        for f in &self.findings {
            let _ = write!(
                rows,
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td></tr>",
                f.verdict.name().replace(' ', "-"),
                f.check.name(),
                f.verdict.name(),
                html_escape(&f.evidence)
            );
        }
        let charts = if self.samples.is_empty() {
            "<p>No charts: run with --pid to record the server's fds, RSS and CPU.</p>".into()
        } else {
            self.charts()
        };
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>\
             body{{font-family:sans-serif;margin:2em}}td{{padding:4px 10px;vertical-align:top}}\
             .pass td:nth-child(2){{color:#070}}.fail td:nth-child(2){{color:#b00;font-weight:bold}}\
             .cannot-tell td:nth-child(2){{color:#870}}svg{{border:1px solid #ccc;margin:8px 0}}\
             </style></head><body><h1>{title}</h1><p>{totals}</p><table>{rows}</table>{charts}\
             </body></html>\n",
            title = html_escape(&self.title()),
            totals = self.totals()
        )
    }

    fn charts(&self) -> String {
        let fds: Vec<f64> = self.samples.iter().map(|s| s.fds as f64).collect();
        let rss: Vec<f64> = self
            .samples
            .iter()
            .map(|s| s.rss as f64 / (1 << 20) as f64)
            .collect();
        // CPU as a share of one core between consecutive samples.
        let cpu: Vec<f64> = self
            .samples
            .windows(2)
            .map(|w| {
                let dt = (w[1].at - w[0].at).as_secs_f64().max(1e-3);
                100.0 * w[1].cpu.saturating_sub(w[0].cpu).as_secs_f64() / dt
            })
            .collect();
        let span = self.samples.last().map_or(0.0, |s| s.at.as_secs_f64());
        [
            chart("open fds", &fds, span),
            chart("RSS (MiB)", &rss, span),
            chart("CPU (% of one core)", &cpu, span),
        ]
        .concat()
    }
}

/// An SVG line chart of `values` evenly spread over `span` seconds.
fn chart(title: &str, values: &[f64], span: f64) -> String {
    const W: f64 = 800.0;
    const H: f64 = 160.0;
    let max = values.iter().cloned().fold(0.0_f64, f64::max).max(1e-9);
    let min = values.iter().cloned().fold(max, f64::min).min(0.0);
    let n = values.len().max(2) as f64 - 1.0;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = W * i as f64 / n;
            let y = H - H * (v - min) / (max - min).max(1e-9);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    format!(
        "<h2>{title}</h2><svg width=\"{W}\" height=\"{}\" viewBox=\"0 -10 {W} {}\">\
         <polyline fill=\"none\" stroke=\"#036\" stroke-width=\"1.5\" points=\"{}\"/>\
         <text x=\"4\" y=\"4\" font-size=\"11\">max {max:.1}</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{span:.1} s</text></svg>",
        H + 20.0,
        H + 20.0,
        points.join(" "),
        W - 4.0,
        H + 8.0
    )
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            addr: "127.0.0.1:7000".parse().unwrap(),
            protocol: Protocol::Line,
            pid: Some(42),
            elapsed: Duration::from_millis(1500),
            findings: vec![
                Finding::pass(Check::Split, "200 \"replies\" right"),
                Finding::fail(Check::Idle, "4/4 open after 3 s"),
            ],
            samples: Vec::new(),
        }
    }

    #[test]
    fn a_failure_makes_the_exit_status_non_zero() {
        let mut r = report();
        assert_eq!(r.exit_code(), 1);
        r.findings.pop();
        assert_eq!(r.exit_code(), 0);
    }

    #[test]
    fn json_escapes_the_evidence() {
        let json = report().to_json();
        assert!(
            json.contains(r#""evidence":"200 \"replies\" right""#),
            "{json}"
        );
        assert!(json.contains(r#""failed":1"#), "{json}");
    }

    #[test]
    fn card_names_each_check() {
        let text = report().to_text();
        assert!(text.contains("PASS  split"), "{text}");
        assert!(text.contains("FAIL  idle"), "{text}");
    }
}
