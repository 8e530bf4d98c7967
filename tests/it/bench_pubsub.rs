//! `holdfast bench --pubsub` against a real `redis-server` started here:
//! every message delivered and accounted for, by SUBSCRIBE and PSUBSCRIBE,
//! flat out and at a fixed rate, idle subscribers held subscribed, and a
//! server without SUBSCRIBE failing the run loudly.
//!
//! The checker's own test needs a server that loses, repeats, reorders,
//! corrupts and misroutes messages on purpose; no real one does that on
//! demand, so [`Fake`] is a small pub/sub server written here for that
//! purpose only (Redis's framing, one thread per connection, one fault).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::util::{Redis, run_to_exit};

/// A run's bound: the load, the connect phase and the drain.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The value of `"key":` in a flat JSON line.
fn field(json: &str, key: &str) -> f64 {
    let start = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + key.len()
        + 3;
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end].trim_matches('"').parse().unwrap()
}

/// `holdfast bench --pubsub --target ADDR --json FLAGS...`: its exit code,
/// its one JSON line (empty if none) and its stderr.
fn bench(addr: SocketAddr, flags: &[&str]) -> (i32, String, String) {
    let target = addr.to_string();
    let mut args = vec!["bench", "--pubsub", "--target", &target, "--json"];
    args.extend_from_slice(flags);
    let (status, stdout, stderr) = run_to_exit(&args, RUN_TIMEOUT);
    let status = status.unwrap_or_else(|| panic!("bench did not finish: {stderr}"));
    assert!(stdout.lines().count() <= 1, "{stdout}");
    (status.code().unwrap(), stdout.trim().to_string(), stderr)
}

/// A redis-server the load can reach from every source address it uses
/// (127.0.0.1 to 127.0.0.250: protected mode would take 127.0.0.1 only).
fn redis() -> Redis {
    Redis::start_with(&["--protected-mode", "no"])
}

