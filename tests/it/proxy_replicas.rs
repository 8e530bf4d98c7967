//! `holdfast proxy --upstream-replica PRIMARY=REPLICA`: primary/replica
//! groups for a plain upstream list (no cluster). Real `redis-server`s, the
//! replicas started with `--replicaof`: keys are placed over the primaries
//! only, writes go to them, and with `--read-from replica` the read-only
//! commands go to their replicas (counted by each server's own INFO
//! commandstats); a replica that dies has its reads served by its primary
//! once its breaker opens (health checks find it).

use crate::util;

use std::time::Duration;

use holdfast::apps::proxy::hash::{Continuum, KeyHash};
use util::{Redis, Resp, Server};

/// A primary and its replica, the replica in sync.
struct Pair {
    primary: Redis,
    replica: Redis,
}

impl Pair {
    fn start() -> Pair {
        let primary = Redis::start();
        let port = primary.port.to_string();
        let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &port]);
        let synced = util::wait_until(Duration::from_secs(10), || {
            let info = replica.client().call(&[b"INFO", b"replication"]);
            String::from_utf8_lossy(&info).contains("master_link_status:up")
        });
        assert!(synced, "the replica of {} never synced", primary.name());
        Pair { primary, replica }
    }

    /// `--upstream` for both, and `--upstream-replica` between them.
    fn flags(&self) -> Vec<String> {
        let (p, r) = (self.primary.name(), self.replica.name());
        vec![
            "--upstream".into(),
            p.clone(),
            "--upstream".into(),
            r.clone(),
            "--upstream-replica".into(),
            format!("{p}={r}"),
        ]
    }
}

