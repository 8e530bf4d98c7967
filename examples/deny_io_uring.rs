//! Runs a program with io_uring denied, the way a container's seccomp
//! profile denies it: a seccomp filter makes `io_uring_setup(2)` fail with
//! EPERM (or ENOSYS), then this process becomes the program (`exec`), which
//! inherits the filter. Everything else is allowed.
//!
//! The seccomp fallback test in `tests/it/uring.rs` runs `holdfast` through it:
//!     deny_io_uring [--errno EPERM|ENOSYS] [--rlimit] PROGRAM [ARGS...]
//! With `--rlimit`, setting a resource limit (`setrlimit(2)`, and
//! `prlimit64(2)` with a new limit) fails with the same errno instead, while
//! reading one still works (`tests/it/limits.rs`: a failure to raise
//! RLIMIT_NOFILE is reported as such).
//! For example:
//!     cargo run --example deny_io_uring -- target/debug/holdfast serve --check

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut errno = libc::EPERM;
    if args.first().map(String::as_str) == Some("--errno") {
        errno = match args.get(1).map(String::as_str) {
            Some("EPERM") => libc::EPERM,
            Some("ENOSYS") => libc::ENOSYS,
            other => {
                eprintln!("deny_io_uring: --errno takes EPERM or ENOSYS, got {other:?}");
                return ExitCode::from(2);
            }
        };
        args.drain(..2);
    }
    let rlimit = args.first().map(String::as_str) == Some("--rlimit");
    if rlimit {
        args.remove(0);
    }
    let Some((program, rest)) = args.split_first() else {
        eprintln!("usage: deny_io_uring [--errno EPERM|ENOSYS] [--rlimit] PROGRAM [ARGS...]");
        return ExitCode::from(2);
    };

    // An empty rule list matches the system call whatever its arguments.
    let rules = if rlimit {
        // prlimit64(pid, resource, new_limit, old_limit): only a call that
        // sets a limit (new_limit not NULL) is denied.
        let sets = SeccompCondition::new(2, SeccompCmpArgLen::Qword, SeccompCmpOp::Ne, 0)
            .and_then(|condition| SeccompRule::new(vec![condition]));
        let sets = match sets {
            Ok(rule) => rule,
            Err(e) => {
                eprintln!("deny_io_uring: building the rule: {e}");
                return ExitCode::from(2);
            }
        };
        BTreeMap::from([
            (libc::SYS_setrlimit, Vec::new()),
            (libc::SYS_prlimit64, vec![sets]),
        ])
    } else {
        BTreeMap::from([(libc::SYS_io_uring_setup, Vec::new())])
    };
    let arch = match std::env::consts::ARCH.try_into() {
        Ok(arch) => arch,
        Err(e) => {
            eprintln!("deny_io_uring: no seccomp filter for this architecture: {e}");
            return ExitCode::from(2);
        }
    };
    let program_bpf: BpfProgram = match SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .and_then(TryInto::try_into)
    {
        Ok(bpf) => bpf,
        Err(e) => {
            eprintln!("deny_io_uring: building the filter: {e}");
            return ExitCode::from(2);
        }
    };
    // This thread only; `exec` keeps the filter (and no_new_privs, which
    // apply_filter sets) for the new program and every thread it starts.
    if let Err(e) = seccompiler::apply_filter(&program_bpf) {
        eprintln!("deny_io_uring: installing the filter: {e}");
        return ExitCode::from(2);
    }
    let error = Command::new(program).args(rest).exec();
    eprintln!("deny_io_uring: exec {program}: {error}");
    ExitCode::from(127)
}
