//! A reference server for `make bench`: the same echo and frame protocols
//! as `holdfast serve`, written the idiomatic tokio way (one task per
//! connection, read into a buffer, `write_all`).
//!
//! ```sh
//! cargo run --release --manifest-path reference/tokio-echo/Cargo.toml -- --runtime current_thread \
//!     --listen 127.0.0.1:7000 --protocol echo
//! ```
//!
//! `--protocol frame` answers each complete frame (u32 big-endian length,
//! then the payload) with the same frame; whole frames are written at once,
//! so a pipelined burst becomes one `write_all`. Like holdfast, it sets
//! TCP_NODELAY on every connection, so neither side waits on Nagle.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Read buffer per connection, allocated when the connection starts.
const READ_BUFFER: usize = 16 * 1024;
/// Largest frame payload accepted (holdfast's largest ring).
const FRAME_MAX: usize = 64 << 20;

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    Echo,
    Frame,
}

fn main() {
    let mut runtime = "current_thread".to_string();
    let mut listen: SocketAddr = "127.0.0.1:7000".parse().unwrap();
    let mut protocol = Protocol::Echo;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--runtime" => runtime = value(),
            "--listen" => {
                let text = value();
                listen = text
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("bad --listen {text}")));
            }
            "--protocol" => {
                protocol = match value().as_str() {
                    "echo" => Protocol::Echo,
                    "frame" => Protocol::Frame,
                    other => usage(&format!("unknown --protocol {other}")),
                }
            }
            other => usage(&format!("unknown flag {other}")),
        }
    }
    let runtime = match runtime.as_str() {
        "current_thread" => tokio::runtime::Builder::new_current_thread(),
        "multi_thread" => tokio::runtime::Builder::new_multi_thread(),
        other => usage(&format!("unknown --runtime {other}")),
    }
    .enable_io()
    .build()
    .expect("build the tokio runtime");
    runtime.block_on(serve(listen, protocol));
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "tokio_echo: {problem}\nusage: tokio_echo [--runtime current_thread|multi_thread] \
         [--listen ADDR] [--protocol echo|frame]"
    );
    std::process::exit(2);
}

async fn serve(listen: SocketAddr, protocol: Protocol) {
    let listener = TcpListener::bind(listen).await.expect("bind");
    eprintln!("listening on {}", listener.local_addr().unwrap());
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: let the connections run, then retry
                // (without the `time` feature there is no async sleep).
                eprintln!("accept: {error}");
                tokio::task::yield_now().await;
                continue;
            }
        };
        tokio::spawn(async move {
            let _ = socket.set_nodelay(true);
            let _ = match protocol {
                Protocol::Echo => echo(socket).await,
                Protocol::Frame => frames(socket).await,
            };
        });
    }
}

async fn echo(mut socket: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        socket.write_all(&buf[..n]).await?;
    }
}

async fn frames(mut socket: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut held = 0;
    loop {
        if held == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = socket.read(&mut buf[held..]).await?;
        if n == 0 {
            return Ok(());
        }
        held += n;
        // The complete frames at the front go back as they are.
        let mut complete = 0;
        while held - complete >= 4 {
            let header: [u8; 4] = buf[complete..complete + 4].try_into().unwrap();
            let len = u32::from_be_bytes(header) as usize;
            if len > FRAME_MAX {
                return Ok(());
            }
            if held - complete < 4 + len {
                break;
            }
            complete += 4 + len;
        }
        if complete > 0 {
            socket.write_all(&buf[..complete]).await?;
            buf.copy_within(complete..held, 0);
            held -= complete;
        }
    }
}
