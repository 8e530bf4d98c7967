//! The proxies as the API sees them (Toxiproxy's `ProxyCollection` and
//! `ToxicCollection`): names, addresses, toxics. Every change that affects
//! connections is sent to the relay, and waited for.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::sync::mpsc::{Sender, sync_channel};
use std::time::Duration;

use indexmap::IndexMap;
use mio::Waker;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::relay::{Command, Envelope};
use super::toxic::{Stream, ToxicSpec, parse_object, string_field};

/// How long the API waits for the relay to carry out a command.
const RELAY_WAIT: Duration = Duration::from_secs(10);

/// Proxies one process may hold: each is a listener (an fd) and a list of
/// toxics; a script that makes more has lost count.
pub const PROXIES_MAX: usize = 1000;
/// Toxics one proxy may hold.
pub const TOXICS_MAX: usize = 100;

/// One proxy.
pub struct Proxy {
    id: u64,
    name: String,
    /// As asked for, then as bound (a port 0 becomes the one given).
    listen: String,
    upstream: String,
    enabled: bool,
    /// Upstream toxics first, then downstream ones, each in the order added
    /// (the order Toxiproxy lists and applies them in).
    toxics: Vec<ToxicSpec>,
}

impl Proxy {
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": self.toxics.iter().map(ToxicSpec::to_json).collect::<Vec<_>>(),
        })
    }
}

/// What a create or update asks for.
pub struct ProxyInput {
    pub name: String,
    pub listen: String,
    pub upstream: String,
    pub enabled: bool,
}

impl ProxyInput {
    /// A proxy object of `POST /proxies` or `/populate`; `enabled`
    /// defaults to true.
    pub fn from_object(object: &Map<String, Value>) -> Result<ProxyInput, ApiError> {
        let name = string_field(object, "name")?.unwrap_or_default();
        let upstream = string_field(object, "upstream")?.unwrap_or_default();
        if name.is_empty() {
            return Err(ApiError::missing("name"));
        }
        if upstream.is_empty() {
            return Err(ApiError::missing("upstream"));
        }
        let listen = string_field(object, "listen")?
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| "127.0.0.1:0".into());
        let enabled = enabled_field(object)?.unwrap_or(true);
        Ok(ProxyInput {
            name,
            listen,
            upstream,
            enabled,
        })
    }
}

fn enabled_field(object: &Map<String, Value>) -> Result<Option<bool>, ApiError> {
    match object.get("enabled") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(enabled)) => Ok(Some(*enabled)),
        Some(_) => Err(ApiError::bad_body("enabled: expected true or false")),
    }
}

pub struct Collection {
    proxies: IndexMap<String, Proxy>,
    next_id: u64,
    revision: u64,
    relay: Sender<Envelope>,
    waker: Arc<Waker>,
}

impl Collection {
    pub fn new(relay: Sender<Envelope>, waker: Arc<Waker>) -> Collection {
        Collection {
            proxies: IndexMap::new(),
            next_id: 1,
            revision: 0,
            relay,
            waker,
        }
    }

    /// Sends `command` to the relay and waits until it is carried out.
    fn send(&self, command: Command) -> Result<(), ApiError> {
        let (done, wait) = sync_channel(1);
        let gone = || ApiError::internal("the relay thread is gone");
        self.relay
            .send(Envelope { command, done })
            .map_err(|_| gone())?;
        self.waker.wake().map_err(|_| gone())?;
        wait.recv_timeout(RELAY_WAIT).map_err(|_| gone())
    }

    pub fn list(&self) -> Value {
        let all = self.proxies.iter().map(|(n, p)| (n.clone(), p.to_json()));
        Value::Object(all.collect())
    }

    pub fn get(&self, name: &str) -> Result<&Proxy, ApiError> {
        self.proxies.get(name).ok_or_else(ApiError::proxy_not_found)
    }

