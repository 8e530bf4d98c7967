//! Server and connection commands: INFO, HELLO, CONFIG GET, COMMAND,
//! CLIENT, TIME, DEBUG.

use std::fmt::Write as _;
use std::time::Duration;

use super::reply::{EMPTY_ARRAY, OK, Out, Sink, c_str, no_newlines};
use super::session::Session;
use super::table::{self, COMMANDS};
use super::{DEBUG_SLEEP_MAX_MS, Kv, REDIS_VERSION, glob};
use crate::engine::codec::resp::parse_int;
use crate::engine::metrics::{CloseReason, ShardMetrics};

/// The INFO sections, in Redis's order, and whether the default page
/// shows them.
const SECTIONS: [&str; 5] = ["server", "clients", "memory", "stats", "keyspace"];

/// `-ERR unknown subcommand '<sub>'. Try <NAME> HELP.`
pub(super) fn unknown_subcommand(name: &str, sub: &[u8], out: &mut dyn Sink) {
    let sub = c_str(sub);
    let mut text = b"unknown subcommand '".to_vec();
    text.extend_from_slice(&sub[..sub.len().min(128)]);
    text.extend_from_slice(format!("'. Try {} HELP.", name.to_ascii_uppercase()).as_bytes());
    out.error(&text);
}

