//! The server's own figures from `/proc/PID`: open descriptors, resident
//! memory and CPU time, and a sampler that records them over a scan for the
//! HTML charts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Interval of the [`Sampler`].
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// The most samples kept (about 17 minutes at 100 ms; later ones are
/// dropped, so memory is bounded however long a scan runs).
pub const SAMPLES_MAX: usize = 10_000;

/// A local process whose figures are read on demand.
#[derive(Clone, Debug)]
pub struct Proc {
    /// Its id.
    pub pid: u32,
}

impl Proc {
    /// `pid`, if its `/proc` entries can be read.
    pub fn open(pid: u32) -> Result<Proc, String> {
        let proc = Proc { pid };
        proc.fds()
            .map_err(|e| format!("--pid: cannot read /proc/{pid}/fd: {e}"))?;
        Ok(proc)
    }

    /// Open descriptors.
    pub fn fds(&self) -> std::io::Result<u64> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.pid))?.count() as u64)
    }

    /// Resident memory in bytes (`VmRSS`).
    pub fn rss(&self) -> std::io::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .ok_or_else(|| std::io::Error::other("no VmRSS (a zombie?)"))
    }

    /// User + system CPU time so far.
    pub fn cpu(&self) -> std::io::Result<Duration> {
        crate::tools::bench::process_cpu(self.pid)
    }

    /// Whether the process is still running (not gone, not a zombie).
    pub fn alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).is_ok_and(|stat| {
            let state = stat[stat.rfind(')').map_or(0, |i| i + 1)..].trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
    }

    /// The descriptor count once it has held still for `settle` (at most
    /// `timeout`): a baseline not caught mid-close.
    pub fn settled_fds(&self, settle: Duration, timeout: Duration) -> std::io::Result<u64> {
        let deadline = Instant::now() + timeout;
        let mut last = self.fds()?;
        let mut since = Instant::now();
        while since.elapsed() < settle && Instant::now() < deadline {
            std::thread::sleep(super::probe::POLL);
            let now = self.fds()?;
            if now != last {
                last = now;
                since = Instant::now();
            }
        }
        Ok(last)
    }
}

/// One reading of the server's figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Since the scan started.
    pub at: Duration,
    /// Open descriptors.
    pub fds: u64,
    /// Resident bytes.
    pub rss: u64,
    /// CPU time used so far.
    pub cpu: Duration,
}

/// Records a [`Sample`] every [`SAMPLE_EVERY`] on its own thread.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Starts sampling `proc`.
    pub fn start(proc: Proc) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) && samples.len() < SAMPLES_MAX {
                if let (Ok(fds), Ok(rss), Ok(cpu)) = (proc.fds(), proc.rss(), proc.cpu()) {
                    let at = start.elapsed();
                    samples.push(Sample { at, fds, rss, cpu });
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
            samples
        });
        Sampler { stop, thread }
    }

    /// Stops and returns the samples.
    pub fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}
