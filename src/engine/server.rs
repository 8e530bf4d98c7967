//! The process around the shards: resolves the machine-dependent settings,
//! binds one listener per shard, starts the shards and the admin endpoint,
//! turns SIGTERM/SIGINT into a graceful shutdown and SIGHUP into a reload
//! of the settings (`engine/reload/`), and joins.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{Backend, Config};
use crate::engine::admin;
use crate::engine::driver::{EventWaker, inherit};
use crate::engine::front::{AddrTable, PerIp};
use crate::engine::memory::{Budget, Plan};
use crate::engine::metrics::{Registry, ShardMetrics};
use crate::engine::push::hub::PushLimits;
use crate::engine::push::{Hub, Pusher};
use crate::engine::reload::{Outcome, Published, Reloader, Source};
use crate::engine::service::host::{Handler, Host};
use crate::engine::service::{Dialect, Service, ServiceContext, UpstreamAdder};
use crate::engine::shard::{FDS_PER_SHARD, Shard, Shared, Waker};
use crate::engine::sys;
use crate::engine::upgrade::{self, Offer, Taken};

/// Descriptors the process keeps for itself besides the shards': stdio,
/// the signal pipe, the admin endpoint (listener, poller and its bounded
/// connections) and slack for short-lived ones such as `/proc` reads.
const FDS_OWN_BASE: usize = 32;

/// Exit code when a shard dies (EX_SOFTWARE).
const EXIT_SHARD_DIED: i32 = 70;

