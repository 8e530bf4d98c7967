//! A chat room on the holdfast engine: every line a member sends goes to
//! every other member, prefixed with who sent it. Joining and leaving are
//! announced. Connections on any shard are in the same room.
//!
//! Run it:
//!     cargo run --release --example chat
//! Then, in two or more terminals:
//!     nc 127.0.0.1 7000
//! and type. `/name alice` sets your name; `/who` says how many are in.
//!
//! The service never sees a socket: it joins each connection to the room
//! when it opens, publishes each line to the room, and skips its own lines
//! when they come back (the engine delivers a group message to every
//! member). A member that cannot keep up is cut off by the slow-consumer
//! policy instead of growing the server's memory.

use std::io::Write;

use holdfast::engine::codec::Protocol;
use holdfast::{Closed, Config, Context, Message, Opened, Reply, Server, Service};

/// The one room.
const ROOM: &[u8] = b"room";
/// A name is at most this long.
const NAME_MAX: usize = 32;
/// Room for `name: ` before a line (a name and the punctuation).
const PREFIX_MAX: usize = NAME_MAX + 2;

/// One member.
#[derive(Default)]
struct Member {
    name: String,
    handle: Option<holdfast::Handle>,
}

/// The room's service: one instance per shard, sharing the room through
/// the engine's group.
struct Chat {
    /// The longest line (what fits a ring with the prefix).
    line_max: usize,
}

impl Service for Chat {
    type Session = Member;

    fn open(&mut self, opened: &Opened, cx: &mut Context<'_>) -> Member {
        let name = format!("guest-{}", opened.handle);
        let _ = cx.join(ROOM);
        let _ = cx.publish(ROOM, format!("* {name} joined").as_bytes());
        Member {
            name,
            handle: Some(opened.handle),
        }
    }

    fn close(&mut self, member: Member, _: &Closed) {
        log::info!("{} left", member.name);
    }

    fn reply_reserve(&self, _: &Member, _: &[u8]) -> usize {
        64
    }

    fn call(
        &mut self,
        member: &mut Member,
        cx: &mut Context<'_>,
        line: &[u8],
        reply: &mut Reply<'_>,
    ) {
        if let Some(name) = line.strip_prefix(b"/name ") {
            let name = String::from_utf8_lossy(&name[..name.len().min(NAME_MAX)]).into_owned();
            let _ = cx.publish(ROOM, format!("* {} is now {name}", member.name).as_bytes());
            member.name = name;
            reply.silence();
            return;
        }
        if line == b"/who" {
            let _ = write!(reply, "* {} in the room", cx.directory().members(ROOM));
            return;
        }
        let mut said = Vec::with_capacity(PREFIX_MAX + line.len());
        said.extend_from_slice(member.name.as_bytes());
        said.extend_from_slice(b": ");
        said.extend_from_slice(&line[..line.len().min(self.line_max)]);
        match cx.publish(ROOM, &said) {
            Ok(_) => reply.silence(),
            Err(error) => {
                let _ = write!(reply, "* not sent: {error}");
            }
        }
    }

    fn deliver(&mut self, member: &mut Member, message: &Message<'_>, out: &mut Reply<'_>) {
        // Our own lines come back to us too: skip them.
        if message.from != member.handle {
            let _ = out.put(message.bytes);
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
    let line_max = config.buffer - PREFIX_MAX - 1;
    if let Err(error) = Server::new(config).service(move || Chat { line_max }).run() {
        eprintln!("{error}");
        std::process::exit(1);
    }
}
