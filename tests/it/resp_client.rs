//! `--protocol resp` driven by a real Redis client library (the `redis`
//! crate, sync API): every command the service knows, client pipelines,
//! errors as the library reports them, keys shared across shards.

use crate::util;

use std::time::Duration;

use redis::{Commands, Connection, RedisResult, Value};
use util::Server;

fn start(extra: &[&str]) -> Server {
    let mut args = vec!["--protocol", "resp"];
    args.extend(extra);
    Server::start(&args)
}

fn client(server: &Server) -> Connection {
    let url = format!("redis://{}/", server.addr);
    let client = redis::Client::open(url).unwrap();
    let con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    con.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    con
}

#[test]
fn every_command_through_the_client() {
    let server = start(&[]);
    let mut con = client(&server);
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    let echoed: String = redis::cmd("ECHO").arg("hi there").query(&mut con).unwrap();
    assert_eq!(echoed, "hi there");
    let () = con.set("name", "holdfast").unwrap();
    assert_eq!(con.get::<_, String>("name").unwrap(), "holdfast");
    assert_eq!(con.get::<_, Option<String>>("nope").unwrap(), None);
    let binary: Vec<u8> = (0..=255).collect();
    let () = con.set("bin", &binary).unwrap();
    assert_eq!(con.get::<_, Vec<u8>>("bin").unwrap(), binary);
    let set: Option<String> = redis::cmd("SET")
        .arg("name")
        .arg("other")
        .arg("NX")
        .query(&mut con)
        .unwrap();
    assert_eq!(set, None);
    let () = redis::cmd("SET")
        .arg("tmp")
        .arg("1")
        .arg("EX")
        .arg(50)
        .query(&mut con)
        .unwrap();
    let ttl: i64 = con.ttl("tmp").unwrap();
    assert!((49..=50).contains(&ttl), "{ttl}");
    assert_eq!(con.incr::<_, _, i64>("n", 1).unwrap(), 1);
    assert_eq!(con.incr::<_, _, i64>("n", 10).unwrap(), 11);
    assert_eq!(con.decr::<_, _, i64>("n", 1).unwrap(), 10);
    let () = con.mset(&[("a", "1"), ("b", "2")]).unwrap();
    let values: Vec<Option<String>> = con.mget(&["a", "zz", "b"]).unwrap();
    assert_eq!(values, vec![Some("1".into()), None, Some("2".into())]);
    assert!(con.exists::<_, bool>("a").unwrap());
    assert_eq!(con.del::<_, i64>(&["a", "zz"]).unwrap(), 1);
    assert!(con.expire::<_, bool>("b", 100).unwrap());
    assert_eq!(con.ttl::<_, i64>("b").unwrap(), 100);
    let size: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(size, 5); // name, bin, tmp, n, b (`a` was deleted)
    let info: String = redis::cmd("INFO").query(&mut con).unwrap();
    assert!(info.contains("redis_version:"), "{info}");
    let config: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query(&mut con)
        .unwrap();
    assert_eq!(config, vec!["save".to_string(), String::new()]);
    let () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("test")
        .query(&mut con)
        .unwrap();
    let hello: Value = redis::cmd("HELLO").query(&mut con).unwrap();
    assert!(
        matches!(hello, Value::Array(ref fields) if fields.len() == 14),
        "{hello:?}"
    );
    let hello4: RedisResult<Value> = redis::cmd("HELLO").arg(4).query(&mut con);
    assert_eq!(hello4.unwrap_err().code(), Some("NOPROTO"));
    let () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    let size: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(size, 0);
}

#[test]
fn errors_are_reported_and_the_connection_goes_on() {
    let server = start(&[]);
    let mut con = client(&server);
    let () = con.set("text", "abc").unwrap();
    let error = con.incr::<_, _, i64>("text", 1).unwrap_err();
    assert!(error.to_string().contains("not an integer"), "{error}");
    let error: RedisResult<Value> = redis::cmd("GET").query(&mut con);
    assert!(
        error
            .unwrap_err()
            .to_string()
            .contains("wrong number of arguments")
    );
    // Other data types are not held: the error names the command.
    let error: RedisResult<Value> = redis::cmd("BLPOP").arg("x").arg(0).query(&mut con);
    let error = error.unwrap_err().to_string();
    assert!(error.contains("unsupported command 'blpop'"), "{error}");
    let error: RedisResult<Value> = redis::cmd("NOSUCH").query(&mut con);
    assert!(error.unwrap_err().to_string().contains("unknown command"));
    assert_eq!(con.get::<_, String>("text").unwrap(), "abc");
}

#[test]
fn a_pipeline_of_100_commands() {
    let server = start(&[]);
    let mut con = client(&server);
    let mut pipe = redis::pipe();
    for i in 0..50 {
        pipe.set(format!("p{i}"), i).ignore();
        pipe.incr("counter", 1);
    }
    let counts: Vec<i64> = pipe.query(&mut con).unwrap();
    assert_eq!(counts, (1..=50).collect::<Vec<i64>>());
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.get(format!("p{}", i % 50));
    }
    let values: Vec<i64> = pipe.query(&mut con).unwrap();
    assert_eq!(values, (0..100).map(|i| i % 50).collect::<Vec<i64>>());
}

#[test]
fn writes_on_one_connection_are_read_on_any_other_across_shards() {
    let server = start(&["--threads", "2"]);
    let mut conns: Vec<Connection> = (0..8).map(|_| client(&server)).collect();
    for (i, con) in conns.iter_mut().enumerate() {
        let () = con.set(format!("w{i}"), i).unwrap();
    }
    for con in conns.iter_mut() {
        let keys: Vec<String> = (0..8).map(|i| format!("w{i}")).collect();
        let values: Vec<i64> = con.mget(&keys).unwrap();
        assert_eq!(values, (0..8).collect::<Vec<i64>>());
    }
}

#[test]
fn keys_with_px_are_gone_after_it() {
    let server = start(&[]);
    let mut con = client(&server);
    let () = redis::cmd("SET")
        .arg("soon")
        .arg("v")
        .arg("PX")
        .arg(100)
        .query(&mut con)
        .unwrap();
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(con.get::<_, Option<String>>("soon").unwrap(), None);
    assert_eq!(con.ttl::<_, i64>("soon").unwrap(), -2);
}