    /// Starts proxy `name`'s listener (it must be stopped).
    fn start(&mut self, name: &str) -> Result<(), ApiError> {
        let proxy = self.get(name)?;
        let listener = TcpListener::bind(proxy.listen.as_str())
            .map_err(|e| ApiError::internal(&format!("listen tcp {}: {e}", proxy.listen)))?;
        let listen = listener
            .local_addr()
            .map_err(|e| ApiError::internal(&e.to_string()))?;
        let command = Command::Start {
            id: proxy.id,
            listener,
            upstream: resolve(&proxy.upstream),
            toxics: proxy.toxics.clone(),
        };
        self.send(command)?;
        let proxy = &mut self.proxies[name];
        proxy.listen = listen.to_string();
        proxy.enabled = true;
        Ok(())
    }

    fn stop(&mut self, name: &str) -> Result<(), ApiError> {
        let id = self.get(name)?.id;
        self.send(Command::Stop { id })?;
        self.proxies[name].enabled = false;
        Ok(())
    }

    pub fn create(&mut self, input: ProxyInput) -> Result<&Proxy, ApiError> {
        if self.proxies.contains_key(&input.name) {
            return Err(ApiError::proxy_exists());
        }
        if self.proxies.len() >= PROXIES_MAX {
            return Err(ApiError::new("too many proxies", 400));
        }
        let name = input.name.clone();
        self.insert(input);
        if self.proxies[&name].enabled {
            self.proxies[&name].enabled = false;
            if let Err(error) = self.start(&name) {
                self.proxies.shift_remove(&name);
                return Err(error);
            }
        }
        self.get(&name)
    }

    fn insert(&mut self, input: ProxyInput) {
        let proxy = Proxy {
            id: self.next_id,
            name: input.name.clone(),
            listen: input.listen,
            upstream: input.upstream,
            enabled: input.enabled,
            toxics: Vec::new(),
        };
        self.next_id += 1;
        self.proxies.insert(input.name, proxy);
    }

    /// `POST /proxies/{name}`: a changed listen or upstream restarts the
    /// proxy (closing its connections); `enabled` starts or stops it.
    pub fn update(&mut self, name: &str, body: &[u8]) -> Result<&Proxy, ApiError> {
        let object = parse_object(body)?;
        let proxy = self.get(name)?;
        let listen = string_field(&object, "listen")?.unwrap_or(proxy.listen.clone());
        let upstream = string_field(&object, "upstream")?.unwrap_or(proxy.upstream.clone());
        let enabled = enabled_field(&object)?.unwrap_or(proxy.enabled);
        let differs = differs(&proxy.listen, &listen) || proxy.upstream != upstream;
        if differs && proxy.enabled {
            self.stop(name)?;
        }
        let proxy = &mut self.proxies[name];
        if differs {
            proxy.listen = listen;
            proxy.upstream = upstream;
        }
        match (enabled, proxy.enabled) {
            (true, false) => self.start(name)?,
            (false, true) => self.stop(name)?,
            _ => {}
        }
        self.get(name)
    }

    pub fn delete(&mut self, name: &str) -> Result<(), ApiError> {
        if self.get(name)?.enabled {
            self.stop(name)?;
        }
        self.proxies.shift_remove(name);
        Ok(())
    }

    /// `POST /populate`: creates the proxies given, replacing those of the
    /// same name whose listen or upstream differ; checks them all first.
    pub fn populate(&mut self, body: &[u8]) -> (Vec<Value>, Option<ApiError>) {
        let inputs = match populate_inputs(body) {
            Ok(inputs) => inputs,
            Err(error) => return (Vec::new(), Some(error)),
        };
        let mut done = Vec::new();
        for input in inputs {
            match self.populate_one(input) {
                Ok(json) => done.push(json),
                Err(error) => return (done, Some(error)),
            }
        }
        (done, None)
    }

    fn populate_one(&mut self, input: ProxyInput) -> Result<Value, ApiError> {
        if let Some(existing) = self.proxies.get(&input.name) {
            let same =
                !differs(&existing.listen, &input.listen) && existing.upstream == input.upstream;
            if same {
                return Ok(existing.to_json());
            }
            self.delete(&input.name.clone())?;
        }
        self.create(input).map(Proxy::to_json)
    }