impl Kv {
    /// INFO [section ...]: server, clients, memory, stats and keyspace, with
    /// Redis's field names, from counters (no key is walked).
    pub(super) fn info(&self, argv: &[&[u8]], out: &mut dyn Sink) {
        let asked = &argv[1..];
        let every = asked.is_empty()
            || asked.iter().any(|s| {
                [&b"all"[..], b"default", b"everything"]
                    .iter()
                    .any(|w| s.eq_ignore_ascii_case(w))
            });
        let mut text = String::new();
        for section in SECTIONS {
            if every
                || asked
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(section.as_bytes()))
            {
                if !text.is_empty() {
                    text.push_str("\r\n");
                }
                self.info_section(section, &mut text);
            }
        }
        out.verbatim(text.as_bytes());
    }

    fn info_section(&self, section: &str, text: &mut String) {
        match section {
            "server" => self.info_server(text),
            "clients" => self.info_clients(text),
            "memory" => self.info_memory(text),
            "stats" => self.info_stats(text),
            _ => self.info_keyspace(text),
        }
    }

    /// One figure summed over the shards.
    fn sum_shards(&self, get: impl Fn(&ShardMetrics) -> u64) -> u64 {
        self.registry.shards.iter().map(|s| get(s)).sum()
    }

    fn info_server(&self, text: &mut String) {
        let uptime = self.started.elapsed().as_secs();
        let _ = write!(
            text,
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\n\
             os:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime}\r\n\
             uptime_in_days:{}\r\nhz:10\r\nholdfast_version:{}\r\nshards:{}\r\n\
             backend:{}\r\n",
            std::env::consts::OS,
            std::process::id(),
            self.port,
            uptime / 86_400,
            env!("CARGO_PKG_VERSION"),
            self.threads,
            self.registry.backend,
        );
    }

    fn info_clients(&self, text: &mut String) {
        let _ = write!(
            text,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\n",
            self.sum_shards(|s| s.connections_open.get()),
            self.max_conns,
        );
    }

    fn info_memory(&self, text: &mut String) {
        let used = self.store.used_memory();
        let max = self.store.max_memory();
        let _ = write!(
            text,
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\n\
             maxmemory:{max}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:noeviction\r\n",
            human_bytes(used as u64),
            human_bytes(max as u64),
        );
    }

    fn info_stats(&self, text: &mut String) {
        let protocol_errors = CloseReason::ProtocolError.index();
        let (channels, patterns) = self.pubsub_counts();
        let _ = write!(
            text,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             total_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\n\
             rejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:0\r\n\
             pubsub_channels:{channels}\r\npubsub_patterns:{patterns}\r\n\
             pubsubshard_channels:0\r\nprotocol_errors:{}\r\nhandler_panics:{}\r\n",
            self.sum_shards(|s| s.accepted.get()),
            self.sum_shards(|s| s.frames.get()),
            self.sum_shards(|s| s.bytes_read.get()),
            self.sum_shards(|s| s.bytes_written.get()),
            self.sum_shards(|s| s.rejected.iter().map(|c| c.get()).sum()),
            self.store.expired_keys(),
            self.sum_shards(|s| s.closed[protocol_errors].get()),
            self.sum_shards(|s| s.handler_panics.get()),
        );
    }

    fn info_keyspace(&self, text: &mut String) {
        text.push_str("# Keyspace\r\n");
        let keys = self.store.len();
        if keys > 0 {
            let _ = write!(
                text,
                "db0:keys={keys},expires={},avg_ttl={}\r\n",
                self.store.volatile_len(),
                self.store.avg_ttl(),
            );
        }
    }

    /// HELLO [protover [AUTH user pass] [SETNAME name]]: switches the
    /// connection to RESP2 or RESP3 and describes the server (a map in
    /// RESP3). Only the `default` user exists, without a password, as in
    /// a Redis with no ACL set up.
    pub(super) fn hello(&self, session: &mut Session, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        let mut version = None;
        if let Some(arg) = argv.get(1) {
            match parse_int(arg) {
                None => return out.error(b"Protocol version is not an integer or out of range"),
                Some(v @ 2..=3) => version = Some(v),
                Some(_) => return out.put(b"-NOPROTO unsupported protocol version\r\n"),
            }
        }
        let mut j = 2;
        while j < argv.len() {
            let more = argv.len() - 1 - j;
            let opt = argv[j];
            if opt.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
                if argv[j + 1] != b"default" {
                    return out.put(
                        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
                    );
                }
                j += 3;
            } else if opt.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
                if argv[j + 1].iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
                    return out.error(
                        b"Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                j += 2;
            } else {
                let mut text = b"Syntax error in HELLO option '".to_vec();
                text.extend_from_slice(c_str(opt));
                text.push(b'\'');
                return out.error(&text);
            }
        }
        if let Some(version) = version {
            session.resp3 = version == 3;
            out.resp3 = session.resp3;
        }
        out.map(7);
        for (key, value) in [
            ("server", "redis"),
            ("version", REDIS_VERSION),
            ("proto", ""),
            ("id", ""),
            ("mode", "standalone"),
            ("role", "master"),
        ] {
            out.bulk(key.as_bytes());
            match key {
                "proto" => out.integer(if session.resp3 { 3 } else { 2 }),
                "id" => out.integer(self.shard as i64),
                _ => out.bulk(value.as_bytes()),
            }
        }
        out.bulk(b"modules");
        out.put(EMPTY_ARRAY);
    }

    /// CONFIG GET pattern [pattern ...], over the few parameters clients
    /// ask for.
    pub(super) fn config(&self, argv: &[&[u8]], out: &mut dyn Sink) {
        if !argv[1].eq_ignore_ascii_case(b"GET") {
            return unknown_subcommand("config", argv[1], out);
        }
        if argv.len() < 3 {
            return out.wrong_arity("config|get");
        }
        let max_memory = self.store.max_memory().to_string();
        let params: [(&str, &str); 4] = [
            ("save", ""),
            ("appendonly", "no"),
            ("maxmemory", &max_memory),
            ("databases", "1"),
        ];
        let mut found: Vec<(&str, &str)> = Vec::new();
        for pattern in &argv[2..] {
            let pattern = pattern.to_ascii_lowercase();
            for (param, value) in params {
                if glob::matches(&pattern, param.as_bytes())
                    && !found.iter().any(|(p, _)| *p == param)
                {
                    found.push((param, value));
                }
            }
        }
        out.map(found.len());
        for (param, value) in found {
            out.bulk(param.as_bytes());
            out.bulk(value.as_bytes());
        }
    }

    /// COMMAND [COUNT | INFO name ... | DOCS name ... | LIST].
    pub(super) fn command(&self, argv: &[&[u8]], out: &mut dyn Sink) {
        let Some(sub) = argv.get(1) else {
            out.array(COMMANDS.len());
            for command in COMMANDS {
                command.render_info(out);
            }
            return;
        };
        let sub = sub.to_ascii_uppercase();
        match sub.as_slice() {
            b"COUNT" if argv.len() == 2 => out.integer(COMMANDS.len() as i64),
            b"LIST" if argv.len() == 2 => {
                out.array(COMMANDS.len());
                for command in COMMANDS {
                    out.bulk(command.name.as_bytes());
                }
            }
            b"INFO" if argv.len() == 2 => self.command(&argv[..1], out),
            b"INFO" => {
                out.array(argv.len() - 2);
                for name in &argv[2..] {
                    match table::lookup(name) {
                        Some(command) => command.render_info(out),
                        None => out.null(),
                    }
                }
            }
            // Documentation is not served: an empty map for any name.
            b"DOCS" => out.map(0),
            b"COUNT" | b"LIST" => out.wrong_arity(if sub == b"COUNT" {
                "command|count"
            } else {
                "command|list"
            }),
            _ => unknown_subcommand("command", argv[1], out),
        }
    }

    /// CLIENT GETNAME / SETNAME / SETINFO / ID: names are not kept.
    pub(super) fn client(&self, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        let sub = argv[1].to_ascii_uppercase();
        match (sub.as_slice(), argv.len()) {
            (b"GETNAME", 2) => out.null(),
            (b"ID", 2) => out.integer(self.shard as i64),
            (b"SETNAME", 3) | (b"SETINFO", 4) => out.put(OK),
            (b"GETNAME" | b"ID" | b"SETNAME" | b"SETINFO", _) => {
                let name = format!("client|{}", String::from_utf8_lossy(&sub).to_lowercase());
                out.wrong_arity(&name);
            }
            _ => unknown_subcommand("client", argv[1], out),
        }
    }

    /// TIME: Unix seconds and microseconds, as two bulk strings.
    pub(super) fn time(&self, out: &mut Out<'_, '_>) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        out.array(2);
        out.bulk(now.as_secs().to_string().as_bytes());
        out.bulk(now.subsec_micros().to_string().as_bytes());
    }

    /// DEBUG PANIC | SLEEP ms, only with `--enable-debug-commands`.
    pub(super) fn debug(&self, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        if !self.debug_commands {
            return out.error(
                b"DEBUG command not allowed; start the server with --enable-debug-commands",
            );
        }
        let sub = argv[1].to_ascii_uppercase();
        match sub.as_slice() {
            b"PANIC" => panic!("DEBUG PANIC"),
            b"SLEEP" => match argv.get(2).and_then(|ms| parse_int(ms)) {
                Some(ms) if (0..=DEBUG_SLEEP_MAX_MS as i64).contains(&ms) => {
                    std::thread::sleep(Duration::from_millis(ms as u64));
                    out.put(OK);
                }
                _ => out.error(b"DEBUG SLEEP takes 0 to 10000 milliseconds"),
            },
            _ => out.error(&no_newlines(b"DEBUG subcommands: PANIC, SLEEP <ms>")),
        }
    }
}

