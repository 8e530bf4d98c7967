//! The commands about the client's own connection, which the proxy answers
//! itself because they mean nothing to an upstream that many clients
//! share: AUTH, HELLO, CLIENT ID / SETNAME / GETNAME / SETINFO / INFO; and
//! the gate that lets nothing else through before AUTH when `--requirepass`
//! or `--user` is set. Client libraries send these on connect (HELLO, then
//! CLIENT SETINFO with their name and version; AUTH when given a password).
//!
//! Replies use Redis 7's wording, so a library's error handling sees what
//! it would see from Redis, and its shapes in the client's protocol: RESP2,
//! or RESP3 after `HELLO 3` (kept in the [`Session`], whose dialect the
//! service calls upstreams in).

use crate::apps::proxy::command::{push_bulk, push_header};
use crate::config::Config;
use crate::engine::codec::resp::{Args, parse_int};
use crate::engine::service::Dialect;

/// The reply to any command but AUTH, HELLO and QUIT before the client
/// authenticated.
pub const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";

const WRONGPASS: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";

const NO_PASSWORD: &[u8] = b"-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n";

const HELLO_NOAUTH: &[u8] = b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n";

/// The Redis version the proxy reports (HELLO): the command set it speaks.
const VERSION: &[u8] = b"7.0.0";

/// The longest client name kept (Redis has no limit; a name is for
/// `CLIENT GETNAME` and logs, and it lives in every connection's slot).
pub const NAME_MAX: usize = 64;

/// Who may connect: the `default` user's password (`--requirepass`) and
/// named users (`--user NAME:PASSWORD`).
#[derive(Clone, Debug, Default)]
pub struct Users {
    /// `default` first when `--requirepass` is set.
    entries: Vec<User>,
}

/// A user's name and password.
#[derive(Clone, Debug)]
struct User {
    name: Box<[u8]>,
    password: Box<[u8]>,
}

impl Users {
    /// The users of validated settings.
    pub fn from_config(config: &Config) -> Users {
        let default = config
            .requirepass
            .iter()
            .map(|pass| ("default", pass.as_str()));
        let named = config.users.iter().filter_map(|user| user.split_once(':'));
        let entries = default
            .chain(named)
            .map(|(name, pass)| User {
                name: name.as_bytes().into(),
                password: pass.as_bytes().into(),
            })
            .collect();
        Users { entries }
    }

    /// Whether clients must authenticate before anything else.
    pub fn required(&self) -> bool {
        !self.entries.is_empty()
    }

    /// Whether `user` exists with `password`. Passwords are compared in
    /// time that does not depend on where they differ.
    fn check(&self, user: &[u8], password: &[u8]) -> bool {
        self.entries
            .iter()
            .any(|known| *known.name == *user && same(&known.password, password))
    }
}

/// `a == b` in time that depends only on the lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    let differ = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    differ == 0 && a.len() == b.len()
}

/// What the proxy keeps about one client connection, in its slot.
#[derive(Debug, Default)]
pub struct Session {
    /// AUTH (or HELLO AUTH) succeeded, or no password is required.
    pub authenticated: bool,
    /// `CLIENT ID`: unique in the process for its life.
    pub id: u64,
    /// `CLIENT SETNAME`, at most [`NAME_MAX`] bytes.
    name: Option<Box<[u8]>>,
    /// The protocol the client asked for (`HELLO 3`: RESP3), in which it
    /// gets every reply: the proxy's own, and the upstreams', from
    /// connections of this dialect.
    pub dialect: Dialect,
}

impl Session {
    /// A new connection's session: `authenticated` when no password is
    /// required.
    pub fn new(id: u64, authenticated: bool) -> Session {
        Session {
            authenticated,
            id,
            name: None,
            dialect: Dialect::Resp2,
        }
    }
}

/// The connection commands, with what they need.
pub struct Connection<'a> {
    /// Who may log in.
    pub users: &'a Users,
    /// `HELLO`'s `mode`: `standalone` or `cluster`.
    pub mode: &'static [u8],
}

