//! Pushing from outside the engine: a thread that is not an event loop
//! (here it reads the server's stdin; in a real service it might consume a
//! queue) sends to one connection by its handle, or to all of them.
//!
//! Run it:
//!     cargo run --release --example push
//! Then connect a few clients (`nc 127.0.0.1 7000`): each is told its
//! number. Type into the server's terminal:
//!     hello everyone        -> every connection gets the line
//!     @2 hello two          -> only connection 2 gets it
//!
//! Each connection joins the group `all` when it opens and leaves it when
//! it closes (the engine does that); the handles the thread keeps are
//! plain `Copy` values: one whose connection has closed just reports
//! `Gone`.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};

use holdfast::engine::codec::Protocol;
use holdfast::{Closed, Config, Context, Handle, Opened, Reply, Server, Service};

/// Connections by the number they were told.
type Directory = Arc<Mutex<HashMap<u64, Handle>>>;

/// Numbers each connection, keeps its handle where the pushing thread can
/// see it, and answers each line with how many are connected.
struct Numbered {
    directory: Directory,
    next: Arc<Mutex<u64>>,
}

/// A connection's number.
#[derive(Default)]
struct Number(u64);

impl Service for Numbered {
    type Session = Number;

    fn open(&mut self, opened: &Opened, cx: &mut Context<'_>) -> Number {
        let number = {
            let mut next = self.next.lock().unwrap();
            *next += 1;
            *next
        };
        self.directory.lock().unwrap().insert(number, opened.handle);
        let _ = cx.join(b"all");
        let _ = cx.push(opened.handle, format!("you are {number}").as_bytes());
        Number(number)
    }

    fn close(&mut self, number: Number, _: &Closed) {
        self.directory.lock().unwrap().remove(&number.0);
    }

    fn reply_reserve(&self, _: &Number, _: &[u8]) -> usize {
        48
    }

    fn call(&mut self, _: &mut Number, cx: &mut Context<'_>, _: &[u8], reply: &mut Reply<'_>) {
        let _ = write!(reply, "{} connected", cx.directory().members(b"all"));
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
    let directory = Directory::default();
    let next = Arc::new(Mutex::new(0));
    let service_directory = directory.clone();
    let running = Server::new(config)
        .service(move || Numbered {
            directory: service_directory.clone(),
            next: next.clone(),
        })
        .start()
        .unwrap_or_else(|error| {
            eprintln!("{error}");
            std::process::exit(1);
        });
    let pusher = running.pusher();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let sent = match line.strip_prefix('@').and_then(|rest| rest.split_once(' ')) {
            Some((number, text)) => {
                let handle = number
                    .parse()
                    .ok()
                    .and_then(|n: u64| directory.lock().unwrap().get(&n).copied());
                match handle {
                    Some(handle) => pusher.push(handle, text.as_bytes()).map(|()| 1),
                    None => Ok(0),
                }
            }
            None => pusher.publish(b"all", line.as_bytes()),
        };
        match sent {
            Ok(receivers) => eprintln!("sent to {receivers}"),
            Err(error) => eprintln!("not sent: {error}"),
        }
    }
    running.stopper()();
    running.wait();
}
