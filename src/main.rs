//! `holdfast`: the command-line front of the engine.

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use holdfast::apps::echo::Echo;
use holdfast::apps::kv::{Kv, Store};
use holdfast::apps::proxy::Proxy;
use holdfast::apps::proxy::watch::Watch;
use holdfast::cli::{self, Command};
use holdfast::config::Config;
use holdfast::engine::codec::Protocol;
use holdfast::engine::reload::Source;
use holdfast::engine::server::Server;
use holdfast::tools::bench::BenchOptions;
use holdfast::tools::chaos::ScanOptions;

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os()) {
        Ok(command) => command,
        Err((0, text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err((code, line)) => {
            eprintln!("holdfast: {line}");
            return ExitCode::from(code as u8);
        }
    };
    match command {
        Command::Bench(options) => bench(&options),
        Command::ChaosScan(options) => chaos_scan(&options),
        Command::ChaosProxy(settings) => {
            init_logging(log::LevelFilter::Info);
            match holdfast::tools::chaos::proxy::run(&settings) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("holdfast: chaos proxy: {error}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Check(config) => check(&config),
        Command::Proxy(config, source) => {
            init_logging(config.log_level);
            install_panic_hook();
            proxy(config, source)
        }
        Command::Serve(config, source) => {
            init_logging(config.log_level);
            install_panic_hook();
            run(serve(config).reload_from(source))
        }
        Command::Reload(admin) => reload(admin),
    }
}

/// `holdfast chaos scan`: the report on stdout. Exit 1 when a check
/// failed, 2 when the scan could not run.
fn chaos_scan(options: &ScanOptions) -> ExitCode {
    match holdfast::tools::chaos::run(options) {
        Ok(report) => {
            print!("{}", report.to_text());
            ExitCode::from(report.exit_code() as u8)
        }
        Err(error) => {
            eprintln!("holdfast: chaos scan: {error}");
            ExitCode::from(2)
        }
    }
}

fn bench(options: &BenchOptions) -> ExitCode {
    if options.pubsub.is_some() {
        return bench_pubsub(options);
    }
    match holdfast::tools::bench::run(options) {
        Ok(summary) => {
            if options.json {
                println!("{}", summary.to_json());
            } else {
                print!("{}", summary.to_text());
            }
            ExitCode::SUCCESS
        }
        Err(line) => {
            eprintln!("holdfast: {line}");
            ExitCode::from(1)
        }
    }
}

/// `holdfast bench --pubsub`: the summary on stdout, as text or one JSON
/// line. Exit 1 when a check failed (a message missing, duplicated, out of
/// order, corrupt, on the wrong channel, a wrong receiver count, an error)
/// or the run could not happen (SUBSCRIBE refused).
fn bench_pubsub(options: &BenchOptions) -> ExitCode {
    match holdfast::tools::bench::pubsub::run(options) {
        Ok(summary) => {
            if options.json {
                println!("{}", summary.to_json());
            } else {
                print!("{}", summary.to_text());
            }
            if summary.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(line) => {
            eprintln!("holdfast: bench --pubsub: {line}");
            ExitCode::from(1)
        }
    }
}

/// `holdfast reload`: the server's line on stdout when applied, on stderr
/// when not (exit 1), or why it could not be asked (exit 3).
fn reload(admin: std::net::SocketAddr) -> ExitCode {
    match holdfast::tools::reload::run(admin) {
        Ok(answer) if answer.status == 200 => {
            println!("{}", answer.line);
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            eprintln!("holdfast: {} (HTTP {})", answer.line, answer.status);
            ExitCode::from(1)
        }
        Err(line) => {
            eprintln!("holdfast: reload: {line}");
            ExitCode::from(3)
        }
    }
}

/// `holdfast check`: the settings are valid and a backend can run them.
fn check(config: &Config) -> ExitCode {
    match holdfast::engine::server::choose_backend(config) {
        Ok((backend, fallback)) => {
            if let Some(warning) = fallback {
                eprintln!("holdfast: {warning}");
            }
            println!("settings ok; backend {}", backend.name());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("holdfast: {error}");
            ExitCode::from(1)
        }
    }
}

/// `holdfast serve`: the key-value service for RESP, echo for the rest.
fn serve(config: Config) -> Server {
    match config.protocol {
        Protocol::Resp => {
            // One store for every shard, made by the first shard's
            // factory call: the thread count is resolved by then.
            let store: Arc<OnceLock<Arc<Store>>> = Arc::default();
            Server::new(config).service_with(move |context| {
                let store = store.get_or_init(|| {
                    let config = context.config;
                    Arc::new(Store::new(config.threads, config.max_memory))
                });
                Kv::new(store.clone(), context)
            })
        }
        Protocol::Echo | Protocol::Line | Protocol::Frame => Server::new(config).service(|| Echo),
    }
}

/// `holdfast proxy`: over `--upstream`s, or in front of the `--cluster`
/// (whose nodes it learns first; exit 1 when no seed answers).
fn proxy(mut config: Config, source: Source) -> ExitCode {
    if config.cluster.is_none() {
        let watch = match Watch::start(&config) {
            Ok(watch) => watch,
            Err(error) => {
                log::error!("cannot start the replica watch thread: {error}");
                return ExitCode::from(1);
            }
        };
        return run(Server::new(config)
            .service_with(move |context| Proxy::watched(context, watch.clone()))
            .reload_from(source));
    }
    let topology = match holdfast::apps::proxy::cluster::join(&mut config) {
        Ok(topology) => topology,
        Err(error) => {
            log::error!("--cluster: {error}");
            return ExitCode::from(1);
        }
    };
    // A cluster's nodes are its topology's, not the settings': a reload
    // keeps them, those added since start included.
    let nodes = topology.clone();
    let load = source.load;
    let source = Source {
        load: Box::new(move || {
            let mut config = load()?;
            (config.upstreams, config.upstream_addrs) = nodes.nodes();
            Ok(config)
        }),
        ..source
    };
    let server =
        Server::new(config).service_with(move |context| Proxy::cluster(context, topology.clone()));
    run(server.reload_from(source))
}

/// Runs `server` until it stops.
fn run(server: Server) -> ExitCode {
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        // --strict-memory's refusal is a setting's: exit 2, as a bad flag.
        Err(error @ holdfast::engine::server::ServerError::Memory(_)) => {
            log::error!("{error}");
            ExitCode::from(2)
        }
        // Every other start-up failure (bind, fd limit, setup) exits 1.
        Err(error) => {
            log::error!("{error}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(level: log::LevelFilter) {
    let config = simplelog::ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_thread_level(log::LevelFilter::Off)
        .set_target_level(log::LevelFilter::Off)
        .build();
    // Line-buffered: one write(2) per log line, not one per fragment.
    let stderr = std::io::LineWriter::new(std::io::stderr());
    // The logger passes every level; `log::set_max_level` filters, so that
    // a reload can change it (`engine/reload/`).
    let _ = simplelog::WriteLogger::init(log::LevelFilter::Trace, config, stderr);
    log::set_max_level(level);
}

/// Panics in a service are caught and counted per connection; log them as
/// one line through the logger instead of the default multi-line report.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let location = info
            .location()
            .map_or(String::new(), |l| format!(" at {}:{}", l.file(), l.line()));
        log::error!(
            "panic in {}{location}: {message}",
            thread.name().unwrap_or("a thread")
        );
    }));
}
