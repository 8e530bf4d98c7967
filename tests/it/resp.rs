//! `--protocol resp` over raw sockets and through `redis-cli`: the key-value
//! service's commands, protocol errors (reply, then close, counted), the
//! memory bound, DEBUG PANIC isolation, keys shared across shards, expiry.

use crate::util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use util::{Closed, Server, expect_closed, read_exact_timeout, wait_until};

/// Encodes a command as a multibulk array.
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    holdfast::engine::codec::resp::encode_command(args, &mut out);
    out
}

/// Sends `args` and reads exactly `expected.len()` bytes back.
fn exchange(stream: &mut TcpStream, args: &[&[u8]], expected: &[u8]) {
    stream.write_all(&command(args)).unwrap();
    let reply = read_exact_timeout(stream, expected.len(), Duration::from_secs(5));
    assert_eq!(
        String::from_utf8_lossy(&reply),
        String::from_utf8_lossy(expected),
        "reply to {:?}",
        args.iter()
            .map(|a| String::from_utf8_lossy(a))
            .collect::<Vec<_>>()
    );
}

fn resp(extra: &[&str]) -> Server {
    let mut args = vec!["--protocol", "resp"];
    args.extend(extra);
    Server::start(&args)
}

/// Runs `redis-cli -p PORT ARGS`; its stdout.
fn redis_cli(server: &Server, args: &[&str]) -> String {
    let args = [&["-h", "127.0.0.1"], args].concat();
    util::redis_cli(server.addr.port(), &args)
        .trim_end()
        .to_string()
}

#[test]
fn core_commands_over_a_raw_socket() {
    let server = resp(&[]);
    let mut s = server.connect();
    exchange(&mut s, &[b"PING"], b"+PONG\r\n");
    exchange(&mut s, &[b"ping", b"hi"], b"$2\r\nhi\r\n");
    exchange(&mut s, &[b"ECHO", b"a\r\nb"], b"$4\r\na\r\nb\r\n");
    exchange(&mut s, &[b"SET", b"k", b"v"], b"+OK\r\n");
    exchange(&mut s, &[b"GET", b"k"], b"$1\r\nv\r\n");
    exchange(&mut s, &[b"GET", b"missing"], b"$-1\r\n");
    exchange(&mut s, &[b"SET", b"k", b"w", b"NX"], b"$-1\r\n");
    exchange(&mut s, &[b"SET", b"new", b"w", b"XX"], b"$-1\r\n");
    exchange(&mut s, &[b"SET", b"k", b"w", b"XX"], b"+OK\r\n");
    exchange(
        &mut s,
        &[b"SET", b"k", b"w", b"BOGUS"],
        b"-ERR syntax error\r\n",
    );
    exchange(&mut s, &[b"MSET", b"a", b"1", b"b", b"2"], b"+OK\r\n");
    exchange(
        &mut s,
        &[b"MGET", b"a", b"nope", b"b"],
        b"*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n",
    );
    exchange(&mut s, &[b"INCR", b"a"], b":2\r\n");
    exchange(&mut s, &[b"DECR", b"counter"], b":-1\r\n");
    exchange(
        &mut s,
        &[b"INCR", b"k"],
        b"-ERR value is not an integer or out of range\r\n",
    );
    exchange(&mut s, &[b"EXISTS", b"a", b"b", b"zz"], b":2\r\n");
    exchange(&mut s, &[b"DEL", b"a", b"zz"], b":1\r\n");
    exchange(&mut s, &[b"TTL", b"b"], b":-1\r\n");
    exchange(&mut s, &[b"TTL", b"zz"], b":-2\r\n");
    exchange(&mut s, &[b"EXPIRE", b"b", b"100"], b":1\r\n");
    exchange(&mut s, &[b"TTL", b"b"], b":100\r\n");
    exchange(&mut s, &[b"DBSIZE"], b":3\r\n");
    exchange(&mut s, &[b"CLIENT", b"SETNAME", b"me"], b"+OK\r\n");
    exchange(&mut s, &[b"CLIENT", b"GETNAME"], b"$-1\r\n");
    exchange(&mut s, &[b"COMMAND", b"DOCS"], b"*0\r\n");
    exchange(
        &mut s,
        &[b"HELLO", b"4"],
        b"-NOPROTO unsupported protocol version\r\n",
    );
    exchange(
        &mut s,
        &[b"CONFIG", b"GET", b"appendonly"],
        b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
    );
    exchange(
        &mut s,
        &[b"GET"],
        b"-ERR wrong number of arguments for 'get' command\r\n",
    );
    exchange(
        &mut s,
        &[b"FOO", b"bar"],
        b"-ERR unknown command 'FOO', with args beginning with: 'bar' \r\n",
    );
    // Inline commands, as typed into telnet.
    s.write_all(b"PING\r\nSET x 5\r\nGET x\r\n").unwrap();
    let reply = read_exact_timeout(&mut s, 7 + 5 + 7, Duration::from_secs(5));
    assert_eq!(reply, b"+PONG\r\n+OK\r\n$1\r\n5\r\n");
    exchange(&mut s, &[b"FLUSHALL"], b"+OK\r\n");
    exchange(&mut s, &[b"DBSIZE"], b":0\r\n");
    exchange(&mut s, &[b"QUIT"], b"+OK\r\n");
    let (rest, how, _) = expect_closed(&mut s, Duration::from_secs(5));
    assert_eq!((rest.len(), how), (0, Closed::Eof));
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let server = resp(&[]);
    let mut s = server.connect();
    let mut batch = Vec::new();
    let mut expected = Vec::new();
    for i in 0..200 {
        let key = format!("key{i}");
        batch.extend(command(&[b"SET", key.as_bytes(), key.as_bytes()]));
        batch.extend(command(&[b"GET", key.as_bytes()]));
        expected.extend(b"+OK\r\n");
        expected.extend(format!("${}\r\n{key}\r\n", key.len()).bytes());
    }
    s.write_all(&batch).unwrap();
    let reply = read_exact_timeout(&mut s, expected.len(), Duration::from_secs(5));
    assert_eq!(reply, expected);
}