/// Builds the service instance of one shard.
pub(crate) type ServiceFactory = Arc<dyn Fn(&ServiceContext<'_>) -> Box<dyn Handler> + Send + Sync>;

/// Why the server could not start.
#[derive(Debug)]
pub enum ServerError {
    /// A listener could not be bound (exit code 1).
    Bind {
        /// What it tried to bind.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The file descriptor limit leaves no room for connections.
    FdLimit {
        /// RLIMIT_NOFILE in force.
        limit: u64,
        /// Descriptors the server needs for itself.
        reserved: usize,
    },
    /// `--backend uring` was asked for and the kernel refuses io_uring.
    Backend(String),
    /// Any other start-up step failed.
    Setup {
        /// The step.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// `--strict-memory`: the worst case of the settings exceeds the
    /// cgroup's memory limit (exit code 2, as for a bad flag).
    Memory(String),
    /// [`Server::start`] was called before [`Server::service`] (a bug in
    /// the program embedding the engine).
    NoService,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::NoService => {
                write!(f, "no service to run: Server::service was not called")
            }
            ServerError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            ServerError::FdLimit { limit, reserved } => write!(
                f,
                "RLIMIT_NOFILE is {limit}, which leaves no room for connections after the \
                 {reserved} descriptors the server needs; raise it (ulimit -n)"
            ),
            ServerError::Setup { what, source } => write!(f, "{what}: {source}"),
            ServerError::Backend(why) => write!(f, "--backend uring: {why}"),
            ServerError::Memory(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Bind { source, .. } | ServerError::Setup { source, .. } => Some(source),
            ServerError::FdLimit { .. }
            | ServerError::Backend(_)
            | ServerError::Memory(_)
            | ServerError::NoService => None,
        }
    }
}

/// A server to start: a validated config and the service to run.
pub struct Server {
    config: Config,
    /// Set by [`Server::service`] or [`Server::service_with`]; the engine
    /// has no service of its own.
    factory: Option<ServiceFactory>,
    /// Where reloads read the settings, if the server reloads.
    reload: Option<Source>,
}

/// A started server.
pub struct Running {
    /// Where clients connect (the real port when `--listen` had port 0).
    pub local_addr: SocketAddr,
    /// Where the admin endpoint listens, if enabled.
    pub admin_addr: Option<SocketAddr>,
    /// The counters every shard writes.
    pub registry: Arc<Registry>,
    stop: Arc<AtomicBool>,
    wakers: Vec<Waker>,
    shards: Vec<JoinHandle<()>>,
    pusher: Pusher,
    /// The listeners offered on `--upgrade-socket`, withdrawn on drain.
    offer: Option<Offer>,
    /// Runs reloads (SIGHUP, `POST /reload`), if the server reloads.
    reloader: Option<Arc<Reloader>>,
}

impl Server {
    /// A server under `config` (validated); give it its service with
    /// [`Server::service`] or [`Server::service_with`] before starting it.
    pub fn new(config: Config) -> Server {
        Server {
            config,
            factory: None,
            reload: None,
        }
    }

    /// Reloads the settings from `source` on SIGHUP and `POST /reload`
    /// (without it, a reload is refused: there is nothing to read).
    pub fn reload_from(mut self, source: Source) -> Server {
        self.reload = Some(source);
        self
    }

    /// Runs `make()`'s service: one instance per shard.
    pub fn service<S, F>(mut self, make: F) -> Server
    where
        S: Service,
        F: Fn() -> S + Send + Sync + 'static,
    {
        self.factory = Some(Arc::new(move |_| Box::new(Host::new(make()))));
        self
    }

    /// Runs the service `make(context)` builds for each shard, for services
    /// that need to know where they run (the shard, the settings, the
    /// engine's counters).
    pub fn service_with<S, F>(mut self, make: F) -> Server
    where
        S: Service,
        F: Fn(&ServiceContext<'_>) -> S + Send + Sync + 'static,
    {
        self.factory = Some(Arc::new(move |context| Box::new(Host::new(make(context)))));
        self
    }

    /// Starts, then serves until SIGTERM or SIGINT and a graceful shutdown.
    /// A second signal exits at once.
    pub fn run(self) -> Result<(), ServerError> {
        let grace = self.config.shutdown_grace;
        // The signal pipe is made before the shards start, so the start-up
        // fd count takes it in as the server's own; measured after, a
        // connection accepted in between would be counted as well.
        let mut signals =
            signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT, libc::SIGHUP])
                .map_err(|source| ServerError::Setup {
                    what: "installing signal handlers",
                    source,
                })?;
        let running = self.start()?;
        let stopper = running.stopper();
        let reloader = running.reloader.clone();
        std::thread::Builder::new()
            .name("holdfast-signals".into())
            .spawn(move || {
                let mut first = true;
                for signal in signals.forever() {
                    if signal == libc::SIGHUP {
                        log::info!("signal {signal} (SIGHUP): reloading the settings");
                        reload(reloader.as_deref());
                        continue;
                    }
                    if first {
                        log::info!(
                            "signal {signal}: draining for at most {grace:?}; signal again to exit at once"
                        );
                        stopper();
                        first = false;
                    } else {
                        log::warn!("signal {signal} again: exiting now");
                        std::process::exit(128 + signal);
                    }
                }
            })
            .map_err(|source| ServerError::Setup {
                what: "starting the signal thread",
                source,
            })?;
        running.wait();
        log::info!("stopped");
        Ok(())
    }

    /// Binds and starts every shard (and the admin endpoint) and returns
    /// at once.
    pub fn start(self) -> Result<Running, ServerError> {
        let factory = self.factory.ok_or(ServerError::NoService)?;
        let loaded = self.config.clone();
        let mut config = self.config;
        if config.threads == 0 {
            config.threads = sys::cpu_count();
        }
        // Fixed for the process's life: the upstreams' metrics and pools
        // are sized by it (`engine/reload/`).
        config.upstream_slots = config.upstream_slots();
        config.max_conns = resolve_max_conns(&config)?;
        let (backend, fallback) = choose_backend(&config)?;
        if let Some(warning) = fallback {
            log::warn!("{warning}");
        }
        let plan = memory_plan(&config, backend)?;
        let mut taken = take_over(&config)?;
        let mut from_systemd = false;
        let (listeners, local_addr) = match taken.as_mut() {
            Some(taken) => adopt(std::mem::take(&mut taken.listeners), &config)?,
            None => match systemd_listeners()? {
                Some(inherited) => {
                    from_systemd = true;
                    adopt(inherited, &config)?
                }
                None => bind_listeners(&config)?,
            },
        };
        let generation = taken.as_ref().map_or(1, |taken| taken.generation);
        let metrics: Vec<Arc<ShardMetrics>> = (0..config.threads)
            .map(|_| Arc::new(ShardMetrics::with_upstreams(config.upstream_slots())))
            .collect();
        let mut registry = Registry::new(metrics.clone(), backend.name());
        *registry.upstreams.get_mut().expect("not shared yet") = config.upstreams.clone();
        registry.generation.store(generation, Ordering::Relaxed);
        let registry = Arc::new(registry);
        let offer = make_offer(&config, &listeners, generation, &registry)?;
        let wakers = (0..config.threads)
            .map(|_| EventWaker::new().map(Arc::new))
            .collect::<io::Result<Vec<Waker>>>()
            .map_err(|source| ServerError::Setup {
                what: "creating a shard's eventfd",
                source,
            })?;
        let per_ip = per_ip_table(&config, &registry);
        let published = Arc::new(Published::new(config.clone(), per_ip.clone()));
        let shared = Shared {
            open_total: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            listeners_kept: Arc::new(AtomicBool::new(from_systemd)),
            listeners_open: Arc::new(AtomicUsize::new(config.threads)),
            sweep_queues: taken.is_some().then(|| Arc::new(AtomicBool::new(false))),
            per_ip,
            fd_room: fd_room(&config),
            budget: budget(&config, &plan, &registry, &wakers),
            settings: published.clone(),
        };
        let hub = Arc::new(Hub::new(&wakers, &metrics, push_limits(&config)));
        let pusher = Pusher::new(hub.clone());
        let reloader = self.reload.map(|source| {
            let reloader =
                Reloader::new(source, loaded, published, wakers.clone(), registry.clone());
            Arc::new(reloader)
        });
        let setup = ShardSetup {
            config: &config,
            backend,
            factory: &factory,
            registry: &registry,
            shared: &shared,
            hub: &hub,
            pusher: &pusher,
            reloader: reloader.as_ref(),
        };
        let shards = setup.make_shards(listeners, metrics, &wakers)?;
        let admin_addr = start_admin(&config, &registry, reloader.clone())?;
        let handles = shards
            .into_iter()
            .enumerate()
            .map(|(index, shard)| spawn_shard(index, shard, config.pin_cores))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ServerError::Setup {
                what: "starting a shard thread",
                source,
            })?;
        registry.ready.store(true, Ordering::Release);
        log_listening(&config, backend, local_addr, admin_addr);
        if let Some(taken) = taken {
            confirm(taken);
            sweep_queues(&shared, &wakers);
            // Its Unix socket was counted as the process's own, and is
            // closed now.
            registry.fds_other.fetch_sub(1, Ordering::Relaxed);
        }
        let running = Running {
            local_addr,
            admin_addr,
            registry,
            stop: shared.stop,
            wakers,
            shards: handles,
            pusher,
            offer,
            reloader,
        };
        if let (Some(offer), Some(path)) = (&running.offer, &config.upgrade_socket) {
            let listeners_kept = shared.listeners_kept.clone();
            let listeners_open = shared.listeners_open.clone();
            let timeout = config.upgrade_timeout;
            let stop = running.stopper();
            let drain = move || {
                listeners_kept.store(true, Ordering::Release);
                stop();
                await_listeners_closed(&listeners_open, timeout);
            };
            offer
                .serve(path, config.upgrade_timeout, drain)
                .map_err(|source| ServerError::Setup {
                    what: "serving upgrades on --upgrade-socket",
                    source,
                })?;
        }
        Ok(running)
    }
}

