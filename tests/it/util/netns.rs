//! A private network namespace for a test that must make a peer vanish:
//! its own loopback, where an nftables rule can drop a connection's packets
//! without touching the machine's network. Needs root (CI and `make test`
//! run as root) and `nft` and `ip` (`make deps`).

use std::process::{Command, Stdio};

/// Runs `test` on a thread of its own moved into a new network namespace
/// with its loopback up: every socket it opens and every process it starts
/// (a server, `nft`) lives there. The namespace goes when they are gone.
pub fn isolated<T: Send>(test: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect(
                    "unshare(CLONE_NEWNET): this test makes a network namespace and needs root",
                );
                run("ip", &["link", "set", "lo", "up"], "");
                test()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Drops every packet on this namespace's loopback whose TCP source or
/// destination port is one of `ports` (as `sport`/`dport` say): the peer
/// on the other end of them vanishes without a FIN or a reset.
pub fn drop_tcp(rules: &[(&str, u16)]) {
    let rules: String = rules
        .iter()
        .map(|(direction, port)| format!("        tcp {direction} {port} drop\n"))
        .collect();
    let ruleset = format!(
        "table inet holdfast_test {{\n    chain input {{\n        \
         type filter hook input priority 0; policy accept;\n{rules}    }}\n}}\n"
    );
    run("nft", &["-f", "-"], &ruleset);
}

fn run(program: &str, args: &[&str], input: &str) {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {program} (make deps installs it): {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{program} {args:?} failed: {status}");
}