#[test]
fn bulk_length_over_max_frame_gets_a_protocol_error_and_a_close() {
    let server = resp(&["--buffer", "16KiB"]);
    let mut s = server.connect();
    // Announces 1 MiB: rejected on the `$len` line, no payload sent.
    s.write_all(b"*2\r\n$3\r\nGET\r\n$1048576\r\n").unwrap();
    let (reply, _, _) = expect_closed(&mut s, Duration::from_secs(5));
    assert_eq!(reply, b"-ERR Protocol error: invalid bulk length\r\n");
    server.wait_metric(
        "holdfast_connections_closed_total",
        &[("reason", "protocol_error")],
        1.0,
        Duration::from_secs(5),
    );
}

#[test]
fn garbage_gets_a_protocol_error_and_others_go_on() {
    let server = resp(&[]);
    let mut good = server.connect();
    exchange(&mut good, &[b"SET", b"kept", b"yes"], b"+OK\r\n");
    for garbage in [&b"*abc\r\n"[..], b"*1\r\nxyz\r\n", b"*1\r\n$-5\r\n"] {
        let mut bad = server.connect();
        bad.write_all(garbage).unwrap();
        let (reply, _, _) = expect_closed(&mut bad, Duration::from_secs(5));
        assert!(
            reply.starts_with(b"-ERR Protocol error: "),
            "{:?}",
            String::from_utf8_lossy(&reply)
        );
    }
    exchange(&mut good, &[b"GET", b"kept"], b"$3\r\nyes\r\n");
    server.wait_metric(
        "holdfast_connections_closed_total",
        &[("reason", "protocol_error")],
        3.0,
        Duration::from_secs(5),
    );
}

