//! A real Redis Cluster on loopback: six `redis-server --cluster-enabled
//! yes` (Debian's `redis-server`, installed by `make deps`), joined by
//! `redis-cli --cluster create --cluster-replicas 1`: three primaries with
//! a replica each. Each node's bus port is chosen too (`--cluster-port`),
//! so no port is the client port + 10000 by chance. Dropping it kills
//! every node and removes their files.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Resp, free_port, wait_until};

/// One node.
struct Node {
    child: Option<Child>,
    port: u16,
}

/// The cluster; see the module's text.
pub struct Cluster {
    nodes: Vec<Node>,
    dir: PathBuf,
    /// Every node's `requirepass` (and `masterauth`), if any.
    password: Option<String>,
}

impl Cluster {
    /// Starts and joins six nodes and waits until every slot is served and
    /// every primary has its replica (at most half a minute).
    pub fn start() -> Cluster {
        Cluster::start_with(None)
    }

    /// [`Cluster::start`] with a password every node requires.
    pub fn start_with(password: Option<&str>) -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "holdfast-it-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("a directory for the cluster's files");
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir,
            password: password.map(str::to_string),
        };
        for _ in 0..6 {
            let node = cluster.start_node();
            cluster.nodes.push(node);
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut create = Command::new("redis-cli");
        if let Some(password) = password {
            create.args(["-a", password, "--no-auth-warning"]);
        }
        let output = create
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("running redis-cli --cluster create (make deps installs redis-tools)");
        assert!(
            output.status.success(),
            "redis-cli --cluster create: {output:?}"
        );
        let ready = wait_until(Duration::from_secs(30), || cluster.settled());
        assert!(
            ready,
            "the cluster did not settle: {:?}",
            cluster.slots_text()
        );
        cluster
    }

    /// Starts one more node and joins it as a primary with no slots
    /// (`redis-cli --cluster add-node`); its port, once every node knows
    /// it.
    pub fn add_node(&mut self) -> u16 {
        let node = self.start_node();
        let port = node.port;
        self.nodes.push(node);
        let mut add = Command::new("redis-cli");
        if let Some(password) = &self.password {
            add.args(["-a", password, "--no-auth-warning"]);
        }
        let output = add
            .args([
                "--cluster",
                "add-node",
                &format!("127.0.0.1:{port}"),
                &self.seed(),
            ])
            .stdin(Stdio::null())
            .output()
            .expect("running redis-cli --cluster add-node");
        assert!(
            output.status.success(),
            "redis-cli --cluster add-node: {output:?}"
        );
        let known = format!("127.0.0.1:{port}@");
        let joined = wait_until(Duration::from_secs(30), || {
            self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                let nodes = self.client(n.port).call(&[b"CLUSTER", b"NODES"]);
                let info = self.client(n.port).call(&[b"CLUSTER", b"INFO"]);
                String::from_utf8_lossy(&nodes).contains(&known)
                    && String::from_utf8_lossy(&info).contains("cluster_state:ok")
            })
        });
        assert!(joined, "the cluster never took in the node on {port}");
        port
    }

    fn start_node(&self) -> Node {
        for _ in 0..10 {
            let (port, bus) = (free_port(), free_port());
            if port == bus {
                continue;
            }
            let mut command = Command::new("redis-server");
            if let Some(password) = &self.password {
                command.args(["--requirepass", password, "--masterauth", password]);
            }
            let child = command
                .args([
                    "--port",
                    &port.to_string(),
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .arg("--dir")
                .arg(&self.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawning redis-server (make deps installs it)");
            let mut node = Node {
                child: Some(child),
                port,
            };
            let up = wait_until(Duration::from_secs(5), || {
                let exited = matches!(node.child.as_mut().unwrap().try_wait(), Ok(Some(_)));
                exited || std::net::TcpStream::connect(addr(port)).is_ok()
            });
            let exited = matches!(node.child.as_mut().unwrap().try_wait(), Ok(Some(_)));
            if up && !exited {
                return node;
            }
        }
        panic!("could not start a cluster node on free ports");
    }

    /// Every node says the cluster is ok, and the slot map shows three
    /// ranges each with a primary and a replica.
    fn settled(&self) -> bool {
        let ok = self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
            let info = self.client(n.port).call(&[b"CLUSTER", b"INFO"]);
            String::from_utf8_lossy(&info).contains("cluster_state:ok")
        });
        ok && self.ranges().len() == 3 && self.ranges().iter().all(|r| r.2.len() == 2)
    }

    /// `CLUSTER SLOTS` of the first live node as (first, last, ports).
    pub fn ranges(&self) -> Vec<(u16, u16, Vec<u16>)> {
        let port = self.live_port();
        let reply = self.client(port).call(&[b"CLUSTER", b"SLOTS"]);
        holdfast::apps::proxy::cluster::topology::parse_slots(&reply, "127.0.0.1")
            .expect("a CLUSTER SLOTS reply")
            .into_iter()
            .map(|range| {
                let ports = range
                    .nodes
                    .iter()
                    .map(|n| n.rsplit_once(':').unwrap().1.parse().unwrap())
                    .collect();
                (range.slots.0, range.slots.1, ports)
            })
            .collect()
    }

    fn slots_text(&self) -> String {
        let reply = self.client(self.live_port()).call(&[b"CLUSTER", b"SLOTS"]);
        String::from_utf8_lossy(&reply).into_owned()
    }

    fn live_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a live node")
            .port
    }

    /// `127.0.0.1:PORT` of the first node, for `--cluster`.
    pub fn seed(&self) -> String {
        format!("127.0.0.1:{}", self.nodes[0].port)
    }

    /// The primary serving `slot` now, and its replica.
    pub fn owner(&self, slot: u16) -> (u16, u16) {
        let ranges = self.ranges();
        let range = ranges
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .expect("every slot is served");
        (range.2[0], range.2.get(1).copied().unwrap_or(0))
    }

    /// A primary other than the one on `port`.
    pub fn other_primary(&self, port: u16) -> u16 {
        let ranges = self.ranges();
        let primaries = ranges.iter().map(|range| range.2[0]);
        primaries
            .into_iter()
            .find(|&p| p != port)
            .expect("three primaries")
    }

    /// A client straight to the node on `port` (logged in).
    pub fn client(&self, port: u16) -> Resp {
        let mut client = Resp::connect(addr(port));
        if let Some(password) = &self.password {
            assert_eq!(client.call(&[b"AUTH", password.as_bytes()]), b"+OK\r\n");
        }
        client
    }

    /// `CLUSTER MYID` of the node on `port`.
    pub fn id(&self, port: u16) -> String {
        let reply = self.client(port).call(&[b"CLUSTER", b"MYID"]);
        let text = String::from_utf8(reply).unwrap();
        text.lines().nth(1).expect("a bulk reply").to_string()
    }

    /// Sends `signal` to the node on `port` (SIGSTOP, SIGCONT).
    pub fn signal(&self, port: u16, signal: nix::sys::signal::Signal) {
        let node = self.nodes.iter().find(|n| n.port == port).expect("a node");
        let child = node.child.as_ref().expect("a live node");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal the node");
    }

    /// Kills the node on `port` (SIGKILL) and waits until it is gone.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