/// The listeners of the process serving upgrades on `--upgrade-from`, if
/// given; this process does not start without them.
fn take_over(config: &Config) -> Result<Option<Taken>, ServerError> {
    let Some(path) = &config.upgrade_from else {
        return Ok(None);
    };
    let taken =
        upgrade::take(path, config.upgrade_timeout).map_err(|source| ServerError::Setup {
            what: "--upgrade-from: taking the listeners over",
            source,
        })?;
    log::info!(
        "upgrade: took {} listener{} from {} (generation {})",
        taken.listeners.len(),
        if taken.listeners.len() == 1 { "" } else { "s" },
        path.display(),
        taken.generation
    );
    Ok(Some(taken))
}

/// Duplicates of the listeners to offer on `--upgrade-socket`, if given.
fn make_offer(
    config: &Config,
    listeners: &[std::net::TcpListener],
    generation: u64,
    registry: &Arc<Registry>,
) -> Result<Option<Offer>, ServerError> {
    if config.upgrade_socket.is_none() {
        return Ok(None);
    }
    Offer::new(listeners, generation, registry.clone())
        .map(Some)
        .map_err(|source| ServerError::Setup {
            what: "duplicating the listeners for --upgrade-socket",
            source,
        })
}

/// Tells the old process this one serves; it drains. Should it not
/// answer, this process serves on all the same (it has the listeners).
fn confirm(taken: Taken) {
    let path = taken.path().to_path_buf();
    match taken.confirm() {
        Ok(took) => log::info!(
            "upgrade: the old process on {} drains; hand-over took {} ms",
            path.display(),
            took.as_millis()
        ),
        Err(e) => log::warn!(
            "upgrade: the old process on {} did not confirm its drain ({e}); serving anyway",
            path.display()
        ),
    }
}