#[test]
fn writes_past_max_memory_get_oom_and_nothing_is_lost() {
    let server = resp(&["--max-memory", "4KiB"]);
    let mut s = server.connect();
    let value = [b'v'; 500];
    let mut stored = 0;
    loop {
        let key = format!("k{stored}");
        s.write_all(&command(&[b"SET", key.as_bytes(), &value]))
            .unwrap();
        let reply = read_exact_timeout(&mut s, 5, Duration::from_secs(5));
        if reply == b"+OK\r\n" {
            stored += 1;
            assert!(stored < 100, "the limit was never reached");
            continue;
        }
        assert_eq!(reply, b"-OOM ");
        let rest = b"command not allowed when used memory > 'maxmemory'.\r\n";
        assert_eq!(
            read_exact_timeout(&mut s, rest.len(), Duration::from_secs(5)),
            rest
        );
        break;
    }
    assert!(stored >= 6, "{stored} keys stored under 4KiB");
    let mut expected = format!("${}\r\n", value.len()).into_bytes();
    expected.extend(value);
    expected.extend(b"\r\n");
    for i in 0..stored {
        let key = format!("k{i}");
        exchange(&mut s, &[b"GET", key.as_bytes()], &expected);
    }
    // Deleting frees room again.
    exchange(&mut s, &[b"DEL", b"k0"], b":1\r\n");
    exchange(&mut s, &[b"SET", b"again", b"x"], b"+OK\r\n");
}

#[test]
fn mget_too_large_for_the_ring_gets_an_error_not_an_overflow() {
    let server = resp(&["--buffer", "8KiB"]);
    let mut s = server.connect();
    let value = [b'x'; 3000];
    exchange(&mut s, &[b"SET", b"big", &value], b"+OK\r\n");
    exchange(
        &mut s,
        &[b"MGET", b"big", b"big", b"big"],
        b"-ERR reply too large for the connection buffer\r\n",
    );
    exchange(&mut s, &[b"PING"], b"+PONG\r\n");
}

#[test]
fn debug_commands_need_the_flag() {
    let server = resp(&[]);
    let mut s = server.connect();
    s.write_all(&command(&[b"DEBUG", b"PANIC"])).unwrap();
    let reply = read_exact_timeout(&mut s, 4, Duration::from_secs(5));
    assert_eq!(reply, b"-ERR");
}

#[test]
fn debug_panic_closes_only_that_connection() {
    let server = resp(&["--enable-debug-commands"]);
    let mut others: Vec<TcpStream> = (0..5).map(|_| server.connect()).collect();
    for (i, s) in others.iter_mut().enumerate() {
        let key = format!("client{i}");
        exchange(s, &[b"SET", key.as_bytes(), b"safe"], b"+OK\r\n");
    }
    let mut victim = server.connect();
    victim.write_all(&command(&[b"DEBUG", b"PANIC"])).unwrap();
    let (reply, _, _) = expect_closed(&mut victim, Duration::from_secs(5));
    assert!(reply.is_empty());
    server.wait_metric(
        "holdfast_connections_closed_total",
        &[("reason", "panic")],
        1.0,
        Duration::from_secs(5),
    );
    for (i, s) in others.iter_mut().enumerate() {
        let key = format!("client{i}");
        exchange(s, &[b"GET", key.as_bytes()], b"$4\r\nsafe\r\n");
    }
    exchange(&mut others[0], &[b"DEBUG", b"SLEEP", b"10"], b"+OK\r\n");
}

#[test]
fn keys_are_shared_across_shards() {
    let server = resp(&["--threads", "2"]);
    let mut conns: Vec<TcpStream> = (0..16).map(|_| server.connect()).collect();
    for (i, s) in conns.iter_mut().enumerate() {
        let key = format!("from{i}");
        exchange(s, &[b"SET", key.as_bytes(), b"seen"], b"+OK\r\n");
    }
    // Every connection reads every key, whichever shard wrote it.
    let count = conns.len();
    for s in conns.iter_mut() {
        for i in 0..count {
            let key = format!("from{i}");
            exchange(s, &[b"GET", key.as_bytes()], b"$4\r\nseen\r\n");
        }
    }
    exchange(&mut conns[3], &[b"DBSIZE"], b":16\r\n");
}

