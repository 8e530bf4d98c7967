//! Which replicas may serve reads (`--read-from replica|prefer-replica`):
//! those their primary lists in `INFO replication` as `state=online` with
//! a `lag` (Redis's seconds since the replica's last acknowledgement, sent
//! every second) of at most `--replica-max-lag`. A replica whose link is
//! down or syncing, that lags, or that its primary no longer lists (it
//! died: its connection closed) serves no reads until it is fit again; the
//! reads of its slots go to their primary.

/// `INFO replication`, encoded.
pub const INFO_REPLICATION: &[u8] = b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n";

/// The text of an `INFO` reply (one bulk string); empty if it is not one.
pub fn info_text(reply: &[u8]) -> String {
    let Some(rest) = reply.strip_prefix(b"$") else {
        return String::new();
    };
    let Some(end) = rest.iter().position(|&b| b == b'\r') else {
        return String::new();
    };
    let len: Option<usize> = std::str::from_utf8(&rest[..end])
        .ok()
        .and_then(|n| n.parse().ok());
    let body = len.and_then(|len| rest.get(end + 2..end + 2 + len));
    body.map_or_else(String::new, |body| {
        String::from_utf8_lossy(body).into_owned()
    })
}

/// Each replica `info` (a primary's `INFO replication` text) lists, as
/// `ip:port`, with `Ok` if it is fit to serve reads at `max_lag` seconds,
/// else why not.
pub fn listed(info: &str, max_lag: u64) -> Vec<(String, Result<(), String>)> {
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.trim_end().split_once(':')?;
            let number = name.strip_prefix("slave")?;
            number.bytes().all(|b| b.is_ascii_digit()).then_some(fields)
        })
        .filter_map(|fields| {
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
            };
            let (ip, port) = (field("ip")?, field("port")?);
            let addr = match ip.contains(':') {
                true => format!("[{ip}]:{port}"),
                false => format!("{ip}:{port}"),
            };
            let lag = field("lag").and_then(|lag| lag.parse::<u64>().ok());
            let verdict = match (field("state"), lag) {
                (Some("online"), Some(lag)) if lag <= max_lag => Ok(()),
                (Some("online"), Some(lag)) => Err(format!("lags {lag} s behind its primary")),
                (state, _) => Err(format!("link {}", state.unwrap_or("state unknown"))),
            };
            Some((addr, verdict))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A primary's `INFO replication` as Redis 7 writes it.
    const INFO: &str = "# Replication\r\nrole:master\r\nconnected_slaves:3\r\n\
slave0:ip=127.0.0.1,port=7105,state=online,offset=1402,lag=0\r\n\
slave1:ip=127.0.0.1,port=7106,state=online,offset=1300,lag=9\r\n\
slave2:ip=::1,port=7107,state=wait_bgsave,offset=0,lag=0\r\n\
master_failover_state:no-failover\r\nmaster_repl_offset:1402\r\n";

    #[test]
    fn info_replies_are_read_as_text() {
        assert_eq!(info_text(b"$5\r\nrole:\r\n"), "role:");
        assert_eq!(info_text(b"-ERR nope\r\n"), "");
        assert_eq!(info_text(b"$9\r\nshort\r\n"), "");
    }

    #[test]
    fn online_replicas_within_the_lag_are_fit() {
        let five = listed(INFO, 5);
        assert_eq!(five.len(), 3);
        assert_eq!(five[0], ("127.0.0.1:7105".to_string(), Ok(())));
        assert_eq!(
            five[1],
            (
                "127.0.0.1:7106".to_string(),
                Err("lags 9 s behind its primary".to_string())
            )
        );
        assert_eq!(
            five[2],
            (
                "[::1]:7107".to_string(),
                Err("link wait_bgsave".to_string())
            )
        );
        assert!(listed(INFO, 10)[1].1.is_ok(), "9 s is within 10 s");
        assert!(listed("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n", 5).is_empty());
    }
}
