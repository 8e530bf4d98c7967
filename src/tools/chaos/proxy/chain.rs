//! One direction of one connection: the bytes read from its source, put
//! through the toxics of its stream, wait in a bounded queue of segments,
//! each with the instant it may be written.
//!
//! A toxic is a function from segments to segments (delaying, splitting,
//! truncating, dropping them, or adding an end), applied once to each read
//! as it arrives; nothing in here does I/O or reads the clock, so the
//! release times are exact and the link (`link.rs`) only has to write what
//! is due. Release times never go backwards along the queue, so a later
//! read is never written before an earlier one (as in Toxiproxy, whose
//! toxics pass chunks along channels in order).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::toxic::{Kind, Stream, ToxicSpec};

/// What a queued segment costs beyond its bytes (its bookkeeping), so that
/// a slicer cutting a read into one-byte pieces is held to the bound too.
pub const SEGMENT_OVERHEAD: usize = 64;

/// The longest delay any attribute can ask for: a day (a larger value
/// would overflow an `Instant`; nobody waits longer in a test).
const DELAY_MAX_MS: i64 = 86_400_000;

/// How a direction ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The source sent its FIN: shut the destination's write side.
    Half,
    /// Close the whole connection (limit_data, a timeout).
    Whole,
    /// Close the whole connection with a reset (reset_peer).
    Reset,
}

#[derive(Clone, Debug)]
pub enum Item {
    /// `buf[start..end]`.
    Data {
        buf: Arc<[u8]>,
        start: usize,
        end: usize,
    },
    End(End),
}

/// An item and the instant it may be written.
#[derive(Clone, Debug)]
pub struct Seg {
    pub at: Instant,
    pub item: Item,
}

impl Seg {
    pub fn data(at: Instant, buf: Arc<[u8]>, start: usize, end: usize) -> Seg {
        Seg {
            at,
            item: Item::Data { buf, start, end },
        }
    }

    pub fn end(at: Instant, end: End) -> Seg {
        Seg {
            at,
            item: Item::End(end),
        }
    }

    fn len(&self) -> usize {
        match &self.item {
            Item::Data { start, end, .. } => end - start,
            Item::End(_) => 0,
        }
    }

    fn cost(&self) -> usize {
        self.len() + SEGMENT_OVERHEAD
    }
}

/// A small xorshift generator: jitter, slice sizes, toxicity rolls.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn millis(value: i64) -> Duration {
    Duration::from_millis(value.clamp(0, DELAY_MAX_MS) as u64)
}

/// A toxic as one direction of one connection runs it.
pub struct Active {
    pub name: String,
    pub revision: u64,
    pub spec: ToxicSpec,
    /// The toxicity roll came out in favour: the toxic applies.
    pub on: bool,
    /// bandwidth and slicer: when the last piece they let through left.
    free: Option<Instant>,
    /// limit_data: bytes let through.
    sent: u64,
    /// limit_data and reset_peer: the end is already sent.
    fired: bool,
}

impl Active {
    fn new(spec: &ToxicSpec, rng: &mut Rng) -> Active {
        Active {
            name: spec.name.clone(),
            revision: spec.revision,
            spec: spec.clone(),
            on: rng.unit() < spec.toxicity,
            free: None,
            sent: 0,
            fired: false,
        }
    }

    /// What a toxic does as it starts (on a new connection, or when added):
    /// a timeout with a duration schedules its close.
    fn on_start(&self, now: Instant) -> Option<Seg> {
        let timeout = self.spec.attr("timeout");
        (self.on && self.spec.kind == Kind::Timeout && timeout > 0)
            .then(|| Seg::end(now + millis(timeout), End::Whole))
    }

    fn apply(&mut self, segs: Vec<Seg>, now: Instant, rng: &mut Rng) -> Vec<Seg> {
        if !self.on {
            return segs;
        }
        match self.spec.kind {
            Kind::Noop => segs,
            Kind::Latency => self.latency(segs, rng),
            Kind::Bandwidth => self.bandwidth(segs),
            Kind::Slicer => self.slicer(segs, rng),
            Kind::Timeout => segs
                .into_iter()
                .filter(|s| matches!(s.item, Item::End(_)))
                .collect(),
            Kind::ResetPeer => self.reset_peer(segs, now),
            Kind::LimitData => self.limit_data(segs),
            Kind::SlowClose => self.slow_close(segs),
        }
    }