#[test]
fn keys_expire() {
    let server = resp(&[]);
    let mut s = server.connect();
    exchange(&mut s, &[b"SET", b"short", b"v", b"PX", b"100"], b"+OK\r\n");
    exchange(&mut s, &[b"SET", b"long", b"v", b"EX", b"100"], b"+OK\r\n");
    exchange(&mut s, &[b"GET", b"short"], b"$1\r\nv\r\n");
    let gone = wait_until(Duration::from_secs(3), || {
        s.write_all(&command(&[b"GET", b"short"])).unwrap();
        let reply = read_exact_timeout(&mut s, 5, Duration::from_secs(5));
        if reply == b"$-1\r\n" {
            return true;
        }
        // `$1\r\nv` so far: the `\r\n` after the value is still to come.
        read_exact_timeout(&mut s, 2, Duration::from_secs(5));
        false
    });
    assert!(gone, "a PX 100 key outlived 3 s");
    exchange(&mut s, &[b"TTL", b"long"], b":100\r\n");
    exchange(
        &mut s,
        &[b"SET", b"k", b"v", b"EX", b"0"],
        b"-ERR invalid expire time in 'set' command\r\n",
    );
}

#[test]
fn redis_cli_works_as_a_newcomer_would_try_it() {
    let server = resp(&[]);
    assert_eq!(redis_cli(&server, &["PING"]), "PONG");
    assert_eq!(redis_cli(&server, &["SET", "greeting", "hello"]), "OK");
    assert_eq!(redis_cli(&server, &["GET", "greeting"]), "hello");
    assert_eq!(redis_cli(&server, &["INCR", "visits"]), "1");
    assert_eq!(
        redis_cli(&server, &["MGET", "greeting", "visits"]),
        "hello\n1"
    );
    assert_eq!(redis_cli(&server, &["DBSIZE"]), "2");
    let info = redis_cli(&server, &["INFO"]);
    assert!(info.contains("# Server"), "{info}");
    assert!(info.contains("connected_clients:1"), "{info}");
    assert!(info.contains("total_commands_processed:"), "{info}");
    assert!(
        redis_cli(&server, &["NOSUCH"]).starts_with("ERR unknown command 'NOSUCH'"),
        "unknown command"
    );
    // Piped commands, as in `redis-cli < file`.
    let port = server.addr.port().to_string();
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SET a 1\nGET a\nDEL a\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "OK\n1\n1\n");
}

/// Sends `args` and returns the integer reply.
fn integer(stream: &mut TcpStream, args: &[&[u8]]) -> i64 {
    stream.write_all(&command(args)).unwrap();
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        line.extend(read_exact_timeout(stream, 1, Duration::from_secs(5)));
    }
    let text = String::from_utf8_lossy(&line);
    assert!(text.starts_with(':'), "not an integer reply: {text:?}");
    text[1..text.len() - 2].parse().unwrap()
}

/// SETs per write while filling the store: their replies (at most 60
/// bytes each) fit the socket buffers, so the writer never waits on them.
const FILL_BATCH: usize = 256;

/// One reply line (up to its CRLF), read within the I/O timeout.
fn read_line(stream: &mut TcpStream) -> Vec<u8> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    while !line.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).expect("a reply line");
        line.push(byte[0]);
    }
    line
}

