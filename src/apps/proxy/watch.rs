//! Which `--upstream-replica`s may serve reads (`--read-from replica` or
//! `prefer-replica` over a plain upstream list). A Redis replica cut off
//! from its primary goes on answering reads with what it had
//! (`replica-serve-stale-data`), and its PINGs still succeed: the breaker
//! cannot tell. So, as in cluster mode, a thread asks every primary with
//! replicas for `INFO replication` each second, on a connection it keeps
//! (`link.rs`), and a replica its primary does not list as
//! `state=online` with a `lag` of at most `--replica-max-lag`
//! (`replicas.rs`) serves no reads until it is fit again. A primary that
//! does not answer leaves its replicas as they were (the breaker has the
//! say then). The shards read one flag per replica, a relaxed load.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::apps::proxy::link::{Links, resolve};
use crate::apps::proxy::replicas::{self, INFO_REPLICATION, info_text};
use crate::config::{Config, ReadFrom};
use crate::engine::service::Upstream;
use crate::engine::upstream::conn::Greeting;

/// How often the primaries are asked.
const EVERY: Duration = Duration::from_secs(1);

/// The replicas' fitness, by upstream slot, and what to ask for it.
pub struct Watch {
    /// By upstream slot: whether it may serve reads (true until its
    /// primary says otherwise).
    fit: Box<[AtomicBool]>,
    /// The primaries with replicas, as the shards last said.
    groups: Mutex<Vec<Group>>,
    /// `AUTH` for an upstream with its own login (`--upstream-credential`).
    logins: HashMap<String, Box<[u8]>>,
    /// `AUTH` for the others (`--upstream-user`, `--upstream-password`).
    login: Option<Box<[u8]>>,
}

/// A primary and its replicas (slot and name each).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Group {
    primary: String,
    replicas: Vec<(usize, String)>,
}

impl Watch {
    /// The watch of `config`'s replica groups and its thread, when reads go
    /// to replicas (`--read-from` other than `primary`); `None` otherwise.
    pub fn start(config: &Config) -> std::io::Result<Option<Arc<Watch>>> {
        if config.read_from == ReadFrom::Primary || config.cluster.is_some() {
            return Ok(None);
        }
        let auth = |user: Option<&str>, password: &str| Greeting::auth(user, password).request;
        let watch = Arc::new(Watch {
            fit: (0..config.upstream_slots())
                .map(|_| AtomicBool::new(true))
                .collect(),
            groups: Mutex::new(Vec::new()),
            logins: (config.upstream_logins())
                .map(|(addr, user, password)| (addr.to_string(), auth(Some(user), password)))
                .collect(),
            login: (config.upstream_password.as_deref())
                .map(|password| auth(config.upstream_user.as_deref(), password)),
        });
        let upstreams = Upstream::of_config(config);
        watch.set_groups(&upstreams);
        let (thread, max_lag) = (watch.clone(), config.replica_max_lag);
        std::thread::Builder::new()
            .name("replica-watch".into())
            .spawn(move || thread.run(max_lag))?;
        Ok(Some(watch))
    }

    /// Whether the upstream in `slot` may serve reads.
    pub fn fit(&self, slot: usize) -> bool {
        self.fit
            .get(slot)
            .is_none_or(|fit| fit.load(Ordering::Relaxed))
    }

    /// The groups of `upstreams` (the engine's list, at start and after
    /// each reload) are the ones asked about from now on.
    pub fn set_groups(&self, upstreams: &[Upstream<'_>]) {
        let mut groups: Vec<Group> = Vec::new();
        for replica in upstreams {
            let Some(primary) = replica.primary else {
                continue;
            };
            let member = (replica.slot, replica.name.to_string());
            match groups.iter_mut().find(|group| group.primary == primary) {
                Some(group) => group.replicas.push(member),
                None => groups.push(Group {
                    primary: primary.to_string(),
                    replicas: vec![member],
                }),
            }
        }
        *self.groups.lock().expect("not poisoned") = groups;
    }

    fn run(&self, max_lag: Duration) {
        let mut links = Links::default();
        loop {
            self.check(&mut links, max_lag);
            std::thread::sleep(EVERY);
        }
    }

    /// Asks each primary about its replicas and sets their flags.
    fn check(&self, links: &mut Links, max_lag: Duration) {
        let groups = self.groups.lock().expect("not poisoned").clone();
        for group in &groups {
            let auth = (self.logins.get(&group.primary)).or(self.login.as_ref());
            let info = match links.call(&group.primary, auth.map(|a| &a[..]), INFO_REPLICATION) {
                Ok(reply) => info_text(&reply),
                Err(error) => {
                    log::debug!("replicas: {}: INFO replication: {error}", group.primary);
                    continue;
                }
            };
            let listed = replicas::listed(&info, max_lag.as_secs());
            for (slot, name) in &group.replicas {
                self.judge(*slot, name, &group.primary, &listed);
            }
        }
        let asked: Vec<&str> = groups.iter().map(|g| g.primary.as_str()).collect();
        links.keep_only(&asked);
    }

    /// Sets the flag of the replica `name` in `slot` by its primary's
    /// list, logging a change.
    fn judge(
        &self,
        slot: usize,
        name: &str,
        primary: &str,
        listed: &[(String, Result<(), String>)],
    ) {
        let Some(flag) = self.fit.get(slot) else {
            return;
        };
        let addr: Option<SocketAddr> = resolve(name).ok();
        let same = |listed: &str| listed == name || listed.parse::<SocketAddr>().ok() == addr;
        let verdict = (listed.iter())
            .find(|(listed, _)| same(listed))
            .map_or(Err("is not listed by its primary".to_string()), |(_, v)| {
                v.clone()
            });
        let was = flag.swap(verdict.is_ok(), Ordering::Relaxed);
        match (was, verdict) {
            (true, Err(why)) => {
                log::warn!("replicas: {name} {why}: reads of {primary}'s keys go elsewhere")
            }
            (false, Ok(())) => log::info!("replicas: {name} serves reads again"),
            _ => {}
        }
    }
}
