//! Getting in: `holdfast proxy` with `--requirepass` and `--user` lets a
//! client through only after AUTH (or HELLO 2 AUTH); client libraries'
//! connect handshakes (the `redis` crate, `redis-cli` with `-a` and
//! `--user`) work; and `--upstream-password` / `--upstream-user` let the
//! proxy into `redis-server`s that require a password, with a refused
//! password failing fast and said in the log.

use crate::util;

use std::time::Duration;

use util::{Redis, Resp, Server};

const WITHIN: Duration = Duration::from_secs(5);

fn proxy(upstream: &Redis, extra: &[&str]) -> Server {
    let name = upstream.name();
    let mut args = vec!["--upstream", name.as_str()];
    args.extend(extra);
    Server::start_proxy(&args)
}

fn redis_crate(server: &Server, userinfo: &str) -> redis::RedisResult<redis::Connection> {
    let url = format!("redis://{userinfo}{}/", server.addr);
    let client = redis::Client::open(url)?;
    let con = client.get_connection_with_timeout(WITHIN)?;
    con.set_read_timeout(Some(WITHIN))?;
    Ok(con)
}

fn redis_cli(server: &Server, args: &[&str]) -> String {
    util::redis_cli(server.addr.port(), &[&["--no-auth-warning"], args].concat())
}