/// Once the old process has closed its listeners: each shard accepts what
/// waits in its listener's queue (`shard/turn.rs`, `sweep_queue`).
fn sweep_queues(shared: &Shared, wakers: &[Waker]) {
    let Some(flag) = &shared.sweep_queues else {
        return;
    };
    flag.store(true, Ordering::Release);
    for waker in wakers {
        if let Err(e) = waker.wake() {
            log::warn!("waking a shard to accept its listener's queue: {e}");
        }
    }
}

/// Waits (at most `timeout`) until every shard has closed its listener,
/// so that the new process is told to take over only when no accept of
/// this one can take a connection's wake-up any more.
fn await_listeners_closed(open: &AtomicUsize, timeout: Duration) {
    let until = Instant::now() + timeout;
    while open.load(Ordering::Acquire) > 0 {
        if Instant::now() >= until {
            log::warn!(
                "upgrade: {} shard(s) still accepting after {timeout:?}; handing over anyway",
                open.load(Ordering::Acquire)
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The listening sockets systemd passed (`LISTEN_FDS`), if any.
fn systemd_listeners() -> Result<Option<Vec<std::net::TcpListener>>, ServerError> {
    let listeners = inherit::systemd_listeners().map_err(|source| ServerError::Setup {
        what: "LISTEN_FDS: taking systemd's listening sockets",
        source,
    })?;
    if let Some(listeners) = &listeners {
        log::info!(
            "socket activation: {} listener{} from systemd (LISTEN_FDS)",
            listeners.len(),
            if listeners.len() == 1 { "" } else { "s" }
        );
    }
    Ok(listeners)
}

/// One listener per shard out of listeners bound elsewhere (by the old
/// process, by systemd): as many as shards, each its own; or a single
/// one that every shard accepts from (a duplicate each).
fn adopt(
    inherited: Vec<std::net::TcpListener>,
    config: &Config,
) -> Result<(Vec<std::net::TcpListener>, SocketAddr), ServerError> {
    let setup = |source| ServerError::Setup {
        what: "taking inherited listeners",
        source,
    };
    let listeners = match inherited.len() {
        n if n == config.threads => inherited,
        1 => {
            let first = &inherited[0];
            let mut all = (1..config.threads)
                .map(|_| first.try_clone())
                .collect::<io::Result<Vec<_>>>()
                .map_err(setup)?;
            all.splice(0..0, inherited);
            all
        }
        n => {
            return Err(setup(io::Error::other(format!(
                "--threads {}: {n} listeners were handed over; start with --threads {n}",
                config.threads
            ))));
        }
    };
    let local_addr = listeners[0].local_addr().map_err(setup)?;
    if local_addr != config.listen {
        log::info!(
            "serving on the inherited listeners at {local_addr}; --listen {} is not used",
            config.listen
        );
    }
    Ok((listeners, local_addr))
}

/// The bounds of push, from the validated settings.
fn push_limits(config: &Config) -> PushLimits {
    PushLimits {
        mailbox: config.mailbox,
        mailbox_bytes: config.mailbox_bytes,
        max_groups: config.max_groups,
        message_max: config.buffer - config.protocol.overhead(),
        slots: config.max_conns,
    }
}

/// The memory plan of `config` on `backend`, stated; past the cgroup's
/// limit a warning, or with `--strict-memory` the refusal to start.
fn memory_plan(config: &Config, backend: Backend) -> Result<Plan, ServerError> {
    let plan = Plan::new(config, backend == Backend::Uring);
    let excess = plan.excess();
    if let Some(excess) = excess.clone().filter(|_| config.strict_memory) {
        return Err(ServerError::Memory(excess));
    }
    log::info!("{}", plan.line());
    if let Some(excess) = excess {
        log::warn!("{excess}");
    }
    Ok(plan)
}

/// The process's `--max-buffer-memory`, shared by the shards, publishing
/// into `registry` and waking starving shards through `wakers`.
fn budget(config: &Config, plan: &Plan, registry: &Registry, wakers: &[Waker]) -> Arc<Budget> {
    let gauge = registry.buffer_memory.clone();
    let budget = Budget::new(plan.budget, config.buffer, config.threads, gauge);
    registry
        .buffer_memory_limit
        .store(budget.bytes() as u64, Ordering::Relaxed);
    budget.set_wakers(wakers.to_vec());
    Arc::new(budget)
}

/// The per-address limits' table, if `config` sets any: at most
/// `--ip-table-max` addresses (0: `--max-conns`, which are as many as can
/// hold a connection at once).
fn per_ip_table(config: &Config, registry: &Registry) -> Option<Arc<AddrTable>> {
    let limits = PerIp::from_config(config)?;
    let max = match config.ip_table_max {
        0 => config.max_conns,
        max => max,
    };
    let gauge = registry.ip_table_entries.clone();
    Some(Arc::new(AddrTable::new(limits, max, gauge)))
}

/// Descriptors RLIMIT_NOFILE leaves for client connections, for
/// `--shed-fds-left`.
fn fd_room(config: &Config) -> usize {
    let limit = sys::raise_fd_limit().map_or(usize::MAX, |limit| limit as usize);
    limit.saturating_sub(fds_reserved(config))
}

/// Binds one listener per shard on `config.listen` (all on the port the
/// first one got, for port 0); returns them and the bound address.
fn bind_listeners(
    config: &Config,
) -> Result<(Vec<std::net::TcpListener>, SocketAddr), ServerError> {
    let mut listeners = Vec::with_capacity(config.threads);
    let reuse_port = config.threads > 1;
    if reuse_port && config.listen.port() != 0 {
        // SO_REUSEPORT would let this process quietly share the port
        // with another server of the same user (a second holdfast, say)
        // instead of failing. A plain bind first finds that out.
        drop(
            sys::listener(config.listen, 1, false).map_err(|source| ServerError::Bind {
                addr: config.listen,
                source,
            })?,
        );
    }
    for _ in 0..config.threads {
        // With port 0 the first bind picks the port; the others share it.
        let addr = listeners
            .first()
            .map_or(Ok(config.listen), std::net::TcpListener::local_addr)
            .map_err(|source| ServerError::Bind {
                addr: config.listen,
                source,
            })?;
        let listener = sys::listener(addr, config.backlog, reuse_port)
            .map_err(|source| ServerError::Bind { addr, source })?;
        listeners.push(listener);
    }
    let local_addr = listeners[0]
        .local_addr()
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    Ok((listeners, local_addr))
}

/// What every shard is made from.
struct ShardSetup<'a> {
    config: &'a Config,
    backend: Backend,
    factory: &'a ServiceFactory,
    registry: &'a Arc<Registry>,
    shared: &'a Shared,
    hub: &'a Arc<Hub>,
    pusher: &'a Pusher,
    reloader: Option<&'a Arc<Reloader>>,
}

impl ShardSetup<'_> {
    /// One shard per listener, each with its own service from the
    /// factory and its own metrics; not started yet.
    fn make_shards(
        &self,
        listeners: Vec<std::net::TcpListener>,
        metrics: Vec<Arc<ShardMetrics>>,
        wakers: &[Waker],
    ) -> Result<Vec<Shard>, ServerError> {
        let mut shards = Vec::with_capacity(listeners.len());
        for (index, (listener, metrics)) in listeners.into_iter().zip(metrics).enumerate() {
            let context = ServiceContext {
                shard: index,
                config: self.config,
                registry: self.registry,
                pusher: self.pusher,
                upstream_adder: self.reloader.cloned().map(UpstreamAdder),
            };
            let shard = Shard::new(
                index,
                self.backend,
                listener,
                (self.factory)(&context),
                self.config,
                self.shared,
                metrics,
                wakers[index].clone(),
                self.hub.clone(),
            )
            .map_err(|source| ServerError::Setup {
                what: "creating a shard",
                source,
            })?;
            shards.push(shard);
        }
        Ok(shards)
    }
}

/// Counts the fds the process holds besides the shards' as expected, then
/// starts the admin endpoint if configured; returns its address.
fn start_admin(
    config: &Config,
    registry: &Arc<Registry>,
    reloader: Option<Arc<Reloader>>,
) -> Result<Option<SocketAddr>, ServerError> {
    // Whatever the process holds now besides the shards (stdio, fds
    // inherited from the parent) is expected, not a leak; the admin
    // endpoint and the signal pipe add their own.
    // (A uring shard makes its ring on its own thread, later: each
    // shard's own count says what it holds right now.)
    let fds_now = sys::open_fds().unwrap_or(0) as usize;
    let fds_shards: u64 = registry.shards.iter().map(|s| s.fds_own.get()).sum();
    registry.fds_other.store(
        fds_now.saturating_sub(fds_shards as usize),
        Ordering::Relaxed,
    );
    let Some(addr) = config.admin else {
        return Ok(None);
    };
    let admin = admin::spawn(addr, registry.clone(), reloader)
        .map_err(|source| ServerError::Bind { addr, source })?;
    Ok(Some(admin.local_addr))
}

/// The one line that says the server is up (tests and scripts wait for
/// it).
fn log_listening(
    config: &Config,
    backend: Backend,
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
) {
    log::info!(
        "listening on {local_addr} ({protocol}, {backend}, {threads} shard{s}, max-conns {max_conns}, \
         buffer {buffer} B, max-frame {max_frame} B); admin on {admin}",
        protocol = config.protocol.name(),
        backend = backend.name(),
        threads = config.threads,
        s = if config.threads == 1 { "" } else { "s" },
        max_conns = config.max_conns,
        buffer = config.buffer,
        max_frame = config.max_frame,
        admin = admin_addr.map_or("off".to_string(), |a| a.to_string()),
    );
}

/// Runs a reload for SIGHUP (it logs what it came to).
fn reload(reloader: Option<&Reloader>) {
    match reloader {
        Some(reloader) => drop(reloader.reload()),
        None => log::warn!("reload: this server was started without a settings source; ignored"),
    }
}

impl Running {
    /// Reloads the settings as SIGHUP does; `None` if the server was
    /// started without a source ([`Server::reload_from`]).
    pub fn reload(&self) -> Option<Outcome> {
        self.reloader.as_ref().map(|reloader| reloader.reload())
    }

    /// Pushes to the server's connections from any thread (clone it).
    pub fn pusher(&self) -> Pusher {
        self.pusher.clone()
    }

    /// A function that starts the graceful shutdown (idempotent).
    pub fn stopper(&self) -> impl Fn() + Send + 'static {
        let stop = self.stop.clone();
        let wakers = self.wakers.clone();
        let registry = self.registry.clone();
        let offer = self.offer.clone();
        move || {
            if let Some(offer) = &offer {
                offer.withdraw();
            }
            registry.ready.store(false, Ordering::Release);
            stop.store(true, Ordering::Release);
            for waker in &wakers {
                if let Err(e) = waker.wake() {
                    log::error!("waking a shard for shutdown: {e}");
                }
            }
        }
    }

    /// Waits until every shard has drained and stopped.
    pub fn wait(self) {
        for shard in self.shards {
            let _ = shard.join();
        }
        if let Some(offer) = &self.offer {
            offer.finish();
        }
    }
}

/// Starts a shard on its own thread. A shard that fails or panics outside
/// a service call is a bug: the process exits non-zero rather than go on
/// half-served, and a supervisor restarts it.
fn spawn_shard(index: usize, shard: Shard, pin: bool) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("holdfast-shard-{index}"))
        .spawn(move || {
            if pin {
                match sys::pin_to_cpu(index) {
                    Ok(cpu) => log::debug!("shard {index} pinned to CPU {cpu}"),
                    Err(e) => log::warn!("--pin-cores: shard {index}: {e}"),
                }
            }
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shard.run())) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    log::error!("shard {index} died: {e}");
                    std::process::exit(EXIT_SHARD_DIED);
                }
                Err(_) => {
                    log::error!("shard {index} died: panic (see the message above)");
                    std::process::exit(EXIT_SHARD_DIED);
                }
            }
        })
}

