//! A counting global allocator for the allocation tests (`echo.rs`,
//! `proxy.rs`): it wraps the system allocator and counts allocations
//! and reallocations while `COUNTING` is set; with `TRACE` also set, the
//! first few are kept with a backtrace.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Counts allocations (and reallocations) while `COUNTING` is set.
struct Counting;

pub static COUNTING: AtomicBool = AtomicBool::new(false);
pub static TRACE: AtomicBool = AtomicBool::new(false);
pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Backtraces of the first allocations in the window (with TRACE).
pub static TRACES: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Backtraces kept.
const TRACES_MAX: usize = 4;

thread_local! {
    /// Set while this thread captures a backtrace, whose own allocations
    /// must not be counted or traced again.
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

fn counted() {
    if !COUNTING.load(Ordering::Relaxed) {
        return;
    }
    if TRACING.with(Cell::get) {
        return;
    }
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    if TRACE.load(Ordering::Relaxed) {
        TRACING.with(|tracing| tracing.set(true));
        let trace = std::backtrace::Backtrace::force_capture().to_string();
        if let Ok(mut traces) = TRACES.lock() {
            if traces.len() < TRACES_MAX {
                traces.push(trace);
            }
        }
        TRACING.with(|tracing| tracing.set(false));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments,
// so `System`'s guarantees hold unchanged; the counting touches only
// atomics and a thread-local flag.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted();
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Held by each test for its whole run: the count is process-wide, so two
/// tests counting at once would count each other's allocations.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Turns tracing on when `HOLDFAST_ALLOC_TRACE` is set, and forgets the
/// backtraces of earlier tests.
pub fn trace_if_asked() {
    TRACE.store(
        std::env::var_os("HOLDFAST_ALLOC_TRACE").is_some(),
        Ordering::SeqCst,
    );
    TRACES.lock().unwrap().clear();
}

/// The settings every counted server starts from: one shard on a free
/// loopback port, no admin endpoint, no logging (a log line allocates).
pub fn server_config(protocol: holdfast::engine::codec::Protocol) -> holdfast::config::Config {
    holdfast::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: None,
        threads: 1,
        protocol,
        log_level: log::LevelFilter::Off,
        ..holdfast::config::Config::default()
    }
}