    /// `POST /reset`: every proxy enabled, every toxic removed.
    pub fn reset(&mut self) -> Result<(), ApiError> {
        let names: Vec<String> = self.proxies.keys().cloned().collect();
        for name in names {
            if !self.proxies[&name].enabled {
                self.start(&name)?;
            }
            self.set_toxics(&name, Vec::new())?;
        }
        Ok(())
    }

    pub fn toxic(&self, proxy: &str, toxic: &str) -> Result<&ToxicSpec, ApiError> {
        let proxy = self.get(proxy)?;
        let found = proxy.toxics.iter().find(|t| t.name == toxic);
        found.ok_or_else(ApiError::toxic_not_found)
    }

    pub fn toxics(&self, proxy: &str) -> Result<Value, ApiError> {
        let list = self.get(proxy)?.toxics.iter().map(ToxicSpec::to_json);
        Ok(Value::Array(list.collect()))
    }

    fn set_toxics(&mut self, name: &str, toxics: Vec<ToxicSpec>) -> Result<(), ApiError> {
        let proxy = self.get(name)?;
        if proxy.enabled {
            let command = Command::Toxics {
                id: proxy.id,
                toxics: toxics.clone(),
            };
            self.send(command)?;
        }
        self.proxies[name].toxics = toxics;
        Ok(())
    }

    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    pub fn add_toxic(&mut self, proxy: &str, body: &[u8]) -> Result<Value, ApiError> {
        self.get(proxy)?;
        let revision = self.next_revision();
        let spec = ToxicSpec::from_json(body, revision)?;
        let mut toxics = self.get(proxy)?.toxics.clone();
        if toxics.iter().any(|t| t.name == spec.name) {
            return Err(ApiError::toxic_exists());
        }
        if toxics.len() >= TOXICS_MAX {
            return Err(ApiError::new("too many toxics", 400));
        }
        let json = spec.to_json();
        // After the last toxic of its stream: upstream ones stay first.
        let at = match spec.stream {
            Stream::Upstream => toxics
                .iter()
                .filter(|t| t.stream == Stream::Upstream)
                .count(),
            Stream::Downstream => toxics.len(),
        };
        toxics.insert(at, spec);
        self.set_toxics(proxy, toxics)?;
        Ok(json)
    }

    pub fn update_toxic(
        &mut self,
        proxy: &str,
        toxic: &str,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        self.toxic(proxy, toxic)?;
        let revision = self.next_revision();
        let mut toxics = self.get(proxy)?.toxics.clone();
        let spec = toxics
            .iter_mut()
            .find(|t| t.name == toxic)
            .expect("found above");
        spec.update(body, revision)?;
        let json = spec.to_json();
        self.set_toxics(proxy, toxics)?;
        Ok(json)
    }

    pub fn remove_toxic(&mut self, proxy: &str, toxic: &str) -> Result<(), ApiError> {
        self.toxic(proxy, toxic)?;
        let mut toxics = self.get(proxy)?.toxics.clone();
        toxics.retain(|t| t.name != toxic);
        self.set_toxics(proxy, toxics)
    }
}

fn populate_inputs(body: &[u8]) -> Result<Vec<ProxyInput>, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_body(&e.to_string()))?;
    let Value::Array(items) = value else {
        return Err(ApiError::bad_body("expected an array of proxies"));
    };
    if items.len() > PROXIES_MAX {
        return Err(ApiError::new("too many proxies", 400));
    }
    let mut inputs = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(object) = item else {
            return Err(ApiError::bad_body(&format!(
                "proxy {}: expected an object",
                i + 1
            )));
        };
        let input = ProxyInput::from_object(object).map_err(|e| ApiError {
            message: format!("{} at proxy {}", e.message, i + 1),
            status: e.status,
        })?;
        inputs.push(input);
    }
    Ok(inputs)
}

/// Whether `wanted` names another address than `current` (as Toxiproxy's
/// `Differs`: both resolved, so `localhost:0` differs from a bound port).
fn differs(current: &str, wanted: &str) -> bool {
    resolve(current) != resolve(wanted) || resolve(wanted).is_none() && current != wanted
}

/// The first address `text` resolves to.
fn resolve(text: &str) -> Option<SocketAddr> {
    text.to_socket_addrs().ok()?.next()
}