impl Connection<'_> {
    /// `AUTH [user] password`.
    pub fn auth(&self, session: &mut Session, args: Args<'_>, out: &mut Vec<u8>) {
        let argv: Vec<&[u8]> = args.skip(1).collect();
        let (user, password): (&[u8], &[u8]) = match argv[..] {
            [password] => (b"default", password),
            [user, password] => (user, password),
            _ => return out.extend_from_slice(b"-ERR syntax error\r\n"),
        };
        if !self.users.required() {
            // As Redis without a password: `AUTH pass` is a mistake worth
            // saying; `AUTH default anything` logs in.
            let reply: &[u8] = match argv.len() {
                1 => NO_PASSWORD,
                _ if user == b"default" => b"+OK\r\n",
                _ => WRONGPASS,
            };
            return out.extend_from_slice(reply);
        }
        if self.users.check(user, password) {
            session.authenticated = true;
            out.extend_from_slice(b"+OK\r\n");
        } else {
            out.extend_from_slice(WRONGPASS);
        }
    }

    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`: protocol 2 or 3
    /// (a RESP3 client's calls go on upstream connections that speak it),
    /// switched to only once everything else succeeded, as Redis does;
    /// without a version, the protocol stays.
    pub fn hello(&self, session: &mut Session, args: Args<'_>, out: &mut Vec<u8>) {
        let argv: Vec<&[u8]> = args.skip(1).collect();
        let mut dialect = session.dialect;
        if let Some(version) = argv.first() {
            match parse_int(version) {
                Some(2) => dialect = Dialect::Resp2,
                Some(3) => dialect = Dialect::Resp3,
                Some(_) => {
                    return out.extend_from_slice(b"-NOPROTO unsupported protocol version\r\n");
                }
                None => {
                    return out.extend_from_slice(
                        b"-ERR Protocol version is not an integer or out of range\r\n",
                    );
                }
            }
        }
        let mut login = None;
        let mut name = None;
        let mut at = 1;
        while at < argv.len() {
            let option = argv[at];
            let more = argv.len() - at - 1;
            if option.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
                login = Some((argv[at + 1], argv[at + 2]));
                at += 3;
            } else if option.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
                name = Some(argv[at + 1]);
                at += 2;
            } else {
                out.extend_from_slice(b"-ERR Syntax error in HELLO option '");
                out.extend_from_slice(&printable(option));
                return out.extend_from_slice(b"'\r\n");
            }
        }
        if let Some((user, password)) = login {
            let allowed = if self.users.required() {
                self.users.check(user, password)
            } else {
                user == b"default"
            };
            if !allowed {
                return out.extend_from_slice(WRONGPASS);
            }
            session.authenticated = true;
        }
        if self.users.required() && !session.authenticated {
            return out.extend_from_slice(HELLO_NOAUTH);
        }
        if let Some(name) = name {
            if let Err(error) = set_name(session, name) {
                return out.extend_from_slice(error);
            }
        }
        session.dialect = dialect;
        self.describe(session, out);
    }

    /// HELLO's reply: the server as a map (RESP3), or as a flat array of
    /// its keys and values (RESP2), as Redis 7 shapes it.
    fn describe(&self, session: &Session, out: &mut Vec<u8>) {
        match session.dialect {
            Dialect::Resp2 => push_header(out, b'*', 14),
            Dialect::Resp3 => push_header(out, b'%', 7),
        }
        for (key, value) in [(&b"server"[..], &b"redis"[..]), (b"version", VERSION)] {
            push_bulk(out, key);
            push_bulk(out, value);
        }
        push_bulk(out, b"proto");
        let proto = match session.dialect {
            Dialect::Resp2 => 2,
            Dialect::Resp3 => 3,
        };
        push_header(out, b':', proto);
        push_bulk(out, b"id");
        push_header(out, b':', session.id as i64);
        push_bulk(out, b"mode");
        push_bulk(out, self.mode);
        push_bulk(out, b"role");
        push_bulk(out, b"master");
        push_bulk(out, b"modules");
        push_header(out, b'*', 0);
    }

    /// `CLIENT ID | SETNAME name | GETNAME | SETINFO attr value | INFO`;
    /// any other subcommand is refused (it would be about the proxy's own
    /// upstream connections, or need the other clients' state).
    pub fn client(&self, session: &mut Session, args: Args<'_>, out: &mut Vec<u8>) {
        let argv: Vec<&[u8]> = args.skip(1).collect();
        let Some(sub) = argv.first() else {
            return out
                .extend_from_slice(b"-ERR wrong number of arguments for 'client' command\r\n");
        };
        let sub = sub.to_ascii_uppercase();
        match (sub.as_slice(), argv.len()) {
            (b"ID", 1) => push_header(out, b':', session.id as i64),
            (b"GETNAME", 1) => match &session.name {
                Some(name) => push_bulk(out, name),
                None => push_null(session.dialect, out),
            },
            (b"SETNAME", 2) => match set_name(session, argv[1]) {
                Ok(()) => out.extend_from_slice(b"+OK\r\n"),
                Err(error) => out.extend_from_slice(error),
            },
            (b"SETINFO", 3) => set_info(argv[1], argv[2], out),
            (b"INFO", 1) => client_info(session, out),
            (b"ID" | b"GETNAME" | b"SETNAME" | b"SETINFO" | b"INFO", _) => {
                out.extend_from_slice(b"-ERR wrong number of arguments for 'client|");
                out.extend_from_slice(&sub.to_ascii_lowercase());
                out.extend_from_slice(b"' command\r\n");
            }
            _ => {
                out.extend_from_slice(b"-ERR command 'client|");
                out.extend_from_slice(&printable(&sub.to_ascii_lowercase()));
                out.extend_from_slice(b"' is not supported by the proxy\r\n");
            }
        }
    }
}

/// `CLIENT INFO`: what the proxy knows of the connection, in Redis's
/// `key=value` form; RESP3 gets it as a verbatim string of text, as from
/// Redis.
fn client_info(session: &Session, out: &mut Vec<u8>) {
    let (format, resp): (&[u8], u8) = match session.dialect {
        Dialect::Resp2 => (b"", 2),
        Dialect::Resp3 => (b"txt:", 3),
    };
    let mut line = format.to_vec();
    line.extend_from_slice(format!("id={} name=", session.id).as_bytes());
    line.extend_from_slice(session.name.as_deref().unwrap_or_default());
    line.extend_from_slice(format!(" db=0 resp={resp}\n").as_bytes());
    match session.dialect {
        Dialect::Resp2 => push_bulk(out, &line),
        Dialect::Resp3 => {
            push_header(out, b'=', line.len() as i64);
            out.extend_from_slice(&line);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// A null in `dialect`: `$-1` (RESP2), `_` (RESP3).
pub fn push_null(dialect: Dialect, out: &mut Vec<u8>) {
    out.extend_from_slice(match dialect {
        Dialect::Resp2 => b"$-1\r\n",
        Dialect::Resp3 => b"_\r\n",
    });
}

/// Sets the client's name: printable without spaces, as Redis requires,
/// and at most [`NAME_MAX`] bytes; an empty name clears it.
fn set_name(session: &mut Session, name: &[u8]) -> Result<(), &'static [u8]> {
    if name.iter().any(|&b| !b.is_ascii_graphic()) {
        return Err(
            b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
        );
    }
    if name.len() > NAME_MAX {
        return Err(b"-ERR client name longer than the proxy keeps (64 bytes)\r\n");
    }
    session.name = (!name.is_empty()).then(|| name.into());
    Ok(())
}

/// `CLIENT SETINFO LIB-NAME|LIB-VER value`: accepted and not kept (the
/// upstreams see the proxy, not the library).
fn set_info(attribute: &[u8], value: &[u8], out: &mut Vec<u8>) {
    let known =
        attribute.eq_ignore_ascii_case(b"LIB-NAME") || attribute.eq_ignore_ascii_case(b"LIB-VER");
    if !known {
        out.extend_from_slice(b"-ERR Unrecognized option '");
        out.extend_from_slice(&printable(attribute));
        return out.extend_from_slice(b"'\r\n");
    }
    if value.iter().any(|&b| !b.is_ascii_graphic()) {
        return out.extend_from_slice(
            b"-ERR lib-name and lib-ver cannot contain spaces, newlines or special characters.\r\n",
        );
    }
    out.extend_from_slice(b"+OK\r\n");
}

/// `text` cut to 32 bytes with anything unprintable as `?`, to echo in an
/// error line.
fn printable(text: &[u8]) -> Vec<u8> {
    text.iter()
        .take(32)
        .map(|&b| if b.is_ascii_graphic() { b } else { b'?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::codec::resp::encode_command;

    fn run(connection: &Connection<'_>, session: &mut Session, words: &[&str]) -> String {
        let words: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        let mut frame = Vec::new();
        encode_command(&words, &mut frame);
        let args = Args::parse(&frame);
        let mut out = Vec::new();
        match words[0] {
            b"AUTH" => connection.auth(session, args, &mut out),
            b"HELLO" => connection.hello(session, args, &mut out),
            _ => connection.client(session, args, &mut out),
        }
        String::from_utf8(out).unwrap()
    }

    fn users(requirepass: Option<&str>, named: &[&str]) -> Users {
        let config = Config {
            requirepass: requirepass.map(str::to_string),
            users: named.iter().map(|u| u.to_string()).collect(),
            ..Config::default()
        };
        Users::from_config(&config)
    }

    #[test]
    fn auth_checks_the_default_and_named_users() {
        let users = users(Some("s3cret"), &["alice:wonder"]);
        let connection = Connection {
            users: &users,
            mode: b"standalone",
        };
        let mut session = Session::default();
        assert!(run(&connection, &mut session, &["AUTH", "nope"]).starts_with("-WRONGPASS"));
        assert!(!session.authenticated);
        assert!(
            run(&connection, &mut session, &["AUTH", "alice", "s3cret"]).starts_with("-WRONGPASS")
        );
        assert!(run(&connection, &mut session, &["AUTH", "s3cre"]).starts_with("-WRONGPASS"));
        assert!(!session.authenticated);
        assert_eq!(
            run(&connection, &mut session, &["AUTH", "s3cret"]),
            "+OK\r\n"
        );
        assert!(session.authenticated);
        let mut other = Session::default();
        assert_eq!(
            run(&connection, &mut other, &["AUTH", "alice", "wonder"]),
            "+OK\r\n"
        );
        assert!(other.authenticated);
    }

    #[test]
    fn without_users_auth_answers_as_redis_does() {
        let users = Users::default();
        let connection = Connection {
            users: &users,
            mode: b"standalone",
        };
        let mut session = Session::default();
        assert!(
            run(&connection, &mut session, &["AUTH", "x"])
                .starts_with("-ERR AUTH <password> called without")
        );
        assert_eq!(
            run(&connection, &mut session, &["AUTH", "default", "x"]),
            "+OK\r\n"
        );
        assert!(run(&connection, &mut session, &["AUTH", "bob", "x"]).starts_with("-WRONGPASS"));
    }

    #[test]
    fn hello_authenticates_names_and_describes() {
        let users = users(Some("pw"), &[]);
        let connection = Connection {
            users: &users,
            mode: b"standalone",
        };
        let mut session = Session::new(7, false);
        assert!(run(&connection, &mut session, &["HELLO", "2"]).starts_with("-NOAUTH HELLO"));
        assert!(
            run(
                &connection,
                &mut session,
                &["HELLO", "2", "AUTH", "default", "no"]
            )
            .starts_with("-WRONGPASS")
        );
        assert!(run(&connection, &mut session, &["HELLO", "4"]).starts_with("-NOPROTO"));
        assert!(run(&connection, &mut session, &["HELLO", "3"]).starts_with("-NOAUTH HELLO"));
        assert_eq!(
            session.dialect,
            Dialect::Resp2,
            "a refused HELLO switches nothing"
        );
        assert!(
            run(&connection, &mut session, &["HELLO", "x"]).starts_with("-ERR Protocol version")
        );
        let reply = run(
            &connection,
            &mut session,
            &["HELLO", "2", "AUTH", "default", "pw", "SETNAME", "app"],
        );
        assert!(reply.starts_with("*14\r\n$6\r\nserver\r\n"), "{reply}");
        assert!(reply.contains("$2\r\nid\r\n:7\r\n"), "{reply}");
        assert!(reply.contains("$5\r\nproto\r\n:2\r\n"), "{reply}");
        assert!(session.authenticated);
        assert_eq!(
            run(&connection, &mut session, &["CLIENT", "GETNAME"]),
            "$3\r\napp\r\n"
        );
        assert!(
            run(&connection, &mut session, &["HELLO", "2", "BOGUS"])
                .starts_with("-ERR Syntax error in HELLO option 'BOGUS'")
        );
    }

    #[test]
    fn hello_3_switches_to_resp3_and_hello_2_back() {
        let users = Users::default();
        let connection = Connection {
            users: &users,
            mode: b"standalone",
        };
        let mut session = Session::new(9, true);
        // As redis-server 7 shapes it (id and version aside).
        assert_eq!(
            run(&connection, &mut session, &["HELLO", "3"]),
            "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n\
             $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:9\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
             $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"
        );
        assert_eq!(session.dialect, Dialect::Resp3);
        assert_eq!(
            run(&connection, &mut session, &["CLIENT", "GETNAME"]),
            "_\r\n"
        );
        assert_eq!(
            run(&connection, &mut session, &["CLIENT", "INFO"]),
            "=27\r\ntxt:id=9 name= db=0 resp=3\n\r\n"
        );
        // Without a version HELLO describes, in the protocol in use.
        assert!(run(&connection, &mut session, &["HELLO"]).starts_with("%7\r\n"));
        // A HELLO that fails switches nothing.
        let failed = run(&connection, &mut session, &["HELLO", "2", "SETNAME", "a b"]);
        assert!(failed.starts_with("-ERR Client names"), "{failed}");
        assert_eq!(session.dialect, Dialect::Resp3);
        let back = run(&connection, &mut session, &["HELLO", "2"]);
        assert!(
            back.starts_with("*14\r\n") && back.contains(":2\r\n"),
            "{back}"
        );
        assert_eq!(session.dialect, Dialect::Resp2);
        assert_eq!(
            run(&connection, &mut session, &["CLIENT", "GETNAME"]),
            "$-1\r\n"
        );
    }

    #[test]
    fn client_tracking_is_refused_so_no_upstream_pushes() {
        let users = Users::default();
        let connection = Connection {
            users: &users,
            mode: b"standalone",
        };
        let mut session = Session::new(1, true);
        run(&connection, &mut session, &["HELLO", "3"]);
        assert!(
            run(&connection, &mut session, &["CLIENT", "TRACKING", "on"])
                .starts_with("-ERR command 'client|tracking' is not supported by the proxy")
        );
    }

    #[test]
    fn client_subcommands() {
        let users = Users::default();
        let connection = Connection {
            users: &users,
            mode: b"standalone",
        };
        let mut session = Session::new(42, true);
        assert_eq!(run(&connection, &mut session, &["CLIENT", "ID"]), ":42\r\n");
        assert_eq!(
            run(&connection, &mut session, &["CLIENT", "GETNAME"]),
            "$-1\r\n"
        );
        assert_eq!(
            run(
                &connection,
                &mut session,
                &["CLIENT", "SETNAME", "worker-1"]
            ),
            "+OK\r\n"
        );
        assert_eq!(
            run(&connection, &mut session, &["CLIENT", "getname"]),
            "$8\r\nworker-1\r\n"
        );
        assert!(
            run(&connection, &mut session, &["CLIENT", "SETNAME", "a b"])
                .starts_with("-ERR Client names cannot")
        );
        assert_eq!(
            run(&connection, &mut session, &["CLIENT", "SETNAME", ""]),
            "+OK\r\n"
        );
        assert_eq!(
            run(&connection, &mut session, &["CLIENT", "GETNAME"]),
            "$-1\r\n"
        );
        assert_eq!(
            run(
                &connection,
                &mut session,
                &["CLIENT", "SETINFO", "LIB-NAME", "redis-rs"]
            ),
            "+OK\r\n"
        );
        assert!(
            run(
                &connection,
                &mut session,
                &["CLIENT", "SETINFO", "COLOR", "x"]
            )
            .starts_with("-ERR Unrecognized option")
        );
        assert!(
            run(&connection, &mut session, &["CLIENT", "KILL", "x"])
                .starts_with("-ERR command 'client|kill' is not supported")
        );
        assert!(
            run(&connection, &mut session, &["CLIENT", "ID", "x"])
                .starts_with("-ERR wrong number of arguments for 'client|id'")
        );
        assert!(run(&connection, &mut session, &["CLIENT", "INFO"]).contains("id=42 name= db=0"));
    }

    #[test]
    fn passwords_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(!same(b"", b"a"));
    }
}