    /// Every read is held `latency ± jitter` ms after it arrived (one draw
    /// per read, as Toxiproxy draws one per chunk); ends are not delayed.
    fn latency(&mut self, mut segs: Vec<Seg>, rng: &mut Rng) -> Vec<Seg> {
        let mut delay = self.spec.attr("latency");
        let jitter = self.spec.attr("jitter").clamp(0, DELAY_MAX_MS);
        if jitter > 0 {
            delay += rng.below(2 * jitter as u64) as i64 - jitter;
        }
        for seg in segs.iter_mut().filter(|s| s.len() > 0) {
            seg.at += millis(delay);
        }
        segs
    }

    /// `rate` KB/s (bytes per millisecond): each piece of at most 10 ms
    /// worth leaves when the previous one is through plus its own time.
    fn bandwidth(&mut self, segs: Vec<Seg>) -> Vec<Seg> {
        let rate = self.spec.attr("rate");
        if rate <= 0 {
            return segs;
        }
        let piece = (rate as usize).saturating_mul(10).max(1);
        let mut out = Vec::with_capacity(segs.len());
        for seg in segs {
            let Item::Data { buf, start, end } = seg.item else {
                out.push(seg);
                continue;
            };
            for from in (start..end).step_by(piece) {
                let to = (from + piece).min(end);
                let began = self.free.map_or(seg.at, |free| free.max(seg.at));
                let took = Duration::from_nanos((to - from) as u64 * 1_000_000 / rate as u64);
                let at = began + took;
                self.free = Some(at);
                out.push(Seg::data(at, buf.clone(), from, to));
            }
        }
        out
    }

    /// Cuts each read as Toxiproxy's slicer does (halving until a piece is
    /// within `size_variation` of `average_size`, the halves moved by up to
    /// `size_variation`), one piece every `delay` microseconds.
    fn slicer(&mut self, segs: Vec<Seg>, rng: &mut Rng) -> Vec<Seg> {
        let average = self.spec.attr("average_size").max(1) as usize;
        let variation = self.spec.attr("size_variation").max(0) as usize;
        let delay = Duration::from_micros(self.spec.attr("delay").clamp(0, DELAY_MAX_MS) as u64);
        let mut out = Vec::new();
        for seg in segs {
            let Item::Data { buf, start, end } = seg.item else {
                out.push(seg);
                continue;
            };
            let mut cuts = Vec::new();
            cut(start, end, average, variation, rng, &mut cuts);
            let mut at = self.free.map_or(seg.at, |free| free.max(seg.at));
            for (from, to) in cuts {
                out.push(Seg::data(at, buf.clone(), from, to));
                at += delay;
            }
            self.free = Some(at);
        }
        out
    }

    /// On its first input, a reset `timeout` ms later; everything it is
    /// given is dropped.
    fn reset_peer(&mut self, _segs: Vec<Seg>, now: Instant) -> Vec<Seg> {
        if self.fired {
            return Vec::new();
        }
        self.fired = true;
        vec![Seg::end(
            now + millis(self.spec.attr("timeout")),
            End::Reset,
        )]
    }

    /// Lets `bytes` through, then closes the connection.
    fn limit_data(&mut self, segs: Vec<Seg>) -> Vec<Seg> {
        let limit = self.spec.attr("bytes").max(0) as u64;
        let mut out = Vec::new();
        for seg in segs {
            if self.fired {
                break;
            }
            if let Item::Data { buf, start, end } = &seg.item {
                let room = limit.saturating_sub(self.sent) as usize;
                let take = room.min(end - start);
                if take > 0 {
                    out.push(Seg::data(seg.at, buf.clone(), *start, start + take));
                    self.sent += take as u64;
                }
                if self.sent >= limit {
                    self.fired = true;
                    out.push(Seg::end(seg.at, End::Whole));
                }
            } else {
                out.push(seg);
            }
        }
        out
    }