/// `calls=` of `cmdstat_NAME` in the server's INFO commandstats (0 when
/// the command was never called).
fn calls(redis: &Redis, name: &str) -> u64 {
    let info = redis.client().call(&[b"INFO", b"commandstats"]);
    let text = String::from_utf8_lossy(&info);
    let prefix = format!("cmdstat_{name}:calls=");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

fn assert_every_check_passed(json: &str) {
    for key in [
        "missing",
        "duplicates",
        "out_of_order",
        "corrupt",
        "wrong_channel",
        "receivers_mismatch",
        "errors",
    ] {
        assert_eq!(field(json, key), 0.0, "{key} in {json}");
    }
    assert!(json.contains("\"passed\":true"), "{json}");
}

#[test]
fn flat_out_against_redis_every_message_reaches_every_subscriber_once() {
    let redis = redis();
    let (code, json, stderr) = bench(
        redis.addr(),
        &[
            "--subscribers",
            "60",
            "--channels",
            "3",
            "--publishers",
            "2",
            "--pipeline",
            "4",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
        ],
    );
    assert_eq!(code, 0, "{json} {stderr}");
    assert_every_check_passed(&json);
    assert_eq!(field(&json, "subscribed"), 60.0, "{json}");
    let published = field(&json, "published_total");
    assert!(field(&json, "delivered") > 0.0, "{json}");
    // Redis counted the same PUBLISH commands, and each of the 3 channels
    // has 20 subscribers: every message owed 20 deliveries, all came.
    assert_eq!(published as u64, calls(&redis, "publish"), "{json}");
    assert_eq!(field(&json, "owed_total"), published * 20.0, "{json}");
    assert_eq!(field(&json, "delivered_total"), published * 20.0, "{json}");
    assert!(field(&json, "p99_us") > 0.0, "{json}");
}

#[test]
fn a_publisher_waiting_on_another_threads_subscriber_is_woken_by_its_deliveries() {
    // Two threads, one connection each: the subscriber (index 0) on the
    // first, the publisher on the second. With one message in flight the
    // publisher waits for each delivery, which the other thread counts;
    // without a wake-up it would sleep out its 100 ms poll each time (10
    // messages a second at most).
    let redis = redis();
    let (code, json, stderr) = bench(
        redis.addr(),
        &[
            "--subscribers",
            "1",
            "--publishers",
            "1",
            "--threads",
            "2",
            "--duration",
            "1s",
            "--warmup",
            "0s",
        ],
    );
    assert_eq!(code, 0, "{json} {stderr}");
    assert_every_check_passed(&json);
    assert!(field(&json, "published_per_s") > 100.0, "{json}");
}

#[test]
fn by_pattern_at_a_fixed_rate_on_two_threads_against_redis() {
    let redis = redis();
    let (code, json, stderr) = bench(
        redis.addr(),
        &[
            "--psubscribe",
            "--subscribers",
            "20",
            "--channels",
            "2",
            "--publishers",
            "2",
            "--rate",
            "500",
            "--threads",
            "2",
            "--duration",
            "1s",
            "--warmup",
            "0s",
        ],
    );
    assert_eq!(code, 0, "{json} {stderr}");
    assert_every_check_passed(&json);
    assert_eq!(calls(&redis, "psubscribe"), 20);
    assert_eq!(calls(&redis, "subscribe"), 0);
    // 500 messages a second for one second, within a generous margin.
    let rate = field(&json, "published_per_s");
    assert!((300.0..=700.0).contains(&rate), "{json}");
    let published = field(&json, "published_total");
    assert_eq!(field(&json, "delivered_total"), published * 10.0, "{json}");
}

#[test]
fn idle_subscribers_stay_subscribed_for_the_duration() {
    let redis = redis();
    let target = redis.addr().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["bench", "--pubsub", "--idle", "--target", &target])
        .args(["--subscribers", "50", "--channels", "5"])
        .args(["--duration", "3s", "--warmup", "0s", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.next().expect("a line on stderr").unwrap();
    assert_eq!(line, "holding 50 subscribed idle connections (0 errors)");
    let mut client = redis.client();
    let mut command: Vec<Vec<u8>> = vec![b"PUBSUB".to_vec(), b"NUMSUB".to_vec()];
    command.extend((0..5).map(|c| format!("hfbench:{c:06}").into_bytes()));
    let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
    let reply = String::from_utf8(client.call(&args)).unwrap();
    for c in 0..5 {
        assert!(
            reply.contains(&format!("$14\r\nhfbench:{c:06}\r\n:10\r\n")),
            "{reply}"
        );
    }
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(status.success(), "{stdout}");
    assert_eq!(field(&stdout, "subscribed"), 50.0, "{stdout}");
    assert_eq!(field(&stdout, "published_total"), 0.0, "{stdout}");
}

#[test]
fn a_server_that_refuses_subscribe_fails_the_run_with_its_reply() {
    // A real Redis with SUBSCRIBE renamed away answers as a server without
    // pub/sub does: an error reply.
    let redis = Redis::start_with(&[
        "--protected-mode",
        "no",
        "--rename-command",
        "SUBSCRIBE",
        "\"\"",
    ]);
    let (code, json, stderr) = bench(redis.addr(), &["--subscribers", "10"]);
    assert_eq!(code, 1, "{json} {stderr}");
    assert_eq!(json, "");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "holdfast: bench --pubsub: the server refused SUBSCRIBE: -ERR unknown command 'SUBSCRIBE'"
        ),
        "{stderr}"
    );
    assert_eq!(calls(&redis, "publish"), 0);
}

/// What [`Fake`] does wrong, to one delivery in [`Fake::EVERY`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Nothing: it delivers every message as Redis would.
    None,
    /// Leaves it out.
    Drop,
    /// Sends it twice.
    Duplicate,
    /// Holds it back until after that subscriber's next message.
    Delay,
    /// Flips a bit of its payload, past the header.
    Corrupt,
    /// Names another channel in it.
    Misroute,
    /// Answers its PUBLISH with one receiver too many (every PUBLISH).
    Receivers,
}

/// A pub/sub server with Redis's RESP2 framing for SUBSCRIBE, PUBLISH and
/// messages, that commits `fault`; for testing the checker only.
struct Fake {
    addr: SocketAddr,
    /// Deliveries the fault hit.
    hits: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// A subscriber's socket, and the message held back from it.
type Subscriber = Arc<Mutex<(TcpStream, Option<Vec<u8>>)>>;

impl Fake {
    /// One delivery in this many is hit (the first one hit is the 7th).
    const EVERY: u64 = 50;

