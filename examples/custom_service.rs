//! A custom service on the holdfast engine: each line comes back in upper
//! case, with a running count of the lines this shard has served.
//!
//! Run it:
//!     cargo run --release --example custom_service
//! Then, in another terminal:
//!     printf 'hello\nworld\n' | nc -q1 127.0.0.1 7000
//!     1 HELLO
//!     2 WORLD
//!
//! The service never sees a socket, a buffer size, a timeout or a thread:
//! it gets one complete line and writes its reply. Everything else (slow
//! clients, oversized lines, panics, shutdown) is the engine's job.

use std::io::Write;

use holdfast::engine::codec::Protocol;
use holdfast::{Config, Context, Reply, Server, Service};

/// Upper-cases each line; one instance per shard.
#[derive(Default)]
struct Shout {
    served: u64,
}

/// Room for the counter and its space: 20 digits of a u64 and one byte.
const COUNTER_LEN_MAX: usize = 21;

impl Service for Shout {
    type Session = ();

    fn reply_reserve(&self, _: &(), frame: &[u8]) -> usize {
        frame.len() + COUNTER_LEN_MAX
    }

    fn call(&mut self, _: &mut (), _: &mut Context<'_>, frame: &[u8], reply: &mut Reply<'_>) {
        self.served += 1;
        // Writing within reply_reserve cannot fail; were it to, the engine
        // closes this connection with reason `output_overflow`.
        let _ = write!(reply, "{} ", self.served);
        for chunk in frame.chunks(256) {
            let mut upper = [0u8; 256];
            let upper = &mut upper[..chunk.len()];
            upper.copy_from_slice(chunk);
            upper.make_ascii_uppercase();
            let _ = reply.put(upper);
        }
    }
}

fn main() {
    let _ = simplelog::SimpleLogger::init(log::LevelFilter::Info, simplelog::Config::default());
    let mut config = Config {
        protocol: Protocol::Line,
        ..Config::default()
    };
    if let Err(error) = config.validate() {
        eprintln!("{error}");
        std::process::exit(2);
    }
    if let Err(error) = Server::new(config).service(Shout::default).run() {
        eprintln!("{error}");
        std::process::exit(1);
    }
}