/// Redis's `bytesToHuman`: `960.55K`, `64.00M`, `0B`.
fn human_bytes(n: u64) -> String {
    let n = n as f64;
    const UNITS: [(f64, &str); 5] = [
        (1024.0, "K"),
        (1024.0 * 1024.0, "M"),
        (1024.0 * 1024.0 * 1024.0, "G"),
        (1024.0 * 1024.0 * 1024.0 * 1024.0, "T"),
        (1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0, "P"),
    ];
    if n < 1024.0 {
        return format!("{}B", n as u64);
    }
    let (scale, unit) = UNITS
        .iter()
        .rev()
        .find(|(scale, _)| n >= *scale)
        .copied()
        .unwrap_or(UNITS[0]);
    format!("{:.2}{unit}", n / scale)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::engine::metrics::Registry;
    use crate::engine::service::ServiceContext;

    /// INFO of an empty store over two shards with distinct figures,
    /// every section byte for byte (the server section's pid and uptime
    /// masked).
    #[test]
    fn info_text_pinned() {
        let shards: Vec<Arc<ShardMetrics>> = (1..=2u64)
            .map(|n| {
                let s = ShardMetrics::default();
                s.connections_open.set(n);
                s.accepted.add(10 * n);
                s.frames.add(100 * n);
                s.bytes_read.add(1000 * n);
                s.bytes_written.add(2000 * n);
                s.rejected[0].add(3 * n);
                s.rejected[1].add(5 * n);
                s.closed[CloseReason::ProtocolError.index()].add(7 * n);
                s.closed[CloseReason::Peer.index()].add(11 * n);
                s.handler_panics.add(13 * n);
                Arc::new(s)
            })
            .collect();
        let registry = Arc::new(Registry::new(shards, "epoll"));
        let config = Config {
            threads: 2,
            max_conns: 77,
            ..Config::default()
        };
        let pusher = crate::engine::push::Pusher::for_tests();
        let context = ServiceContext {
            shard: 0,
            config: &config,
            registry: &registry,
            pusher: &pusher,
            upstream_adder: None,
        };
        let store = Arc::new(super::super::store::Store::new(2, 1 << 20));
        let kv = Kv::new(store, &context);
        let mut text = String::new();
        for section in SECTIONS {
            kv.info_section(section, &mut text);
        }
        // Every line ends in CRLF; the pid, uptime and OS vary.
        assert!(text.ends_with("\r\n") && !text.replace("\r\n", "").contains('\n'));
        let masked: Vec<String> = text
            .lines()
            .map(|line| match line.split_once(':') {
                Some((key, _)) if ["process_id", "uptime_in_seconds", "os"].contains(&key) => {
                    format!("{key}:N")
                }
                _ => line.to_owned(),
            })
            .collect();
        let expected = [
            "# Server",
            "redis_version:7.0.0",
            "redis_mode:standalone",
            "os:N",
            "process_id:N",
            "tcp_port:7000",
            "uptime_in_seconds:N",
            "uptime_in_days:0",
            "hz:10",
            "holdfast_version:0.1.0",
            "shards:2",
            "backend:epoll",
            "# Clients",
            "connected_clients:3",
            "maxclients:77",
            "blocked_clients:0",
            "# Memory",
            "used_memory:0",
            "used_memory_human:0B",
            "maxmemory:1048576",
            "maxmemory_human:1.00M",
            "maxmemory_policy:noeviction",
            "# Stats",
            "total_connections_received:30",
            "total_commands_processed:300",
            "total_net_input_bytes:3000",
            "total_net_output_bytes:6000",
            "rejected_connections:24",
            "expired_keys:0",
            "evicted_keys:0",
            "pubsub_channels:0",
            "pubsub_patterns:0",
            "pubsubshard_channels:0",
            "protocol_errors:21",
            "handler_panics:39",
            "# Keyspace",
        ];
        assert_eq!(masked, expected);
    }
}