    fn start(fault: Fault) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let channels: Arc<Mutex<HashMap<Vec<u8>, Vec<Subscriber>>>> = Arc::default();
        let deliveries = Arc::new(AtomicU64::new(0));
        let (hits2, stop2) = (hits.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let state = (channels.clone(), deliveries.clone(), hits2.clone());
                std::thread::spawn(move || serve(stream, fault, state));
            }
        });
        Fake { addr, hits, stop }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// One command: its arguments, `None` at the end of the stream.
fn read_command(reader: &mut impl BufRead) -> Option<Vec<Vec<u8>>> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|&n| n > 0)?;
    let count: usize = line.trim().strip_prefix('*')?.parse().ok()?;
    let mut args = Vec::new();
    for _ in 0..count {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let len: usize = line.trim().strip_prefix('$')?.parse().ok()?;
        let mut arg = vec![0u8; len + 2];
        reader.read_exact(&mut arg).ok()?;
        arg.truncate(len);
        args.push(arg);
    }
    Some(args)
}

fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

type FakeState = (
    Arc<Mutex<HashMap<Vec<u8>, Vec<Subscriber>>>>,
    Arc<AtomicU64>,
    Arc<AtomicU64>,
);

/// Serves one connection: SUBSCRIBE registers it, PUBLISH fans out.
fn serve(stream: TcpStream, fault: Fault, (channels, deliveries, hits): FakeState) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream.try_clone().unwrap();
    while let Some(args) = read_command(&mut reader) {
        let mut reply = Vec::new();
        match args[0].to_ascii_uppercase().as_slice() {
            b"SUBSCRIBE" => {
                let me = Arc::new(Mutex::new((stream.try_clone().unwrap(), None)));
                let mut channels = channels.lock().unwrap();
                channels.entry(args[1].clone()).or_default().push(me);
                reply.extend_from_slice(b"*3\r\n");
                bulk(&mut reply, b"subscribe");
                bulk(&mut reply, &args[1]);
                reply.extend_from_slice(b":1\r\n");
            }
            b"PUBLISH" => {
                let subscribers = channels.lock().unwrap().get(&args[1]).cloned();
                let subscribers = subscribers.unwrap_or_default();
                for subscriber in &subscribers {
                    let n = deliveries.fetch_add(1, Ordering::SeqCst);
                    let hit =
                        n % Fake::EVERY == 7 && !matches!(fault, Fault::None | Fault::Receivers);
                    if hit {
                        hits.fetch_add(1, Ordering::SeqCst);
                    }
                    deliver(subscriber, &args[1], &args[2], hit.then_some(fault));
                }
                let extra = usize::from(fault == Fault::Receivers);
                reply.extend_from_slice(format!(":{}\r\n", subscribers.len() + extra).as_bytes());
            }
            _ => reply.extend_from_slice(b"-ERR unknown command\r\n"),
        }
        if writer.write_all(&reply).is_err() {
            return;
        }
    }
}

/// Sends one message to `subscriber`, doing `fault` to it.
fn deliver(subscriber: &Subscriber, channel: &[u8], payload: &[u8], fault: Option<Fault>) {
    let frame = |channel: &[u8], payload: &[u8]| {
        let mut out = b"*3\r\n".to_vec();
        bulk(&mut out, b"message");
        bulk(&mut out, channel);
        bulk(&mut out, payload);
        out
    };
    let mut message = frame(channel, payload);
    let mut guard = subscriber.lock().unwrap();
    let (socket, held) = &mut *guard;
    match fault {
        Some(Fault::Drop) => return,
        Some(Fault::Duplicate) => message.extend_from_within(..),
        Some(Fault::Delay) => {
            *held = Some(message);
            return;
        }
        Some(Fault::Corrupt) => {
            let mut bad = payload.to_vec();
            bad[40] ^= 1;
            message = frame(channel, &bad);
        }
        Some(Fault::Misroute) => message = frame(b"hfbench:999999", payload),
        Some(Fault::None | Fault::Receivers) | None => {}
    }
    if let Some(late) = held.take() {
        message.extend_from_slice(&late);
    }
    let _ = socket.write_all(&message);
}