/// `calls=` of `cmdstat_NAME` in the server's INFO commandstats (0 if the
/// command never ran).
fn calls(redis: &Redis, name: &str) -> u64 {
    let info = redis.client().call(&[b"INFO", b"commandstats"]);
    let text = String::from_utf8_lossy(&info).to_string();
    let prefix = format!("cmdstat_{name}:calls=");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

fn bulk(value: &str) -> Vec<u8> {
    format!("${}\r\n{value}\r\n", value.len()).into_bytes()
}

/// Waits until every replica holds `keys` keys.
fn await_replication(pairs: &[&Pair], keys: &[usize]) {
    for (pair, &count) in pairs.iter().zip(keys) {
        let copied = util::wait_until(Duration::from_secs(5), || {
            pair.replica.client().call(&[b"DBSIZE"]) == format!(":{count}\r\n").into_bytes()
        });
        assert!(copied, "{} never held {count} keys", pair.replica.name());
    }
}

/// A proxy in front of `pair` with `flags`, and a client that has set `k`
/// to `v` and read it back from the replica (checked there).
fn read_once_from_the_replica(pair: &Pair, flags: &[&str]) -> (Server, Resp) {
    let mut args = pair.flags();
    args.extend(flags.iter().map(|flag| flag.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = Server::start_proxy(&args);
    let mut client = Resp::connect(proxy.addr);
    assert_eq!(client.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    await_replication(&[pair], &[1]);
    assert_eq!(client.call(&[b"GET", b"k"]), bulk("v"));
    assert_eq!(
        calls(&pair.replica, "get"),
        1,
        "the read went to the replica"
    );
    (proxy, client)
}

#[test]
fn keys_go_by_primary_writes_to_primaries_and_reads_to_replicas() {
    let (one, two) = (Pair::start(), Pair::start());
    // A third primary with no replica: `--read-from replica` refuses its reads.
    let lone = Redis::start();
    let mut args: Vec<String> = one.flags();
    args.extend(two.flags());
    args.extend(["--upstream".into(), lone.name()]);
    args.extend(["--read-from".into(), "replica".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = Server::start_proxy(&args);
    let mut client = Resp::connect(proxy.addr);

    // The ring is over the primaries, in the order given.
    let primaries = [one.primary.name(), two.primary.name(), lone.name()];
    let ring = Continuum::new(&primaries, KeyHash::Murmur).unwrap();
    let keys: Vec<String> = (0..60).map(|i| format!("key:{i}")).collect();
    let mut owned = [0usize; 3];
    for key in &keys {
        let value = format!("value of {key}");
        assert_eq!(
            client.call(&[b"SET", key.as_bytes(), value.as_bytes()]),
            b"+OK\r\n"
        );
        owned[ring.upstream(key.as_bytes())] += 1;
    }
    assert!(
        owned.iter().all(|&n| n > 0),
        "every primary owns keys: {owned:?}"
    );
    for (redis, count) in [&one.primary, &two.primary, &lone].iter().zip(owned) {
        assert_eq!(
            redis.client().call(&[b"DBSIZE"]),
            format!(":{count}\r\n").into_bytes(),
            "{} holds the keys the ring gives it",
            redis.name()
        );
    }
    await_replication(&[&one, &two], &owned[..2]);

    let mut replica_reads = 0;
    let mut refused = 0;
    for key in &keys {
        let reply = client.call(&[b"GET", key.as_bytes()]);
        if ring.upstream(key.as_bytes()) == 2 {
            assert_eq!(
                reply,
                b"-ERR no replica serves this key's upstream (--read-from replica)\r\n"
            );
            refused += 1;
        } else {
            assert_eq!(reply, bulk(&format!("value of {key}")), "GET {key}");
            replica_reads += 1;
        }
    }
    assert_eq!(refused, owned[2]);
    // A split read goes to the replicas too, and a write is never sent to
    // one (a replica refuses writes: it would answer -READONLY).
    let replicated: Vec<&[u8]> = (keys.iter().map(|k| k.as_bytes()))
        .filter(|key| ring.upstream(key) != 2)
        .take(4)
        .collect();
    let mget = client.call(&[&[b"MGET".as_slice()], &replicated[..]].concat());
    assert!(
        mget.starts_with(b"*4\r\n$"),
        "{}",
        String::from_utf8_lossy(&mget)
    );
    assert_eq!(client.call(&[b"INCR", b"counter"]), b":1\r\n");

    let gets = |redis: &Redis| calls(redis, "get");
    assert_eq!(
        gets(&one.primary) + gets(&two.primary),
        0,
        "GETs on primaries"
    );
    assert_eq!(
        gets(&one.replica) + gets(&two.replica),
        replica_reads,
        "GETs on replicas"
    );
    assert_eq!(calls(&lone, "get"), 0, "refused reads were not sent");
    assert!(calls(&one.replica, "mget") + calls(&two.replica, "mget") >= 1);
    assert_eq!(calls(&one.primary, "mget") + calls(&two.primary, "mget"), 0);
    // The replicas ran only what replication brought (SETs counted there
    // too); the INCR went to a primary.
    let incrs = [&one.primary, &two.primary, &lone].map(|r| calls(r, "incr"));
    assert_eq!(incrs.iter().sum::<u64>(), 1, "INCR on a primary: {incrs:?}");
}

#[test]
fn a_dead_replicas_reads_go_to_its_primary() {
    let mut pair = Pair::start();
    let flags = [
        "--read-from",
        "prefer-replica",
        "--health-check-interval",
        "200ms",
    ];
    let (proxy, mut client) = read_once_from_the_replica(&pair, &flags);

    let replica = pair.replica.name();
    pair.replica.kill();
    // The health checks open every shard's breaker for it.
    let shards = proxy.metric("holdfast_shards", &[]);
    let open = util::wait_until(Duration::from_secs(5), || {
        proxy.metric(
            "holdfast_upstream_breaker_state",
            &[("upstream", &replica), ("state", "open")],
        ) == shards
    });
    assert!(open, "the dead replica's breakers never opened");
    for _ in 0..50 {
        assert_eq!(
            client.call(&[b"GET", b"k"]),
            bulk("v"),
            "read after the replica died"
        );
    }
    assert_eq!(calls(&pair.primary, "get"), 50, "its primary served them");
}

#[test]
fn a_replica_added_by_reload_takes_the_reads_and_moves_no_key() {
    let pair = Pair::start();
    let (p, r) = (pair.primary.name(), pair.replica.name());
    let file = util::ConfigFile::new("replicas-reload", &format!("upstreams = [\"{p}\"]\n"));
    let proxy = Server::start_proxy(&["--config", file.path(), "--read-from", "prefer-replica"]);
    let mut client = Resp::connect(proxy.addr);
    assert_eq!(client.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    await_replication(&[&pair], &[1]);
    assert_eq!(client.call(&[b"GET", b"k"]), bulk("v"));
    assert_eq!(
        calls(&pair.primary, "get"),
        1,
        "no replica yet: the primary"
    );

    file.write(&format!(
        "upstreams = [\"{p}\", \"{r}\"]\nupstream-replicas = [\"{p}={r}\"]\n"
    ));
    proxy.signal(nix::sys::signal::Signal::SIGHUP);
    proxy.wait_metric(
        "holdfast_config_generation",
        &[],
        2.0,
        Duration::from_secs(5),
    );
    for _ in 0..10 {
        assert_eq!(client.call(&[b"GET", b"k"]), bulk("v"), "the key stays put");
    }
    assert_eq!(
        calls(&pair.replica, "get"),
        10,
        "reads go to the added replica"
    );
    assert_eq!(calls(&pair.primary, "get"), 1);
    assert_eq!(client.call(&[b"SET", b"k", b"w"]), b"+OK\r\n");
    assert_eq!(calls(&pair.primary, "set"), 2, "writes stay on the primary");
}

#[test]
fn a_replica_cut_off_from_its_primary_serves_no_reads_until_it_is_back() {
    let pair = Pair::start();
    let flags = ["--read-from", "replica", "--replica-max-lag", "1s"];
    let (proxy, mut client) = read_once_from_the_replica(&pair, &flags);

    // Cut off: it follows a primary that is not there. It still answers
    // reads (stale, as Redis replicas do) and PINGs: only its primary's
    // INFO replication says it is gone.
    let nowhere = util::free_port().to_string();
    let cut = pair
        .replica
        .client()
        .call(&[b"REPLICAOF", b"127.0.0.1", nowhere.as_bytes()]);
    assert!(cut.starts_with(b"+OK"), "{}", String::from_utf8_lossy(&cut));
    let moved = util::wait_until(Duration::from_secs(5), || {
        assert_eq!(client.call(&[b"GET", b"k"]), bulk("v"));
        calls(&pair.primary, "get") > 0
    });
    assert!(moved, "reads never left the cut-off replica");
    let (replica_gets, primary_gets) = (calls(&pair.replica, "get"), calls(&pair.primary, "get"));
    for _ in 0..10 {
        assert_eq!(client.call(&[b"GET", b"k"]), bulk("v"));
    }
    assert_eq!(
        calls(&pair.replica, "get"),
        replica_gets,
        "none on the replica"
    );
    assert_eq!(
        calls(&pair.primary, "get"),
        primary_gets + 10,
        "all on its primary"
    );

    // Back with its primary: it serves reads again.
    let port = pair.primary.port.to_string();
    let back = pair
        .replica
        .client()
        .call(&[b"REPLICAOF", b"127.0.0.1", port.as_bytes()]);
    assert!(
        back.starts_with(b"+OK"),
        "{}",
        String::from_utf8_lossy(&back)
    );
    let served = util::wait_until(Duration::from_secs(10), || {
        assert_eq!(client.call(&[b"GET", b"k"]), bulk("v"));
        calls(&pair.replica, "get") > replica_gets
    });
    assert!(served, "the replica never served reads again");
    let log = proxy.stderr_text();
    assert!(log.contains("is not listed by its primary"), "{log}");
    assert!(log.contains("serves reads again"), "{log}");
}