#[test]
fn expired_keys_are_reclaimed_with_no_commands_arriving() {
    // The reproduction: fill 1 MiB with keys that soon expire, let
    // them expire, then write half as many again. The fill is pipelined in
    // batches (a few milliseconds in all) and the keys live 1 s, so none
    // expires while the store fills: `stored` is what 1 MiB holds at once
    // (were keys to expire meanwhile, reclaiming them would let more in,
    // and half of that might not fit again).
    let server = resp(&["--max-memory", "1MiB"]);
    let mut s = server.connect();
    let value = [b'v'; 400];
    let mut stored = 0;
    let mut full = false;
    while !full {
        let mut batch = Vec::new();
        for i in stored..stored + FILL_BATCH {
            let key = format!("k{i}");
            batch.extend(command(&[b"SET", key.as_bytes(), &value, b"PX", b"1000"]));
        }
        s.write_all(&batch).unwrap();
        for _ in 0..FILL_BATCH {
            match read_line(&mut s).as_slice() {
                b"+OK\r\n" if !full => stored += 1,
                b"-OOM command not allowed when used memory > 'maxmemory'.\r\n" => full = true,
                other => panic!("SET {stored}: {:?}", String::from_utf8_lossy(other)),
            }
        }
    }
    assert!(stored > 2000, "{stored} keys of 400 B in 1 MiB");
    // DBSIZE touches no key: only the active expiry can bring it down
    // (fewer than 64 polls, so not the old every-64-commands sweep).
    let mut dbsize = -1;
    let emptied = wait_until(Duration::from_secs(5), || {
        std::thread::sleep(Duration::from_millis(100));
        dbsize = integer(&mut s, &[b"DBSIZE"]);
        dbsize == 0
    });
    assert!(emptied, "DBSIZE still {dbsize} 4 s after every key expired");
    for i in 0..stored / 2 {
        let key = format!("fresh{i}");
        exchange(&mut s, &[b"SET", key.as_bytes(), &value], b"+OK\r\n");
    }
    exchange(
        &mut s,
        &[b"DBSIZE"],
        format!(":{}\r\n", stored / 2).as_bytes(),
    );
}

#[test]
fn replies_that_outgrow_the_ring_get_an_error_and_scan_pages_shrink() {
    let server = resp(&["--buffer", "4KiB"]);
    let mut s = server.connect();
    let mut keys = Vec::new();
    for i in 0..10 {
        let key = format!("{i}{}", "k".repeat(900));
        exchange(&mut s, &[b"SET", key.as_bytes(), b"v"], b"+OK\r\n");
        keys.push(key);
    }
    // Ten 900-byte names do not fit a 4 KiB reply.
    exchange(
        &mut s,
        &[b"KEYS", b"*"],
        b"-ERR reply too large for the connection buffer\r\n",
    );
    // SCAN returns what fits and a cursor to go on from.
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = b"0".to_vec();
    let mut calls = 0;
    loop {
        let mut client = util::Resp::from(s.try_clone().unwrap());
        let reply = client.call(&[b"SCAN", &cursor, b"COUNT", b"100"]);
        calls += 1;
        let text = String::from_utf8_lossy(&reply).into_owned();
        let mut lines = text.split("\r\n");
        assert_eq!(lines.next(), Some("*2"));
        lines.next();
        cursor = lines.next().unwrap().as_bytes().to_vec();
        seen.extend(lines.filter(|l| l.len() > 100).map(str::to_string));
        if cursor == b"0" {
            break;
        }
    }
    assert!(calls > 1, "one SCAN call fit ten 900-byte keys in 4 KiB");
    assert_eq!(seen.len(), 10);
    // A value may not outgrow what a client could send (--max-frame).
    let big = vec![b'x'; 3000];
    exchange(&mut s, &[b"SET", b"big", &big], b"+OK\r\n");
    exchange(
        &mut s,
        &[b"APPEND", b"big", &big],
        b"-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n",
    );
    exchange(
        &mut s,
        &[b"SETRANGE", b"big", b"5000", b"x"],
        b"-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n",
    );
    let mut expected = b"$3000\r\n".to_vec();
    expected.extend(&big);
    expected.extend(b"\r\n");
    exchange(&mut s, &[b"GETSET", b"big", b"small"], &expected);
    exchange(&mut s, &[b"PING"], b"+PONG\r\n");
    server.wait_metric(
        "holdfast_connections_closed_total",
        &[("reason", "output_overflow")],
        0.0,
        Duration::from_secs(1),
    );
}
