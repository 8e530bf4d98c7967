//! `holdfast proxy --cluster` in front of a real Redis Cluster (six
//! `redis-server`s the test starts, three primaries with a replica each):
//! keys land where `CLUSTER KEYSLOT` says, multi-key commands are split by
//! slot, a slot moved under a running client (`-ASK` while it migrates,
//! `-MOVED` once it has, a whole `redis-cli --cluster reshard`) costs the
//! client nothing, and a failover is followed.

use crate::util;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use holdfast::apps::proxy::cluster::slot::slot;
use util::cluster::Cluster;
use util::{Resp, Server};

fn proxy(cluster: &Cluster, extra: &[&str]) -> Server {
    let seed = cluster.seed();
    let mut args = vec!["--cluster", seed.as_str()];
    args.extend(extra);
    Server::start_proxy(&args)
}

fn bulk(value: &str) -> Vec<u8> {
    format!("${}\r\n{value}\r\n", value.len()).into_bytes()
}

pub(crate) fn redirects(server: &Server) -> f64 {
    let scrape = server.scrape();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "holdfast_upstream_redirects_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[test]
fn keys_land_on_their_slots_node_and_multi_key_commands_split_by_slot() {
    let cluster = Cluster::start();
    let server = proxy(&cluster, &[]);
    let mut client = Resp::connect(server.addr);
    for i in 0..300 {
        let (key, value) = (format!("key:{i}"), format!("value-{i}"));
        assert_eq!(
            client.call(&[b"SET", key.as_bytes(), value.as_bytes()]),
            b"+OK\r\n"
        );
        let (owner, _) = cluster.owner(slot(key.as_bytes()));
        let direct = cluster.client(owner).call(&[b"GET", key.as_bytes()]);
        assert_eq!(direct, bulk(&value), "{key} is on the node its slot says");
    }
    // Keys in three slots (on different nodes): split per slot, merged.
    let keys: Vec<String> = (0..50).map(|i| format!("key:{i}")).collect();
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(keys.iter().map(|k| k.as_bytes()));
    let reply = client.call(&mget);
    let mut expected = b"*50\r\n".to_vec();
    for i in 0..50 {
        expected.extend(bulk(&format!("value-{i}")));
    }
    assert_eq!(reply, expected);
    assert_eq!(
        client.call(&[b"DEL", b"key:1", b"key:2", b"key:3", b"nope"]),
        b":3\r\n"
    );
    // Keys that must run together: Redis's own error, unless tagged.
    assert_eq!(
        client.call(&[b"RENAME", b"key:4", b"key:5"]),
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert_eq!(client.call(&[b"SET", b"{u}a", b"1"]), b"+OK\r\n");
    assert_eq!(client.call(&[b"RENAME", b"{u}a", b"{u}b"]), b"+OK\r\n");
    assert_eq!(client.call(&[b"GET", b"{u}b"]), bulk("1"));
    let hello = String::from_utf8(client.call(&[b"HELLO", b"2"])).unwrap();
    assert!(hello.contains("$4\r\nmode\r\n$7\r\ncluster\r\n"), "{hello}");

    // Client libraries and tools, as they connect by default.
    use redis::Commands;
    let url = format!("redis://{}/", server.addr);
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let () = con.set("crate:key", "crate value").unwrap();
    let value: String = con.get("crate:key").unwrap();
    assert_eq!(value, "crate value");
    let values: Vec<String> = con.mget(&["key:10", "key:20", "crate:key"]).unwrap();
    assert_eq!(values, ["value-10", "value-20", "crate value"]);
    let port = server.addr.port().to_string();
    let cli = Command::new("redis-cli")
        .args(["-p", &port, "GET", "key:7"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&cli.stdout), "value-7\n");
    let bench = Command::new("redis-benchmark")
        .args([
            "-p",
            &port,
            "-t",
            "set,get,mset",
            "-n",
            "3000",
            "-c",
            "8",
            "-r",
            "1000",
            "-q",
        ])
        .output()
        .expect("redis-benchmark (make deps installs redis-tools)");
    let said = String::from_utf8_lossy(&bench.stdout).to_string()
        + &String::from_utf8_lossy(&bench.stderr);
    assert!(bench.status.success(), "{said}");
    assert!(!said.to_lowercase().contains("error"), "{said}");
    assert_eq!(said.matches("requests per second").count(), 3, "{said}");
}

/// Moves `slot` from its primary to `to` as `redis-cli --cluster reshard`
/// does, with `between` run while the slot is half moved (its keys on
/// `to`, the slot still the old owner's).
pub(crate) fn move_slot(
    cluster: &Cluster,
    slot: u16,
    to: u16,
    keys: &[&str],
    between: impl FnOnce(),
) {
    let (from, _) = cluster.owner(slot);
    let (from_id, to_id) = (cluster.id(from), cluster.id(to));
    let setslot = |port: u16, args: &[&str]| {
        let mut command: Vec<&[u8]> = vec![b"CLUSTER", b"SETSLOT"];
        let slot = slot.to_string();
        command.push(slot.as_bytes());
        command.extend(args.iter().map(|a| a.as_bytes()));
        assert_eq!(cluster.client(port).call(&command), b"+OK\r\n");
    };
    setslot(to, &["IMPORTING", &from_id]);
    setslot(from, &["MIGRATING", &to_id]);
    let to_port = to.to_string();
    let mut migrate: Vec<&[u8]> = vec![
        b"MIGRATE",
        b"127.0.0.1",
        to_port.as_bytes(),
        b"",
        b"0",
        b"5000",
        b"KEYS",
    ];
    migrate.extend(keys.iter().map(|k| k.as_bytes()));
    assert_eq!(cluster.client(from).call(&migrate), b"+OK\r\n");
    between();
    // The new owner first, as redis-cli does (it may own no slot yet).
    setslot(to, &["NODE", &to_id]);
    for (port, _, _) in cluster.ranges().iter().map(|r| (r.2[0], 0, 0)) {
        if port != to {
            setslot(port, &["NODE", &to_id]);
        }
    }
}

#[test]
fn a_migrating_then_moved_slot_is_followed_without_the_client_seeing_it() {
    let cluster = Cluster::start();
    // No periodic refresh during the test: only the redirects can tell.
    let server = proxy(&cluster, &["--cluster-refresh", "1h"]);
    let mut client = Resp::connect(server.addr);
    let key = "moving-key";
    let s = slot(key.as_bytes());
    assert_eq!(
        client.call(&[b"SET", key.as_bytes(), b"before"]),
        b"+OK\r\n"
    );
    let (from, _) = cluster.owner(s);
    let to = cluster.other_primary(from);
    move_slot(&cluster, s, to, &[key], || {
        // The key is on `to`, the slot still `from`'s: `from` answers ASK.
        assert_eq!(client.call(&[b"GET", key.as_bytes()]), bulk("before"));
        assert!(redirects(&server) >= 1.0, "an ASK was followed");
    });
    let before = redirects(&server);
    // Moved: `from` answers MOVED, the proxy follows and remembers.
    assert_eq!(client.call(&[b"SET", key.as_bytes(), b"after"]), b"+OK\r\n");
    assert_eq!(client.call(&[b"GET", key.as_bytes()]), bulk("after"));
    assert_eq!(
        cluster.client(to).call(&[b"GET", key.as_bytes()]),
        bulk("after")
    );
    let after = redirects(&server);
    assert!(after > before, "a MOVED was followed");
    for _ in 0..20 {
        assert_eq!(client.call(&[b"GET", key.as_bytes()]), bulk("after"));
    }
    assert!(
        redirects(&server) <= after + 1.0,
        "the new owner is remembered"
    );
}

/// Runs SET and GET through the proxy until stopped; returns the errors.
fn steady_client(
    server: &Server,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Vec<(Duration, String)>> {
    let addr = server.addr;
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut client = Resp::connect(addr);
        let mut errors = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("steady:{}", i % 500);
            let value = i.to_string();
            let set = client.call(&[b"SET", key.as_bytes(), value.as_bytes()]);
            let get = client.call(&[b"GET", key.as_bytes()]);
            if set != b"+OK\r\n" || get != bulk(&value) {
                let text = String::from_utf8_lossy(if set != b"+OK\r\n" { &set } else { &get })
                    .into_owned();
                errors.push((started.elapsed(), text));
            }
            i += 1;
            done.store(i, Ordering::Relaxed);
        }
        errors
    })
}