/// Runs the load against a fake committing `fault`: 20 subscribers on 2
/// channels, `publishers` publishers at 2000 msg/s in all for 1 s.
/// Returns the exit code, the JSON line and how many deliveries the fault
/// hit.
fn against_fake(fault: Fault, publishers: &str) -> (i32, String, u64) {
    let fake = Fake::start(fault);
    let (code, json, stderr) = bench(
        fake.addr,
        &[
            "--subscribers",
            "20",
            "--channels",
            "2",
            "--publishers",
            publishers,
            "--rate",
            "2000",
            "--duration",
            "1s",
            "--warmup",
            "0s",
        ],
    );
    assert!(!json.is_empty(), "{stderr}");
    assert!(field(&json, "delivered_total") > 1000.0, "{json}");
    (code, json, fake.hits.load(Ordering::SeqCst))
}

/// [`against_fake`], which must fail the run: any failed check does.
fn failed_against_fake(fault: Fault, publishers: &str) -> (String, u64) {
    let (code, json, hits) = against_fake(fault, publishers);
    assert_eq!(code, 1, "{json}");
    assert!(json.contains("\"passed\":false"), "{json}");
    (json, hits)
}

#[test]
fn the_fake_without_a_fault_passes() {
    // The counts below come from the faults, not from the fake itself.
    let (code, json, hits) = against_fake(Fault::None, "2");
    assert_eq!((code, hits), (0, 0), "{json}");
    assert_every_check_passed(&json);
}

#[test]
fn checker_counts_every_message_a_server_lost() {
    let (json, dropped) = failed_against_fake(Fault::Drop, "2");
    assert!(dropped > 10, "{dropped}");
    assert_eq!(field(&json, "missing"), dropped as f64, "{json}");
    assert_eq!(field(&json, "duplicates"), 0.0, "{json}");
    assert_eq!(field(&json, "out_of_order"), 0.0, "{json}");
    assert_eq!(field(&json, "errors"), 0.0, "{json}");
}

#[test]
fn checker_counts_duplicates() {
    let (json, duplicated) = failed_against_fake(Fault::Duplicate, "2");
    assert!(duplicated > 10, "{duplicated}");
    assert_eq!(field(&json, "duplicates"), duplicated as f64, "{json}");
    assert_eq!(field(&json, "missing"), 0.0, "{json}");
}

#[test]
fn checker_counts_messages_out_of_order() {
    // One publisher: a subscriber's next message is the successor of the
    // one held back (with two it may come from the other publisher, whose
    // order it does not break).
    let (json, delayed) = failed_against_fake(Fault::Delay, "1");
    assert!(delayed > 10, "{delayed}");
    // Each one held back arrives after its successor, unless the run ended
    // (or another was held back from that subscriber) first: then it is
    // missing instead.
    let late = field(&json, "out_of_order") + field(&json, "missing");
    assert_eq!(late, delayed as f64, "{json}");
    assert!(
        field(&json, "out_of_order") >= delayed as f64 - 20.0,
        "{json}"
    );
    assert_eq!(field(&json, "duplicates"), 0.0, "{json}");
}

#[test]
fn checker_counts_corrupt_payloads() {
    let (json, corrupted) = failed_against_fake(Fault::Corrupt, "2");
    assert!(corrupted > 10, "{corrupted}");
    assert_eq!(field(&json, "corrupt"), corrupted as f64, "{json}");
    // A corrupt message is not a delivery: it is missing too.
    assert_eq!(field(&json, "missing"), corrupted as f64, "{json}");
}

#[test]
fn checker_counts_messages_on_the_wrong_channel() {
    let (json, misrouted) = failed_against_fake(Fault::Misroute, "2");
    assert!(misrouted > 10, "{misrouted}");
    assert_eq!(field(&json, "wrong_channel"), misrouted as f64, "{json}");
    assert_eq!(field(&json, "missing"), misrouted as f64, "{json}");
}

#[test]
fn checker_counts_wrong_receiver_counts() {
    let (json, _) = failed_against_fake(Fault::Receivers, "2");
    let published = field(&json, "published_total");
    assert_eq!(field(&json, "receivers_mismatch"), published, "{json}");
    assert_eq!(field(&json, "missing"), 0.0, "{json}");
}
