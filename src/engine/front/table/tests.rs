use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn limits(max_conns: u32, rate: Option<(u32, u32)>) -> PerIp {
    PerIp {
        max_conns,
        rate: rate.and_then(|(per_second, burst)| Rate::new(per_second, burst)),
        v4_prefix: 32,
        v6_prefix: 64,
    }
}

fn table(limits: PerIp, max: usize) -> AddrTable {
    AddrTable::new(limits, max, Arc::new(AtomicU64::new(0)))
}

fn held(table: &AddrTable) -> usize {
    table.lock().entries.len()
}

#[test]
fn addresses_are_grouped_by_their_prefix() {
    let mut per_ip = limits(1, None);
    let key = |per_ip: &PerIp, text: &str| per_ip.key(ip(text));
    assert_ne!(key(&per_ip, "10.0.0.1"), key(&per_ip, "10.0.0.2"));
    assert_eq!(key(&per_ip, "10.0.0.1"), key(&per_ip, "::ffff:10.0.0.1"));
    assert_eq!(
        key(&per_ip, "2001:db8::1"),
        key(&per_ip, "2001:db8::ffff:2")
    );
    assert_ne!(key(&per_ip, "2001:db8::1"), key(&per_ip, "2001:db8:0:1::1"));
    assert_ne!(key(&per_ip, "0.0.0.1"), key(&per_ip, "::1"));
    per_ip.v4_prefix = 24;
    per_ip.v6_prefix = 128;
    assert_eq!(key(&per_ip, "10.0.0.1"), key(&per_ip, "10.0.0.200"));
    assert_ne!(key(&per_ip, "10.0.0.1"), key(&per_ip, "10.0.1.1"));
    assert_ne!(key(&per_ip, "2001:db8::1"), key(&per_ip, "2001:db8::2"));
    per_ip.v4_prefix = 1;
    per_ip.v6_prefix = 1;
    assert_eq!(key(&per_ip, "10.0.0.1"), key(&per_ip, "127.0.0.1"));
    assert_ne!(key(&per_ip, "10.0.0.1"), key(&per_ip, "200.0.0.1"));
    assert_eq!(key(&per_ip, "::1"), key(&per_ip, "7fff::1"));
}

#[test]
fn open_connections_are_held_to_the_limit_per_address() {
    let table = table(limits(3, None), 100);
    let a: Vec<_> = (0..3)
        .map(|_| table.admit_at(ip("10.0.0.1"), 0).unwrap())
        .collect();
    assert_eq!(table.admit_at(ip("10.0.0.1"), 0), Err(RejectReason::PerIp));
    assert!(table.admit_at(ip("10.0.0.2"), 0).is_ok());
    table.release_at(a[0], 1);
    assert!(table.admit_at(ip("10.0.0.1"), 1).is_ok());
    assert_eq!(table.admit_at(ip("10.0.0.1"), 1), Err(RejectReason::PerIp));
    // An address with nothing open is forgotten at once.
    let b = table.admit_at(ip("10.0.0.3"), 2).unwrap();
    assert_eq!(held(&table), 3);
    table.release_at(b, 2);
    assert_eq!(held(&table), 2);
    assert_eq!(table.gauge.load(Ordering::Relaxed), 2);
}

#[test]
fn new_connections_are_paced_per_address() {
    let table = table(limits(0, Some((10, 5))), 100);
    let mut keys = Vec::new();
    for _ in 0..5 {
        keys.push(table.admit_at(ip("10.0.0.1"), 0).unwrap());
    }
    assert_eq!(
        table.admit_at(ip("10.0.0.1"), 0),
        Err(RejectReason::ConnRate)
    );
    assert!(table.admit_at(ip("10.0.0.9"), 0).is_ok());
    // Closing does not give tokens back; time does: one per 100 ms.
    for key in keys {
        table.release_at(key, 50);
    }
    assert_eq!(
        table.admit_at(ip("10.0.0.1"), 99),
        Err(RejectReason::ConnRate)
    );
    let key = table.admit_at(ip("10.0.0.1"), 100).unwrap();
    table.release_at(key, 100);
    // 2 s on, full again: it is forgotten as other addresses come and go.
    assert_eq!(held(&table), 2);
    let other = table.admit_at(ip("10.0.0.8"), 2_000).unwrap();
    let forgotten = table.limits().key(ip("10.0.0.1"));
    assert!(!table.lock().entries.contains_key(&forgotten));
    // 10.0.0.8 spent a token: it is held until it earns it back.
    table.release_at(other, 2_000);
    assert_eq!(held(&table), 2);
    let third = table.admit_at(ip("10.0.0.7"), 2_100).unwrap();
    table.release_at(third, 2_100);
    assert_eq!(held(&table), 2, "10.0.0.9, open, and 10.0.0.7, spent");
}

#[test]
fn a_full_table_forgets_idle_addresses_then_refuses() {
    let table = table(limits(0, Some((1, 1))), 3);
    let a = table.admit_at(ip("10.0.0.1"), 0).unwrap();
    let _b = table.admit_at(ip("10.0.0.2"), 0).unwrap();
    let _c = table.admit_at(ip("10.0.0.3"), 0).unwrap();
    assert_eq!(
        table.admit_at(ip("10.0.0.4"), 0),
        Err(RejectReason::IpTableFull)
    );
    // 10.0.0.1 closes with its bucket empty: it is kept for its rate...
    table.release_at(a, 10);
    assert_eq!(held(&table), 3);
    assert_eq!(
        table.admit_at(ip("10.0.0.1"), 10),
        Err(RejectReason::ConnRate)
    );
    // ...until a new address needs its room: then its rate is forgiven.
    let _d = table.admit_at(ip("10.0.0.4"), 20).unwrap();
    assert_eq!(held(&table), 3);
    assert_eq!(
        table.admit_at(ip("10.0.0.1"), 20),
        Err(RejectReason::IpTableFull)
    );
}

#[test]
fn churn_keeps_the_table_and_its_queue_within_the_bound() {
    let table = table(limits(2, Some((1, 2))), 64);
    let mut open = VecDeque::new();
    for n in 0..20_000u32 {
        let now = Millis::from(n);
        let addr = IpAddr::V4((0x0a00_0000 + n % 97).into());
        if let Ok(key) = table.admit_at(addr, now) {
            open.push_back(key);
        }
        if open.len() > 40 || n % 3 == 0 {
            if let Some(key) = open.pop_front() {
                table.release_at(key, now);
            }
        }
        let inner = table.lock();
        assert!(inner.entries.len() <= 64 && inner.idle.len() <= inner.entries.len());
    }
    for key in open.drain(..) {
        table.release_at(key, 20_000);
    }
    let inner = table.lock();
    assert!(inner.entries.values().all(|entry| entry.open == 0));
}

#[test]
fn the_limit_is_exact_across_threads() {
    let table = Arc::new(table(limits(100, None), 1000));
    let admitted: usize = (0..4)
        .map(|_| {
            let table = table.clone();
            std::thread::spawn(move || {
                (0..1000)
                    .filter(|_| table.admit(ip("192.0.2.1")).is_ok())
                    .count()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|thread| thread.join().unwrap())
        .sum();
    assert_eq!(admitted, 100);
}