#[test]
fn resharding_under_a_running_client_costs_it_nothing() {
    let cluster = Cluster::start();
    let server = proxy(&cluster, &[]);
    let (stop, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let client = steady_client(&server, stop.clone(), done.clone());
    let ranges = cluster.ranges();
    let (from, to) = (ranges[0].2[0], ranges[1].2[0]);
    let output = Command::new("redis-cli")
        .args(["--cluster", "reshard", &format!("127.0.0.1:{from}")])
        .args([
            "--cluster-from",
            &cluster.id(from),
            "--cluster-to",
            &cluster.id(to),
        ])
        .args(["--cluster-slots", "1500", "--cluster-yes"])
        .output()
        .expect("redis-cli --cluster reshard");
    assert!(output.status.success(), "{output:?}");
    let moved = done.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let errors = client.join().unwrap();
    assert!(
        errors.is_empty(),
        "{} errors, first {:?}",
        errors.len(),
        errors.first()
    );
    assert!(
        moved > 1000,
        "the client ran through the resharding ({moved} pairs)"
    );
    assert!(
        redirects(&server) >= 1.0,
        "the reshard was seen as redirects"
    );
}

#[test]
fn failovers_are_followed() {
    let mut cluster = Cluster::start();
    let server = proxy(&cluster, &[]);
    let key = "failover-key";
    let s = slot(key.as_bytes());
    let mut client = Resp::connect(server.addr);
    assert_eq!(client.call(&[b"SET", key.as_bytes(), b"1"]), b"+OK\r\n");
    // A manual failover: the replica takes over with no loss; the proxy
    // follows the old primary's MOVED at once.
    let (primary, replica) = cluster.owner(s);
    assert_eq!(
        cluster.client(replica).call(&[b"CLUSTER", b"FAILOVER"]),
        b"+OK\r\n"
    );
    let switched = util::wait_until(Duration::from_secs(10), || cluster.owner(s).0 == replica);
    assert!(switched, "the replica did not take over");
    assert_eq!(client.call(&[b"SET", key.as_bytes(), b"2"]), b"+OK\r\n");
    assert_eq!(client.call(&[b"GET", key.as_bytes()]), bulk("2"));
    // A killed primary: requests to it fail (fast) until the cluster
    // promotes its replica and the proxy learns it; after that, none.
    let (stop, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let steady = steady_client(&server, stop.clone(), done.clone());
    std::thread::sleep(Duration::from_millis(300));
    let killed_at = Instant::now();
    cluster.kill(replica);
    let promoted = util::wait_until(Duration::from_secs(20), || cluster.owner(s).0 == primary);
    assert!(promoted, "the old primary was not promoted back");
    let promoted_after = killed_at.elapsed();
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    let errors = steady.join().unwrap();
    let last = errors.last().map(|(at, _)| *at);
    eprintln!(
        "failover: promoted after {promoted_after:?}; {} errors of {} pairs, the last {last:?} after start",
        errors.len(),
        done.load(Ordering::Relaxed)
    );
    let mut kinds: Vec<(String, Duration, Duration, usize)> = Vec::new();
    for (at, text) in &errors {
        match kinds.iter_mut().find(|k| k.0 == *text) {
            Some(kind) => {
                kind.2 = *at;
                kind.3 += 1;
            }
            None => kinds.push((text.clone(), *at, *at, 1)),
        }
    }
    eprintln!("failover errors by reply (first, last, count): {kinds:?}");
    // Errors are for keys of the dead node, and stop within seconds of the
    // promotion (the proxy re-reads the map at most once a second); the
    // requests of the last two seconds all succeeded.
    let start_to_kill = Duration::from_millis(300);
    if let Some(last) = last {
        assert!(
            last < start_to_kill + promoted_after + Duration::from_secs(3),
            "errors went on: {last:?}"
        );
    }
    for (_, text) in &errors {
        assert!(
            text.starts_with("-ERR upstream") || text.starts_with("-CLUSTERDOWN"),
            "{text}"
        );
    }
    assert_eq!(client.call(&[b"GET", key.as_bytes()]), bulk("2"));
}

#[test]
fn a_cluster_that_requires_a_password() {
    let cluster = Cluster::start_with(Some("cluster-pw"));
    let server = proxy(&cluster, &["--upstream-password", "cluster-pw"]);
    let mut client = Resp::connect(server.addr);
    for i in 0..50 {
        let key = format!("auth:{i}");
        assert_eq!(client.call(&[b"SET", key.as_bytes(), b"v"]), b"+OK\r\n");
        let (owner, _) = cluster.owner(slot(key.as_bytes()));
        assert_eq!(
            cluster.client(owner).call(&[b"GET", key.as_bytes()]),
            bulk("v")
        );
    }
    // Without the password the proxy cannot even learn the slot map.
    let seed = cluster.seed();
    let (status, _, err) = util::run_to_exit(
        &[
            "proxy",
            "--cluster",
            &seed,
            "--upstream-password",
            "wrong",
            "--admin",
            "off",
            "--listen",
            "127.0.0.1:0",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{err}");
    assert!(err.contains("AUTH refused: -WRONGPASS"), "{err}");
}

/// `calls` of `cmdstat_<command>` in the node's INFO commandstats.
fn calls(cluster: &Cluster, port: u16, command: &str) -> u64 {
    let info = cluster.client(port).call(&[b"INFO", b"commandstats"]);
    let text = String::from_utf8_lossy(&info).into_owned();
    let prefix = format!("cmdstat_{command}:calls=");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[test]
fn reads_go_to_replicas_when_asked_and_writes_never_do() {
    let mut cluster = Cluster::start();
    let server = proxy(&cluster, &["--read-from", "prefer-replica"]);
    let mut client = Resp::connect(server.addr);
    let keys: Vec<String> = (0..200).map(|i| format!("read:{i}")).collect();
    for key in &keys {
        assert_eq!(
            client.call(&[b"SET", key.as_bytes(), key.as_bytes()]),
            b"+OK\r\n"
        );
    }
    let ranges = cluster.ranges();
    let primaries: Vec<u16> = ranges.iter().map(|r| r.2[0]).collect();
    let replicas: Vec<u16> = ranges.iter().map(|r| r.2[1]).collect();
    for &primary in &primaries {
        // Every write has reached its replica before the reads.
        assert_eq!(
            cluster.client(primary).call(&[b"WAIT", b"1", b"5000"]),
            b":1\r\n"
        );
    }
    for &port in primaries.iter().chain(&replicas) {
        assert_eq!(
            cluster.client(port).call(&[b"CONFIG", b"RESETSTAT"]),
            b"+OK\r\n"
        );
    }
    for key in &keys {
        assert_eq!(client.call(&[b"GET", key.as_bytes()]), bulk(key));
    }
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(keys[..10].iter().map(|k| k.as_bytes()));
    assert!(client.call(&mget).starts_with(b"*10\r\n$6\r\nread:0\r\n"));
    for key in &keys[..20] {
        let length = format!(":{}\r\n", key.len() + 1).into_bytes();
        assert_eq!(client.call(&[b"APPEND", key.as_bytes(), b"!"]), length);
    }
    let on = |ports: &[u16], command: &str| {
        ports
            .iter()
            .map(|&p| calls(&cluster, p, command))
            .sum::<u64>()
    };
    assert_eq!(on(&replicas, "get"), 200, "every GET on a replica");
    assert_eq!(on(&primaries, "get"), 0, "no GET on a primary");
    assert!(on(&replicas, "mget") >= 1);
    assert_eq!(on(&primaries, "append"), 20, "every write on a primary");
    // The proxy asks each primary about its replicas every second, on a
    // connection it keeps: over 3 s a primary counts this test's own
    // connection that asks, not three more of the proxy's.
    let received = |port: u16| {
        let info = cluster.client(port).call(&[b"INFO", b"stats"]);
        let text = String::from_utf8_lossy(&info).to_string();
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"));
        line.expect("INFO stats").trim().parse::<u64>().unwrap()
    };
    let before: Vec<u64> = primaries.iter().map(|&p| received(p)).collect();
    std::thread::sleep(Duration::from_secs(3));
    for (&port, before) in primaries.iter().zip(before) {
        let new = received(port) - before;
        assert!(new <= 2, "primary {port}: {new} connections in 3 s");
    }
    // A dead replica: once the cluster has marked it failed and the proxy
    // has re-read the map, its slots' reads go to their primary.
    let victim = replicas[0];
    cluster.kill(victim);
    let dropped = util::wait_until(Duration::from_secs(20), || {
        cluster.ranges().iter().all(|r| !r.2.contains(&victim))
    });
    assert!(dropped, "the cluster did not drop the dead replica");
    let served = util::wait_until(Duration::from_secs(10), || {
        keys.iter()
            .all(|key| client.call(&[b"GET", key.as_bytes()]).starts_with(b"$"))
    });
    assert!(
        served,
        "reads of the dead replica's slots did not fall back to the primary"
    );
}

/// A replica that stops answering (SIGSTOP: its connections stay open,
/// its acknowledgements to its primary stop) serves no reads once its lag
/// passes `--replica-max-lag` (the cluster itself, its node timeout
/// raised, never marks it failed): its slots' reads go to their primary,
/// with `--read-from replica` too; running again, it serves them again.
#[test]
fn a_lagging_replica_serves_no_reads_until_it_catches_up() {
    use nix::sys::signal::Signal;
    let cluster = Cluster::start();
    let args = ["--read-from", "replica", "--replica-max-lag", "1s"];
    let server = proxy(
        &cluster,
        &[&args[..], &["--upstream-timeout", "1s"]].concat(),
    );
    let mut client = Resp::connect(server.addr);
    let ranges = cluster.ranges();
    let (first, last, nodes) = &ranges[0];
    let (primary, replica) = (nodes[0], nodes[1]);
    let key = (0..)
        .map(|i| format!("lag:{i}"))
        .find(|k| (*first..=*last).contains(&slot(k.as_bytes())))
        .unwrap();
    let key = key.as_bytes();
    assert_eq!(client.call(&[b"SET", key, b"v"]), b"+OK\r\n");
    let wait = cluster.client(primary).call(&[b"WAIT", b"1", b"5000"]);
    assert_eq!(wait, b":1\r\n", "the write reached the replica");
    for port in [primary, replica] {
        assert_eq!(
            cluster.client(port).call(&[b"CONFIG", b"RESETSTAT"]),
            b"+OK\r\n"
        );
    }
    assert_eq!(client.call(&[b"GET", key]), bulk("v"));
    assert_eq!(
        (
            calls(&cluster, replica, "get"),
            calls(&cluster, primary, "get")
        ),
        (1, 0),
        "the read went to the replica"
    );

    // The cluster must not mark the stopped replica failed meanwhile (its
    // map would drop it): only the lag moves its reads.
    for (_, _, nodes) in &ranges {
        for &port in nodes {
            let set = [&b"CONFIG"[..], b"SET", b"cluster-node-timeout", b"60000"];
            assert_eq!(cluster.client(port).call(&set), b"+OK\r\n");
        }
    }
    cluster.signal(replica, Signal::SIGSTOP);
    let stopped = Instant::now();
    // Reads sent to the stopped replica meanwhile time out (1 s).
    let to_primary = util::wait_until(Duration::from_secs(10), || {
        client.call(&[b"GET", key]) == bulk("v") && calls(&cluster, primary, "get") >= 1
    });
    cluster.signal(replica, Signal::SIGCONT);
    assert!(
        to_primary,
        "reads did not go to the primary: {}",
        server.stderr_text()
    );
    eprintln!(
        "reads went to the primary {:?} after SIGSTOP",
        stopped.elapsed()
    );
    let log = server.stderr_text();
    let lags = format!("cluster: replica 127.0.0.1:{replica} lags");
    assert!(log.contains(&lags), "{log}");

    // Once it is fit again (it has run: what it was sent while stopped is
    // behind it), its counts start again and reads come back to it.
    let again = format!("cluster: replica 127.0.0.1:{replica} serves reads again");
    let fit = util::wait_until(Duration::from_secs(10), || {
        server.stderr_text().contains(&again)
    });
    assert!(fit, "the replica was not fit again");
    let reset = cluster.client(replica).call(&[b"CONFIG", b"RESETSTAT"]);
    assert_eq!(reset, b"+OK\r\n");
    let back = util::wait_until(Duration::from_secs(15), || {
        client.call(&[b"GET", key]) == bulk("v") && calls(&cluster, replica, "get") >= 1
    });
    assert!(back, "reads did not come back to the replica");
}

/// With `--cluster` the nodes are the cluster's (learnt by `CLUSTER
/// SLOTS`), not a setting: a reload applies the live settings it changes
/// and keeps the nodes, so clients go on as before.
#[test]
fn a_reload_keeps_the_clusters_nodes() {
    let cluster = Cluster::start();
    let file = util::ConfigFile::new("cluster-reload", "upstream-timeout = \"5s\"\n");
    let server = proxy(&cluster, &["--config", file.path()]);
    let mut client = Resp::connect(server.addr);
    for i in 0..50 {
        let key = format!("key:{i}");
        assert_eq!(client.call(&[b"SET", key.as_bytes(), b"v"]), b"+OK\r\n");
    }
    file.write("upstream-timeout = \"4s\"\n");
    server.signal(nix::sys::signal::Signal::SIGHUP);
    server.wait_metric(
        "holdfast_config_generation",
        &[],
        2.0,
        Duration::from_secs(5),
    );
    let log = server.stderr_text();
    let applied = log
        .lines()
        .find(|line| line.contains("reload applied"))
        .unwrap_or_else(|| panic!("no reload line: {log}"));
    assert!(
        applied.ends_with("reload applied: generation 2; changed upstream-timeout 5s -> 4s"),
        "{applied}"
    );
    for i in 0..50 {
        let key = format!("key:{i}");
        assert_eq!(client.call(&[b"GET", key.as_bytes()]), bulk("v"), "{key}");
    }
}

#[test]
fn a_node_added_to_the_cluster_is_used_without_a_restart() {
    let mut cluster = Cluster::start();
    let server = proxy(&cluster, &["--cluster-refresh", "1s"]);
    let mut client = Resp::connect(server.addr);
    let key = "key:on-the-new-node";
    assert_eq!(
        client.call(&[b"SET", key.as_bytes(), b"before"]),
        b"+OK\r\n"
    );
    let new = cluster.add_node();
    move_slot(&cluster, slot(key.as_bytes()), new, &[key], || {});
    let moved = Instant::now();
    // The old owner answers MOVED to a node the proxy does not know: it
    // learns it within a refresh (one is asked for at once), adds it as an
    // upstream, and takes the map that names it; the client gets the
    // MOVED until then.
    let learnt = util::wait_until(Duration::from_secs(10), || {
        client.call(&[b"GET", key.as_bytes()]) == bulk("before")
    });
    assert!(
        learnt,
        "the proxy never served the moved slot:\n{}",
        server.stderr_text()
    );
    eprintln!(
        "the moved slot was served {:?} after the move",
        moved.elapsed()
    );
    let name = format!("127.0.0.1:{new}");
    let before = calls(&cluster, new, "get");
    for i in 0..20 {
        let value = format!("v{i}");
        assert_eq!(
            client.call(&[b"SET", key.as_bytes(), value.as_bytes()]),
            b"+OK\r\n"
        );
        assert_eq!(client.call(&[b"GET", key.as_bytes()]), bulk(&value));
    }
    assert_eq!(
        calls(&cluster, new, "get") - before,
        20,
        "served by the new node"
    );
    let log = server.stderr_text();
    assert!(
        log.contains(&format!("cluster: new nodes {name} made upstreams 6 to 6")),
        "{log}"
    );
    let requests = server.metric("holdfast_upstream_requests_total", &[("upstream", &name)]);
    assert!(requests >= 40.0, "{requests} requests counted for {name}");
}
