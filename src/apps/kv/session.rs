//! A connection's state in the key-value service, kept by the engine in
//! the connection's slot: its protocol (RESP2, or RESP3 after `HELLO 3`)
//! and how many Pub/Sub subscriptions it holds (the subscriptions
//! themselves are the engine's groups), and what subscribed mode allows.

use super::reply::{Sink, c_str};
use super::table::{Command, Op};
use crate::engine::service::Handle;

/// One connection's state: 32 bytes, no allocation (every connection
/// has one, subscribed or not).
#[derive(Default, Debug)]
pub struct Session {
    /// Its handle, to tell its own messages.
    pub handle: Option<Handle>,
    /// Channels and patterns it is subscribed to (its groups, as the
    /// engine counts them after each (un)subscribe): the count Redis's
    /// (un)subscribe replies carry.
    pub subscriptions: u32,
    /// Messages it published to itself that its PUBLISH reply already
    /// carried (RESP3, where Redis writes them before the reply): the
    /// engine's delivery of these many is skipped.
    pub skip_own: u16,
    /// It speaks RESP3.
    pub resp3: bool,
}

impl Session {
    /// In RESP2 subscribed mode, where only the Pub/Sub commands, PING,
    /// QUIT and RESET may run.
    pub fn restricted(&self) -> bool {
        !self.resp3 && self.subscriptions > 0
    }

    /// Back to a new connection's state (RESET), its handle kept.
    pub fn reset(&mut self) {
        *self = Session {
            handle: self.handle,
            ..Session::default()
        };
    }
}

/// The commands subscribed mode allows.
fn allowed(op: Op) -> bool {
    matches!(
        op,
        Op::Subscribe
            | Op::Unsubscribe
            | Op::Psubscribe
            | Op::Punsubscribe
            | Op::Ping
            | Op::Quit
            | Op::Reset
    )
}

/// Redis 7.0's subcommands of the container commands this service knows,
/// with their arities: in subscribed mode Redis names a refused command by
/// its full name (`config|get`), after checking that the subcommand
/// exists and has the arguments it needs.
const SUBCOMMANDS: &[(&str, &[(&str, i32)])] = &[
    (
        "client",
        &[
            ("caching", 3),
            ("getname", 2),
            ("getredir", 2),
            ("help", 2),
            ("id", 2),
            ("info", 2),
            ("kill", -3),
            ("list", -2),
            ("no-evict", 3),
            ("pause", -3),
            ("reply", 3),
            ("setname", 3),
            ("tracking", -3),
            ("trackinginfo", 2),
            ("unblock", -3),
            ("unpause", 2),
        ],
    ),
    (
        "command",
        &[
            ("count", 2),
            ("docs", -2),
            ("getkeys", -4),
            ("getkeysandflags", -4),
            ("help", 2),
            ("info", -2),
            ("list", -2),
        ],
    ),
    (
        "config",
        &[
            ("get", -3),
            ("help", 2),
            ("resetstat", 2),
            ("rewrite", 2),
            ("set", -4),
        ],
    ),
    (
        "pubsub",
        &[
            ("channels", -2),
            ("help", 2),
            ("numpat", 2),
            ("numsub", -2),
            ("shardchannels", -2),
            ("shardnumsub", -2),
        ],
    ),
];

/// The commands subscribed mode allows that this service does not serve
/// (they get the unsupported-command error there too).
const ALLOWED_UNSUPPORTED: &[&str] = &["ssubscribe", "sunsubscribe"];

/// In RESP2 subscribed mode, refuses `command` (known, its arity checked)
/// unless it is allowed there, writing Redis's error; true if refused.
pub fn refuse(session: &Session, command: &Command, argv: &[&[u8]], out: &mut dyn Sink) -> bool {
    if !session.restricted() || allowed(command.op) {
        return false;
    }
    let Some(subcommands) = SUBCOMMANDS
        .iter()
        .find(|(name, _)| *name == command.name)
        .map(|(_, subs)| *subs)
        .filter(|_| argv.len() >= 2)
    else {
        cannot_execute(command.name, out);
        return true;
    };
    let sub = argv[1].to_ascii_lowercase();
    match subcommands.iter().find(|(name, _)| name.as_bytes() == sub) {
        Some(&(name, arity)) => {
            let full = format!("{}|{name}", command.name);
            let argc = argv.len() as i32;
            if (arity >= 0 && argc != arity) || argc < -arity {
                out.wrong_arity(&full);
            } else {
                cannot_execute(&full, out);
            }
        }
        None => {
            let mut text = b"unknown subcommand '".to_vec();
            let sub = c_str(argv[1]);
            text.extend_from_slice(&sub[..sub.len().min(128)]);
            text.extend_from_slice(b"'. Try ");
            text.extend_from_slice(command.name.to_ascii_uppercase().as_bytes());
            text.extend_from_slice(b" HELP.");
            out.error(&text);
        }
    }
    true
}

/// In RESP2 subscribed mode, refuses a command this service does not
/// serve (`name`, any case) unless subscribed mode allows it; true if
/// refused.
pub fn refuse_unsupported(session: &Session, name: &[u8], out: &mut dyn Sink) -> bool {
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    if !session.restricted() || ALLOWED_UNSUPPORTED.contains(&name.as_str()) {
        return false;
    }
    cannot_execute(&name, out);
    true
}

/// Redis 7's error for a command subscribed mode does not allow.
fn cannot_execute(name: &str, out: &mut dyn Sink) {
    out.error(
        format!(
            "Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / \
             RESET are allowed in this context"
        )
        .as_bytes(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::kv::reply::Text;
    use crate::apps::kv::table::lookup;

    fn refused(session: &Session, argv: &[&[u8]]) -> Option<String> {
        let mut text = Text::default();
        text.reset(1 << 10);
        let command = lookup(argv[0]).expect("a known command");
        refuse(session, command, argv, &mut text).then(|| String::from_utf8(text.bytes).unwrap())
    }

    #[test]
    fn subscribed_resp2_allows_only_pubsub_ping_quit_reset() {
        let mut session = Session {
            subscriptions: 1,
            ..Session::default()
        };
        assert!(session.restricted());
        assert_eq!(
            refused(&session, &[b"GET", b"k"]).as_deref(),
            Some(
                "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / \
                 QUIT / RESET are allowed in this context\r\n"
            )
        );
        for allowed in [
            &b"PING"[..],
            b"QUIT",
            b"RESET",
            b"UNSUBSCRIBE",
            b"PSUBSCRIBE",
        ] {
            assert_eq!(refused(&session, &[allowed, b"x"]), None);
        }
        let refused_config = refused(&session, &[b"config", b"GET", b"x"]).unwrap();
        assert!(refused_config.contains("'config|get'"), "{refused_config}");
        assert_eq!(
            refused(&session, &[b"PUBSUB", b"NUMPAT", b"x"]).as_deref(),
            Some("-ERR wrong number of arguments for 'pubsub|numpat' command\r\n")
        );
        assert_eq!(
            refused(&session, &[b"CLIENT", b"Foo"]).as_deref(),
            Some("-ERR unknown subcommand 'Foo'. Try CLIENT HELP.\r\n")
        );
        session.resp3 = true;
        assert_eq!(
            refused(&session, &[b"GET", b"k"]),
            None,
            "RESP3 has no limits"
        );
        session.reset();
        assert!(!session.resp3 && !session.restricted());
    }

    #[test]
    fn a_session_stays_small() {
        // The engine keeps one per connection slot.
        assert!(std::mem::size_of::<Option<Session>>() <= 32);
    }
}
