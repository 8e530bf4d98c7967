//! `holdfast bench` against a real `holdfast serve`: the two binaries talk
//! over loopback, and every echoed byte checks out.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A `holdfast serve` child process, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(protocol: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .args(["serve", "--listen", "127.0.0.1:0", "--admin", "off"])
            .args(["--threads", "1", "--protocol", protocol])
            .stderr(Stdio::piped())
            .spawn()
            .expect("start holdfast serve");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("holdfast serve exited before listening")
                .unwrap();
            if let Some((_, rest)) = line.split_once("listening on ") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `"key":` in a flat JSON line.
fn field(json: &str, key: &str) -> f64 {
    let start = json.find(&format!("\"{key}\":")).expect(key) + key.len() + 3;
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end].parse().unwrap()
}

fn bench(server: &Server, flags: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["bench", "--target", &server.addr])
        .args(["--duration", "1s", "--warmup", "0s", "--json"])
        .args(flags)
        .output()
        .expect("run holdfast bench");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "bench failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    stdout
}

#[test]
fn bench_against_serve_answers_every_request_without_errors() {
    let server = Server::start("echo");
    let json = bench(&server, &["--conns", "4"]);
    assert!(field(&json, "requests") > 0.0, "{json}");
    assert_eq!(field(&json, "errors"), 0.0, "{json}");
    assert_eq!(field(&json, "connected"), 4.0, "{json}");
}

#[test]
fn bench_frame_protocol_pipelined_verifies_every_byte() {
    let server = Server::start("frame");
    let json = bench(
        &server,
        &[
            "--conns",
            "4",
            "--pipeline",
            "8",
            "--size",
            "1000",
            "--protocol",
            "frame",
        ],
    );
    assert!(field(&json, "requests") > 0.0, "{json}");
    assert_eq!(field(&json, "errors"), 0.0, "{json}");
}
