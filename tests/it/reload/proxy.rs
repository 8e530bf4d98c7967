//! `holdfast proxy`'s upstream list changed by SIGHUP under a RESP load,
//! in front of real redis-servers: an upstream added, then one removed.
//! No client sees an error; a key gets another server only where ketama
//! moves it (checked on the redis-servers themselves); the removed
//! server's connections drain and close.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use holdfast::apps::proxy::hash::{Continuum, KeyHash};
use nix::sys::signal::Signal;

use crate::util::{self, ConfigFile, Redis, Resp, Server, wait_until};

/// Keys written through the proxy.
pub(super) const KEYS: usize = 600;
/// Load-generating clients, each with its own connection.
const CLIENTS: usize = 3;
/// GETs each client keeps in flight.
const PIPELINE: usize = 16;

pub(super) fn key(i: usize) -> String {
    format!("{i}:key")
}

pub(super) fn bulk(value: &str) -> Vec<u8> {
    format!("${}\r\n{value}\r\n", value.len()).into_bytes()
}

pub(super) const NIL: &[u8] = b"$-1\r\n";

/// A config file's `upstreams = [...]` line, after an upstream timeout
/// long enough that a machine busy with other builds cannot make a reply
/// late (what is under test is where requests go, not their deadline: a
/// request lost would still hang its client past its read timeout).
pub(super) fn upstreams(servers: &[&Redis]) -> String {
    let names: Vec<String> = servers
        .iter()
        .map(|r| format!("\"{}\"", r.name()))
        .collect();
    format!(
        "upstream-timeout = \"5s\"\nupstreams = [{}]\n",
        names.join(", ")
    )
}

/// Where ketama puts `key` among `servers`: its index there.
pub(super) fn owner(servers: &[&Redis], key: &str) -> usize {
    let names: Vec<String> = servers.iter().map(|r| r.name()).collect();
    Continuum::new(&names, KeyHash::Murmur)
        .unwrap()
        .upstream(key.as_bytes())
}

/// Sets every key to `prefix{i}` through the proxy.
pub(super) fn set_all(proxy: &Server, prefix: &str) {
    let mut client = Resp::connect(proxy.addr);
    for i in 0..KEYS {
        let value = format!("{prefix}{i}");
        client.send(&[b"SET", key(i).as_bytes(), value.as_bytes()]);
    }
    for _ in 0..KEYS {
        assert_eq!(client.reply(), b"+OK\r\n");
    }
}

/// Asserts that each key holds `prefix{i}` on its ketama owner among
/// `servers` (asked directly), and returns those owners.
pub(super) fn assert_placed(servers: &[&Redis], prefix: &str) -> Vec<usize> {
    let mut clients: Vec<Resp> = servers.iter().map(|r| r.client()).collect();
    (0..KEYS)
        .map(|i| {
            let at = owner(servers, &key(i));
            let got = clients[at].call(&[b"GET", key(i).as_bytes()]);
            assert_eq!(
                got,
                bulk(&format!("{prefix}{i}")),
                "{} on {}",
                key(i),
                servers[at].name()
            );
            at
        })
        .collect()
}

/// Whether a GET of key number `i` may have been answered with `reply`.
type Right = Arc<dyn Fn(usize, &[u8]) -> bool + Send + Sync>;

/// What the load saw.
#[derive(Default, Debug)]
struct Seen {
    replies: usize,
    nils: usize,
    /// Replies no ring could give: `(key, reply)`.
    wrong: Vec<(String, String)>,
}