/// The driver to run: `--backend` if given (an explicit `uring` that the
/// kernel refuses is an error), else the build's default. When the default
/// io_uring is refused, epoll runs and the second value is the warning
/// that says so and names the likely cause.
pub fn choose_backend(config: &Config) -> Result<(Backend, Option<String>), ServerError> {
    match config.backend {
        Some(Backend::Epoll) => Ok((Backend::Epoll, None)),
        #[cfg(feature = "uring")]
        requested => match crate::engine::driver::uring::probe(config) {
            Ok(()) => Ok((Backend::Uring, None)),
            Err(why) if requested.is_some() => Err(ServerError::Backend(why)),
            Err(why) => Ok((
                Backend::Epoll,
                Some(format!(
                    "io_uring unavailable: {why}; falling back to epoll"
                )),
            )),
        },
        #[cfg(not(feature = "uring"))]
        None => Ok((Backend::Epoll, None)),
        #[cfg(not(feature = "uring"))]
        Some(Backend::Uring) => Err(ServerError::Backend(
            "this build has no io_uring driver (build with --features uring)".into(),
        )),
    }
}

/// Descriptors the server keeps for itself besides client connections:
/// stdio, the admin endpoint and the signal pipe (within
/// `FDS_OWN_BASE`), each shard's own (`FDS_PER_SHARD`) and, with
/// upstreams, a connection per lane of every upstream on every shard (a
/// lane per `--upstream-conns` and dialect: RESP3 clients' calls have
/// connections of their own).
pub fn fds_reserved(config: &Config) -> usize {
    FDS_OWN_BASE + fds_reserved_per_shard(config) * config.threads
}