#[test]
fn nothing_passes_before_auth_and_everything_after() {
    let redis = Redis::start();
    let server = proxy(
        &redis,
        &["--requirepass", "s3cret", "--user", "alice:wonder"],
    );
    let mut client = Resp::connect(server.addr);
    let noauth = b"-NOAUTH Authentication required.\r\n".to_vec();
    assert_eq!(client.call(&[b"SET", b"k", b"v"]), noauth);
    assert_eq!(client.call(&[b"PING"]), noauth);
    assert_eq!(client.call(&[b"CLIENT", b"ID"]), noauth);
    assert!(client.call(&[b"AUTH", b"wrong"]).starts_with(b"-WRONGPASS"));
    assert!(
        client
            .call(&[b"AUTH", b"alice", b"s3cret"])
            .starts_with(b"-WRONGPASS")
    );
    assert_eq!(client.call(&[b"GET", b"k"]), noauth);
    assert_eq!(client.call(&[b"AUTH", b"s3cret"]), b"+OK\r\n");
    assert_eq!(client.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    assert_eq!(client.call(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    // Nothing reached the upstream before AUTH: the value is the one set after.
    assert_eq!(redis.client().call(&[b"GET", b"k"]), b"$1\r\nv\r\n");

    let mut alice = Resp::connect(server.addr);
    assert!(
        alice
            .call(&[b"HELLO", b"2"])
            .starts_with(b"-NOAUTH HELLO must be called")
    );
    let hello = alice.call(&[
        b"HELLO", b"2", b"AUTH", b"alice", b"wonder", b"SETNAME", b"a1",
    ]);
    assert!(
        hello.starts_with(b"*14\r\n$6\r\nserver\r\n"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    assert_eq!(alice.call(&[b"CLIENT", b"GETNAME"]), b"$2\r\na1\r\n");
    assert_eq!(alice.call(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    // QUIT is allowed before AUTH, as in Redis.
    let mut quitter = Resp::connect(server.addr);
    assert_eq!(quitter.call(&[b"QUIT"]), b"+OK\r\n");
}

#[test]
fn client_libraries_connect_with_their_own_handshake() {
    let redis = Redis::start();
    let server = proxy(
        &redis,
        &["--requirepass", "s3cret", "--user", "alice:wonder"],
    );
    use redis::Commands;
    // The redis crate sends AUTH (and CLIENT SETINFO) on connect.
    let mut con = redis_crate(&server, ":s3cret@").expect("default user");
    let () = con.set("crate", "yes").unwrap();
    let value: String = con.get("crate").unwrap();
    assert_eq!(value, "yes");
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut con).unwrap();
    assert!(id > 0);
    let () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("from-crate")
        .query(&mut con)
        .unwrap();
    let name: String = redis::cmd("CLIENT").arg("GETNAME").query(&mut con).unwrap();
    assert_eq!(name, "from-crate");
    let mut alice = redis_crate(&server, "alice:wonder@").expect("named user");
    let value: String = alice.get("crate").unwrap();
    assert_eq!(value, "yes");
    let wrong = redis_crate(&server, ":nope@")
        .err()
        .expect("a wrong password is refused");
    assert!(
        format!("{wrong}").to_lowercase().contains("authentication"),
        "{wrong}"
    );

    assert_eq!(
        redis_cli(&server, &["-a", "s3cret", "SET", "cli", "1"]),
        "OK\n"
    );
    assert_eq!(
        redis_cli(
            &server,
            &["--user", "alice", "--pass", "wonder", "GET", "cli"]
        ),
        "1\n"
    );
    let refused = redis_cli(&server, &["GET", "cli"]);
    assert!(refused.contains("NOAUTH"), "{refused}");
}

#[test]
fn without_a_password_handshakes_are_answered_and_auth_explains() {
    let redis = Redis::start();
    let server = proxy(&redis, &[]);
    let mut client = Resp::connect(server.addr);
    assert!(
        client
            .call(&[b"AUTH", b"x"])
            .starts_with(b"-ERR AUTH <password> called without")
    );
    let hello = client.call(&[b"HELLO", b"2"]);
    assert!(
        hello.starts_with(b"*14\r\n"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    assert_eq!(
        client.call(&[b"HELLO", b"4"]),
        b"-NOPROTO unsupported protocol version\r\n"
    );
    assert_eq!(
        client.call(&[b"CLIENT", b"SETINFO", b"LIB-NAME", b"x"]),
        b"+OK\r\n"
    );
    assert!(
        client
            .call(&[b"CLIENT", b"KILL", b"1"])
            .starts_with(b"-ERR command 'client|kill'")
    );
    // Two connections never share an id.
    let id = |c: &mut Resp| c.call(&[b"CLIENT", b"ID"]);
    let mut other = Resp::connect(server.addr);
    assert_ne!(id(&mut client), id(&mut other));
    let mut con = redis_crate(&server, "").unwrap();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

/// A redis-server whose `default` user's password is `up-pass`, with a
/// user `bob` (password `bobpw`) allowed everything.
pub(crate) fn redis_with_logins() -> Redis {
    Redis::start_with(&[
        "--requirepass",
        "up-pass",
        "--user",
        "bob",
        "on",
        ">bobpw",
        "~*",
        "&*",
        "+@all",
    ])
}

#[test]
fn the_proxy_authenticates_to_its_upstreams() {
    let redis = redis_with_logins();
    // The default user, by password.
    let server = proxy(&redis, &["--upstream-password", "up-pass"]);
    let mut client = Resp::connect(server.addr);
    assert_eq!(client.call(&[b"SET", b"a", b"1"]), b"+OK\r\n");
    assert_eq!(client.call(&[b"GET", b"a"]), b"$1\r\n1\r\n");
    // A named user.
    let bob = proxy(
        &redis,
        &["--upstream-user", "bob", "--upstream-password", "bobpw"],
    );
    let mut client = Resp::connect(bob.addr);
    assert_eq!(client.call(&[b"GET", b"a"]), b"$1\r\n1\r\n");
    let mut direct = redis.client();
    assert_eq!(direct.call(&[b"AUTH", b"up-pass"]), b"+OK\r\n");
    assert_eq!(direct.call(&[b"GET", b"a"]), b"$1\r\n1\r\n");
}

/// Two servers with different logins: one by the global password, one
/// by its own `--upstream-credential`; a reload gives it a new password
/// (not written in the log), used by the connections made after.
#[test]
fn each_upstream_may_have_its_own_login_and_a_reload_changes_it() {
    let a = Redis::start_with(&["--requirepass", "pw-a"]);
    let acl = ["--user", "app", "on", ">pw-b", "~*", "&*", "+@all"];
    let b = Redis::start_with(&[&["--requirepass", "other"][..], &acl[..]].concat());
    let credential = |password: &str| {
        format!(
            "upstreams = [\"{}\", \"{}\"]\nupstream-password = \"pw-a\"\n\
             upstream-credentials = [\"{}=app:{password}\"]\n",
            a.name(),
            b.name(),
            b.name()
        )
    };
    let file = util::ConfigFile::new("upstream-credential", &credential("pw-b"));
    let server = Server::start_proxy(&["--config", file.path()]);
    let mut client = Resp::connect(server.addr);
    let keys: Vec<String> = (0..40).map(|i| format!("key:{i}")).collect();
    for key in &keys {
        assert_eq!(client.call(&[b"SET", key.as_bytes(), b"v"]), b"+OK\r\n");
    }
    let dbsize = |redis: &Redis, password: &[u8]| {
        let mut direct = redis.client();
        assert_eq!(direct.call(&[b"AUTH", password]), b"+OK\r\n");
        direct.call(&[b"DBSIZE"])
    };
    assert_ne!(dbsize(&a, b"pw-a"), b":0\r\n", "keys on a");
    assert_ne!(dbsize(&b, b"other"), b":0\r\n", "keys on b");

    // b's password changes, then the proxy's file; its connections to b are
    // closed, and the new ones log in with the new password.
    let mut admin = b.client();
    assert_eq!(admin.call(&[b"AUTH", b"other"]), b"+OK\r\n");
    let setuser = [&b"ACL"[..], b"SETUSER", b"app", b"resetpass", b">pw-b2"];
    assert_eq!(admin.call(&setuser), b"+OK\r\n");
    file.write(&credential("pw-b2"));
    server.signal(nix::sys::signal::Signal::SIGHUP);
    server.wait_metric("holdfast_config_generation", &[], 2.0, WITHIN);
    let log = server.stderr_text();
    assert!(
        log.contains("changed upstream-credentials (secret)"),
        "{log}"
    );
    assert!(!log.contains("pw-b2"), "the password is in the log: {log}");
    let kill = [&b"CLIENT"[..], b"KILL", b"USER", b"app"];
    let killed = admin.call(&kill);
    assert_ne!(killed, b":0\r\n", "the proxy had connections to b as app");
    let served = util::wait_until(WITHIN, || {
        keys.iter()
            .all(|key| client.call(&[b"GET", key.as_bytes()]) == b"$1\r\nv\r\n")
    });
    assert!(served, "{}", server.stderr_text());
}

#[test]
fn a_refused_upstream_password_fails_fast_and_is_logged() {
    let redis = Redis::start_with(&["--requirepass", "up-pass"]);
    let server = proxy(&redis, &["--upstream-password", "wrong"]);
    let mut client = Resp::connect(server.addr);
    let started = std::time::Instant::now();
    let reply = client.call(&[b"GET", b"a"]);
    assert_eq!(reply, b"-ERR upstream connection failed\r\n");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let name = redis.name();
    let labels = [("upstream", name.as_str()), ("kind", "connect")];
    assert!(server.metric("holdfast_upstream_errors_total", &labels) >= 1.0);
    let said = util::wait_until(WITHIN, || {
        server.stderr_text().contains("was refused: -WRONGPASS")
    });
    assert!(said, "{}", server.stderr_text());
    // Without a password at all the upstream says NOAUTH to every request:
    // the proxy passes that on as the upstream's reply.
    let bare = proxy(&redis, &[]);
    let mut client = Resp::connect(bare.addr);
    assert!(client.call(&[b"GET", b"a"]).starts_with(b"-NOAUTH"));
}

#[test]
fn bad_credential_flags_exit_2_naming_the_flag() {
    for (args, flag) in [
        (
            &["--upstream", "127.0.0.1:6379", "--user", "nocolon"][..],
            "--user",
        ),
        (
            &["--upstream", "127.0.0.1:6379", "--upstream-user", "bob"][..],
            "--upstream-user",
        ),
        (
            &["--upstream", "127.0.0.1:6379", "--requirepass", "has space"][..],
            "--requirepass",
        ),
        (
            &[
                "--upstream",
                "127.0.0.1:6379",
                "--requirepass",
                "a",
                "--user",
                "default:b",
            ][..],
            "--user",
        ),
        (
            &[
                "--upstream",
                "127.0.0.1:6379",
                "--upstream-credential",
                "127.0.0.1:6379",
            ][..],
            "--upstream-credential",
        ),
        (
            &[
                "--upstream",
                "127.0.0.1:6379",
                "--upstream-credential",
                "127.0.0.1:7=a:b",
            ][..],
            "--upstream-credential",
        ),
        (
            &[
                "--cluster",
                "127.0.0.1:6379",
                "--upstream-credential",
                "127.0.0.1:6379=a:b",
            ][..],
            "--upstream-credential",
        ),
    ] {
        let mut all = vec!["proxy"];
        all.extend(args);
        let (status, _, err) = util::run_to_exit(&all, WITHIN);
        assert_eq!(status.and_then(|s| s.code()), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
    }
    // `serve` does not take the proxy's credentials.
    let (status, _, err) = util::run_to_exit(&["serve", "--requirepass", "x"], WITHIN);
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{err}");
}