/// Clients GET random keys, `PIPELINE` in flight each, until `stop`; a
/// reply is right if it is `right(i, reply)`.
fn load(
    proxy: &Server,
    stop: &Arc<AtomicBool>,
    right: Right,
) -> Vec<std::thread::JoinHandle<Seen>> {
    (0..CLIENTS)
        .map(|n| {
            let (stop, right, addr) = (stop.clone(), right.clone(), proxy.addr);
            std::thread::spawn(move || {
                let mut client = Resp::connect(addr);
                let mut seen = Seen::default();
                let mut next = n * 7919;
                while !stop.load(Ordering::Relaxed) {
                    let batch: Vec<usize> = (0..PIPELINE).map(|j| (next + j * 31) % KEYS).collect();
                    next += PIPELINE * 13 + 1;
                    for &i in &batch {
                        client.send(&[b"GET", key(i).as_bytes()]);
                    }
                    for &i in &batch {
                        let reply = client.reply();
                        seen.replies += 1;
                        seen.nils += usize::from(reply == NIL);
                        if !right(i, &reply) {
                            let reply = String::from_utf8_lossy(&reply).into_owned();
                            seen.wrong.push((key(i), reply));
                        }
                    }
                }
                seen
            })
        })
        .collect()
}

/// Runs the load while `change` happens, then a while after; returns
/// what every client saw.
fn under_load(proxy: &Server, right: Right, change: impl FnOnce()) -> Seen {
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(proxy, &stop, right);
    std::thread::sleep(Duration::from_millis(300));
    change();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let mut all = Seen::default();
    for client in clients {
        let seen = client.join().expect("a load client");
        all.replies += seen.replies;
        all.nils += seen.nils;
        all.wrong.extend(seen.wrong);
    }
    all
}

/// Rewrites the file, sends SIGHUP and waits for the generation.
fn reload(proxy: &Server, file: &ConfigFile, contents: &str, generation: f64) {
    file.write(contents);
    proxy.signal(Signal::SIGHUP);
    proxy.wait_metric(
        "holdfast_config_generation",
        &[],
        generation,
        Duration::from_secs(5),
    );
}

#[test]
fn upstreams_added_and_removed_under_load_move_only_the_ketama_share() {
    let (a, b, c) = (Redis::start(), Redis::start(), Redis::start());
    let file = ConfigFile::new("reload-proxy", &upstreams(&[&a, &b]));
    let proxy = Server::start_proxy(&["--config", file.path(), "--threads", "2"]);
    set_all(&proxy, "v");
    let first = assert_placed(&[&a, &b], "v");

    // Add c. A key not moved to c is still found; one moved reads nil
    // (c is empty: the proxy moves no data).
    let abc: Vec<usize> = (0..KEYS).map(|i| owner(&[&a, &b, &c], &key(i))).collect();
    let moved_to_c = {
        let abc = abc.clone();
        move |i: usize, reply: &[u8]| {
            reply == bulk(&format!("v{i}")) || (reply == NIL && abc[i] == 2)
        }
    };
    let seen = under_load(&proxy, Arc::new(moved_to_c), || {
        reload(&proxy, &file, &upstreams(&[&a, &b, &c]), 2.0)
    });
    eprintln!(
        "adding an upstream: {} replies, {} nil",
        seen.replies, seen.nils
    );
    assert!(
        seen.wrong.is_empty(),
        "wrong replies: {:?}",
        &seen.wrong[..seen.wrong.len().min(10)]
    );
    assert!(seen.nils > 0, "no GET reached the added upstream");
    // Where keys land now, asked of the redis-servers: each where ketama
    // over three puts it; only keys that went to c changed server.
    set_all(&proxy, "u");
    let second = assert_placed(&[&a, &b, &c], "u");
    let moved = (0..KEYS).filter(|&i| second[i] != first[i]).count();
    assert!(
        (0..KEYS).all(|i| second[i] == first[i] || second[i] == 2),
        "a key moved between a and b"
    );
    let share = moved as f64 / KEYS as f64;
    eprintln!("{moved} of {KEYS} keys moved to the added upstream ({share:.2})");
    assert!(
        (0.15..0.5).contains(&share),
        "{share} of the keys moved, ketama moves about 1/3"
    );

    // Remove b: its keys read nil on their new owner; every other key is
    // still found; requests in flight to b are answered.
    let on_b = move |i: usize, reply: &[u8]| {
        reply == bulk(&format!("u{i}")) || (reply == NIL && abc[i] == 1)
    };
    // With the log level raised in the same reload (live too), to see the
    // removed upstream's connections close.
    let removed = format!("{}log-level = \"debug\"\n", upstreams(&[&a, &c]));
    let seen = under_load(&proxy, Arc::new(on_b), || {
        reload(&proxy, &file, &removed, 3.0)
    });
    eprintln!(
        "removing an upstream: {} replies, {} nil",
        seen.replies, seen.nils
    );
    assert!(
        seen.wrong.is_empty(),
        "wrong replies: {:?}",
        &seen.wrong[..seen.wrong.len().min(10)]
    );
    let b_keys = b.client().call(&[b"DBSIZE"]);
    set_all(&proxy, "w");
    let third = assert_placed(&[&a, &c], "w");
    for i in 0..KEYS {
        let (before, after) = ([0, 1, 2][second[i]], [0, 2][third[i]]);
        assert!(
            before == 1 || before == after,
            "{} moved from {before} to {after}",
            key(i)
        );
    }
    assert_eq!(
        b.client().call(&[b"DBSIZE"]),
        b_keys,
        "b was written after its removal"
    );
    // b's connections drained and closed.
    let closed = wait_until(Duration::from_secs(5), || b.connected_clients() == 0);
    assert!(
        closed,
        "{} connections to the removed upstream",
        b.connected_clients()
    );
    // And stay closed: nothing (a health check every 2 s, say) connects
    // to it again. The second count's own connection is the one more.
    let received = b.stat("total_connections_received");
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        b.stat("total_connections_received"),
        received + 1,
        "the removed upstream was connected to again"
    );
    let log = proxy.stderr_text();
    let applied = "reload applied: generation 3; changed log-level Info -> Debug, upstreams";
    assert!(log.contains(applied), "{log}");
    let drained = format!(
        "upstream {}: removed by a reload; closing a drained connection",
        b.name()
    );
    assert!(log.contains(&drained), "{log}");
    assert_eq!(
        proxy.metric("holdfast_config_reloads_total", &[("result", "applied")]),
        2.0
    );
}