/// What [`fds_reserved`] keeps for each shard: its own descriptors and a
/// connection per lane of every upstream.
pub fn fds_reserved_per_shard(config: &Config) -> usize {
    // `--shed-accept-queue` asks the kernel through a netlink socket.
    let probe = usize::from(config.shed_accept_queue > 0);
    let lanes = config.upstream_conns * Dialect::ALL.len();
    FDS_PER_SHARD + probe + config.upstream_slots() * lanes
}

/// `--max-conns` as the fd limit allows: raise the soft RLIMIT_NOFILE to the
/// hard one, derive the default from it, and lower a requested value that
/// does not fit (with one warning naming both numbers, as Redis does with
/// maxclients).
fn resolve_max_conns(config: &Config) -> Result<usize, ServerError> {
    let limit = sys::raise_fd_limit().map_err(|source| ServerError::Setup {
        what: "raising RLIMIT_NOFILE to its hard limit",
        source,
    })?;
    let reserved = fds_reserved(config);
    let fit = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(reserved);
    if fit == 0 {
        return Err(ServerError::FdLimit { limit, reserved });
    }
    if config.max_conns == 0 {
        return Ok(fit);
    }
    if config.max_conns > fit {
        log::warn!(
            "--max-conns {} does not fit in RLIMIT_NOFILE {limit} with {reserved} descriptors \
             for the server itself; lowered to {fit}",
            config.max_conns
        );
        return Ok(fit);
    }
    Ok(config.max_conns)
}