    /// Holds the end (the source's FIN) `delay` ms.
    fn slow_close(&mut self, mut segs: Vec<Seg>) -> Vec<Seg> {
        let delay = millis(self.spec.attr("delay"));
        for seg in segs.iter_mut() {
            if matches!(seg.item, Item::End(_)) {
                seg.at += delay;
            }
        }
        segs
    }
}

/// Toxiproxy's `SlicerToxic.chunk`: the pieces of `start..end`.
fn cut(
    start: usize,
    end: usize,
    average: usize,
    variation: usize,
    rng: &mut Rng,
    out: &mut Vec<(usize, usize)>,
) {
    if (end - start).saturating_sub(average) <= variation || end - start <= 1 {
        out.push((start, end));
        return;
    }
    let mut mid = start + (end - start) / 2;
    if variation > 0 {
        let shift = rng.below(2 * variation as u64) as isize - variation as isize;
        mid = (mid as isize + shift).clamp(start as isize + 1, end as isize - 1) as usize;
    }
    cut(start, mid, average, variation, rng, out);
    cut(mid, end, average, variation, rng, out);
}

/// One direction of a connection.
pub struct Pipe {
    pub stream: Stream,
    toxics: Vec<Active>,
    queue: VecDeque<Seg>,
    /// Bytes plus [`SEGMENT_OVERHEAD`] per segment queued.
    /// Invariant: at most the bound plus one read's worth (see `room`).
    pub charged: usize,
    /// The release time of the last segment queued.
    last_at: Option<Instant>,
    /// An end is queued: nothing more is queued (what is read is dropped,
    /// as Toxiproxy's toxics drop it, until the end is carried out).
    pub ended: bool,
    /// The source sent its FIN: nothing more is read.
    pub eof: bool,
    /// Its `End::Half` was carried out: the destination's write side is shut.
    pub done: bool,
}

impl Pipe {
    pub fn new(stream: Stream, toxics: &[ToxicSpec], now: Instant, rng: &mut Rng) -> Pipe {
        let mut pipe = Pipe {
            stream,
            toxics: Vec::new(),
            queue: VecDeque::new(),
            charged: 0,
            last_at: None,
            ended: false,
            eof: false,
            done: false,
        };
        pipe.set_toxics(toxics, now, rng);
        pipe
    }

    /// Takes the proxy's toxics of this stream: unchanged ones keep their
    /// state, changed ones roll their toxicity again (limit_data keeps its
    /// count), new ones start now.
    pub fn set_toxics(&mut self, toxics: &[ToxicSpec], now: Instant, rng: &mut Rng) {
        let mut old = std::mem::take(&mut self.toxics);
        let stream = self.stream;
        for spec in toxics.iter().filter(|t| t.stream == stream) {
            let kept = old.iter().position(|a| a.name == spec.name);
            let active = match kept.map(|i| old.swap_remove(i)) {
                Some(active) if active.revision == spec.revision => active,
                Some(previous) => {
                    let mut active = Active::new(spec, rng);
                    active.sent = previous.sent;
                    self.started(&active, now, rng);
                    active
                }
                None => {
                    let active = Active::new(spec, rng);
                    self.started(&active, now, rng);
                    active
                }
            };
            self.toxics.push(active);
        }
    }

    /// Queues what `active` does as it starts (a timeout's close).
    fn started(&mut self, active: &Active, now: Instant, rng: &mut Rng) {
        if let Some(seg) = active.on_start(now) {
            self.feed_from(self.toxics.len(), vec![seg], now, rng);
        }
    }

    /// How many bytes one read may take now: what is left of `bound`,
    /// shrunk for the pieces the toxics will cut it into.
    pub fn room(&self, bound: usize) -> usize {
        if self.eof {
            return 0;
        }
        if self.ended {
            return bound;
        }
        let left = bound.saturating_sub(self.charged);
        let piece = self.smallest_piece();
        if piece >= left {
            return left.saturating_sub(SEGMENT_OVERHEAD);
        }
        left / (piece + SEGMENT_OVERHEAD) * piece
    }

