//! A reload and a binary upgrade in one run, under a RESP load through
//! `holdfast proxy` in front of real redis-servers: the old process adds
//! an upstream by SIGHUP, a new process takes its listeners (and reads the
//! same file), then the new one removes an upstream by SIGHUP. Clients see
//! no refused or reset connection and no wrong reply; requests a closing
//! connection had not answered are sent again on a new one (GET is safe
//! to repeat), as a client does on any restart.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::proxy::{KEYS, NIL, bulk, key, owner, set_all, upstreams};
use crate::util::{self, ConfigFile, Redis, Server, resp3};

/// What the clients saw, summed.
#[derive(Default)]
struct Tally {
    replies: AtomicU64,
    nils: AtomicU64,
    wrong: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    /// Connections closed (FIN) under a client by the draining process.
    cut: AtomicU64,
    /// Requests sent again after such a close.
    resent: AtomicU64,
    /// What the connection errors were, for the report.
    errors: std::sync::Mutex<Vec<String>>,
}

/// One RESP reply; `Err` when the connection ends first.
fn reply(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(len) = resp3::frame_len(buffer) {
            return Ok(buffer.drain(..len).collect());
        }
        match stream.read(&mut chunk)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

fn connect(addr: SocketAddr, tally: &Tally) -> Option<TcpStream> {
    match TcpStream::connect_timeout(&addr, util::IO_TIMEOUT) {
        Ok(stream) => {
            stream.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
            Some(stream)
        }
        Err(error) => {
            tally.refused.fetch_add(1, Ordering::Relaxed);
            tally
                .errors
                .lock()
                .unwrap()
                .push(format!("connect: {error}"));
            None
        }
    }
}

/// GETs `keys` on `stream`, pipelined; the indexes not answered when the
/// connection ended (`Err`: it ended) are left in `keys`.
fn exchange(
    stream: &mut TcpStream,
    keys: &mut Vec<usize>,
    tally: &Tally,
    right: &Right,
) -> io::Result<()> {
    let mut bytes = Vec::new();
    for &i in keys.iter() {
        holdfast::engine::codec::resp::encode_command(&[b"GET", key(i).as_bytes()], &mut bytes);
    }
    stream.write_all(&bytes)?;
    let mut buffer = Vec::new();
    while let Some(&i) = keys.first() {
        let got = reply(stream, &mut buffer)?;
        keys.remove(0);
        tally.replies.fetch_add(1, Ordering::Relaxed);
        tally
            .nils
            .fetch_add(u64::from(got == NIL), Ordering::Relaxed);
        if !right(i, &got) {
            eprintln!(
                "wrong reply to GET {}: {:?}",
                key(i),
                String::from_utf8_lossy(&got)
            );
            tally.wrong.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

type Right = Arc<dyn Fn(usize, &[u8]) -> bool + Send + Sync>;

/// A client: 16 GETs in flight, again and again, until `stop`; after a
/// close it reconnects and sends the unanswered ones again.
fn client(addr: SocketAddr, n: usize, stop: Arc<AtomicBool>, tally: Arc<Tally>, right: Right) {
    let Some(mut stream) = connect(addr, &tally) else {
        return;
    };
    let mut next = n * 7919;
    while !stop.load(Ordering::Relaxed) {
        let mut keys: Vec<usize> = (0..16).map(|j| (next + j * 31) % KEYS).collect();
        next += 16 * 13 + 1;
        while let Err(error) = exchange(&mut stream, &mut keys, &tally, &right) {
            match error.kind() {
                io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe => {
                    tally.cut.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    tally.reset.fetch_add(1, Ordering::Relaxed);
                    let unanswered = keys.len();
                    let mut errors = tally.errors.lock().unwrap();
                    errors.push(format!("{error} ({unanswered} of the batch unanswered)"));
                }
            }
            tally.resent.fetch_add(keys.len() as u64, Ordering::Relaxed);
            let Some(again) = connect(addr, &tally) else {
                return;
            };
            stream = again;
        }
    }
}

fn start(file: &ConfigFile, socket: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--config",
        file.path(),
        "--threads",
        "2",
        "--upgrade-socket",
        socket,
    ];
    args.extend_from_slice(extra);
    Server::start_proxy(&args)
}

#[test]
fn upstreams_changed_before_and_after_a_binary_upgrade_under_load() {
    let (a, b, c) = (Redis::start(), Redis::start(), Redis::start());
    let socket =
        std::env::temp_dir().join(format!("holdfast-it-reload-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let socket = socket.to_str().unwrap().to_string();
    let file = ConfigFile::new("reload-upgrade", &upstreams(&[&a, &b]));
    let mut old = start(&file, &socket, &[]);
    set_all(&old, "v");
    let ab: Vec<usize> = (0..KEYS).map(|i| owner(&[&a, &b], &key(i))).collect();
    let abc: Vec<usize> = (0..KEYS).map(|i| owner(&[&a, &b, &c], &key(i))).collect();
    // Nil only for a key moved to c (empty) or away from b (removed).
    let right: Right = Arc::new(move |i, got| {
        got == bulk(&format!("v{i}")) || (got == NIL && (abc[i] == 2 || ab[i] == 1))
    });
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..3)
        .map(|n| {
            let (stop, tally, right, addr) = (stop.clone(), tally.clone(), right.clone(), old.addr);
            std::thread::spawn(move || client(addr, n, stop, tally, right))
        })
        .collect();
    let settle = Duration::from_secs(5);
    std::thread::sleep(Duration::from_millis(300));
    file.write(&upstreams(&[&a, &b, &c]));
    old.signal(Signal::SIGHUP);
    old.wait_metric("holdfast_config_generation", &[], 2.0, settle);
    std::thread::sleep(Duration::from_millis(300));
    let new = start(&file, &socket, &["--upgrade-from", &socket]);
    assert_eq!(new.addr, old.addr);
    let status = old
        .wait_exit(Duration::from_secs(12))
        .expect("the old process exits");
    assert!(status.success(), "{status}");
    std::thread::sleep(Duration::from_millis(300));
    file.write(&upstreams(&[&a, &c]));
    new.signal(Signal::SIGHUP);
    new.wait_metric("holdfast_config_generation", &[], 2.0, settle);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("a load client");
    }
    let t = |c: &AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "reload + upgrade under load: {} replies ({} nil), {} wrong, {} refused, {} reset, \
         {} connections closed under a client, {} requests resent",
        t(&tally.replies),
        t(&tally.nils),
        t(&tally.wrong),
        t(&tally.refused),
        t(&tally.reset),
        t(&tally.cut),
        t(&tally.resent)
    );
    let errors = tally.errors.lock().unwrap().clone();
    assert_eq!(t(&tally.wrong), 0, "wrong replies");
    assert_eq!(t(&tally.refused), 0, "connections refused: {errors:?}");
    assert_eq!(t(&tally.reset), 0, "connections reset: {errors:?}");
    assert!(t(&tally.nils) > 0, "no GET reached the added upstream");
    let served = new.metric("holdfast_connections_accepted_total", &[]);
    assert!(served >= 1.0, "the new process served the load");
    // Every key where ketama over a and c puts it, on the servers.
    set_all(&new, "w");
    super::proxy::assert_placed(&[&a, &c], "w");
    let closed = util::wait_until(settle, || b.connected_clients() == 0);
    assert!(
        closed,
        "{} connections to the removed upstream",
        b.connected_clients()
    );
    let _ = std::fs::remove_file(&socket);
}