/// `--upstream-slots` (0: twice the upstreams at start) bounds the
/// upstreams reloads may add over the process's life; past it a reload is
/// invalid and changes nothing. A removed upstream keeps its slot, and
/// gets it back when added again.
#[test]
fn upstream_slots_bound_what_reloads_may_add() {
    let names: Vec<String> = (0..4)
        .map(|_| format!("127.0.0.1:{}", util::free_port()))
        .collect();
    let list = |picked: &[usize]| {
        let quoted: Vec<String> = picked
            .iter()
            .map(|&i| format!("\"{}\"", names[i]))
            .collect();
        format!("upstreams = [{}]\n", quoted.join(", "))
    };
    let file = ConfigFile::new("reload-slots", &list(&[0]));
    let proxy = Server::start_proxy(&["--config", file.path()]);
    let post = |contents: &str| {
        file.write(contents);
        util::http_post(proxy.admin(), "/reload")
    };
    // Two slots: the first upstream's and one more.
    assert_eq!(post(&list(&[0, 1])).0, 200);
    // Removing one keeps its slot: a third name finds none.
    assert_eq!(post(&list(&[1])).0, 200);
    let (status, body) = post(&list(&[1, 2]));
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("no slot left for 127.0.0.1:"), "{body}");
    // The removed one comes back to its own slot.
    assert_eq!(post(&list(&[0, 1])).0, 200);
    let (status, _) = post(&list(&[0, 1, 3]));
    assert_eq!(status, 422);
    assert_eq!(proxy.metric("holdfast_config_generation", &[]), 4.0);
    // The shards are still there and serve.
    let mut client = Resp::connect(proxy.addr);
    assert_eq!(client.call(&[b"PING"]), b"+PONG\r\n");
}