    /// The smallest piece an active toxic cuts a read into.
    fn smallest_piece(&self) -> usize {
        let piece = |active: &Active| match active.spec.kind {
            Kind::Slicer => {
                let average = active.spec.attr("average_size").max(1);
                (average - active.spec.attr("size_variation").max(0)).max(1) as usize / 2
            }
            Kind::Bandwidth if active.spec.attr("rate") > 0 => {
                (active.spec.attr("rate") as usize).saturating_mul(10)
            }
            _ => usize::MAX,
        };
        let on = self.toxics.iter().filter(|a| a.on);
        on.map(piece).min().unwrap_or(usize::MAX).clamp(1, 1 << 20)
    }

    /// A read of `buf` arrived at `now` (empty: the source's FIN).
    pub fn read(&mut self, buf: &[u8], now: Instant, rng: &mut Rng) {
        let seg = if buf.is_empty() {
            self.eof = true;
            Seg::end(now, End::Half)
        } else {
            Seg::data(now, Arc::from(buf), 0, buf.len())
        };
        self.feed_from(0, vec![seg], now, rng);
    }

    fn feed_from(&mut self, from: usize, mut segs: Vec<Seg>, now: Instant, rng: &mut Rng) {
        for active in &mut self.toxics[from..] {
            segs = active.apply(segs, now, rng);
        }
        for mut seg in segs {
            if self.ended {
                break;
            }
            if let Some(last) = self.last_at {
                seg.at = seg.at.max(last);
            }
            self.last_at = Some(seg.at);
            self.ended = matches!(seg.item, Item::End(_));
            self.charged += seg.cost();
            self.queue.push_back(seg);
        }
    }

    /// The first segment, if it is due at `now`.
    pub fn due(&self, now: Instant) -> Option<&Seg> {
        self.queue.front().filter(|seg| seg.at <= now)
    }

    /// When the first segment falls due, if it is not yet.
    pub fn next_at(&self, now: Instant) -> Option<Instant> {
        self.queue.front().map(|seg| seg.at).filter(|at| *at > now)
    }

    /// `n` bytes of the first segment were written.
    pub fn consume(&mut self, n: usize) {
        let Some(front) = self.queue.front_mut() else {
            return;
        };
        let whole = match &mut front.item {
            Item::Data { start, end, .. } => {
                *start += n;
                start == end
            }
            Item::End(_) => true,
        };
        self.charged -= n;
        if whole {
            self.charged -= SEGMENT_OVERHEAD;
            self.queue.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(body: &str) -> ToxicSpec {
        ToxicSpec::from_json(body.as_bytes(), 1).unwrap()
    }

    fn drain(pipe: &mut Pipe) -> Vec<(Duration, usize)> {
        let mut out = Vec::new();
        let t0 = pipe.queue.front().map(|s| s.at).unwrap();
        while let Some(seg) = pipe.queue.front().cloned() {
            out.push((seg.at - t0, seg.len()));
            pipe.consume(seg.len());
        }
        out
    }

    #[test]
    fn slicer_pieces_within_average_plus_variation() {
        let toxic = spec(
            r#"{"type":"slicer","attributes":{"average_size":10,"size_variation":3,"delay":100}}"#,
        );
        let now = Instant::now();
        let mut rng = Rng::new(7);
        let mut pipe = Pipe::new(Stream::Downstream, &[toxic], now, &mut rng);
        pipe.read(&[1; 1000], now, &mut rng);
        let pieces = drain(&mut pipe);
        assert!(pieces.iter().all(|(_, len)| *len <= 13 && *len >= 1));
        assert_eq!(pieces.iter().map(|p| p.1).sum::<usize>(), 1000);
        assert_eq!(pipe.charged, 0);
    }

    #[test]
    fn limit_data_truncates_then_ends() {
        let toxic = spec(r#"{"type":"limit_data","attributes":{"bytes":5}}"#);
        let now = Instant::now();
        let mut rng = Rng::new(7);
        let mut pipe = Pipe::new(Stream::Downstream, &[toxic], now, &mut rng);
        pipe.read(&[1; 3], now, &mut rng);
        pipe.read(&[1; 3], now, &mut rng);
        assert!(pipe.ended);
        pipe.read(&[1; 3], now, &mut rng);
        let lens: Vec<_> = drain(&mut pipe).into_iter().map(|p| p.1).collect();
        assert_eq!(lens, vec![3, 2, 0]);
    }
}
