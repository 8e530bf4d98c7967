//! Deciding once, before the first accept, whether io_uring can run here
//! (docs/io_uring.md, "Start-up and fallback"): a ring with the real flags,
//! every opcode the driver uses, and a provided buffer ring must all work;
//! otherwise the error is mapped to its likely cause.

use io_uring::{Probe, opcode};

use super::io::Ring;
use crate::config::Config;

/// The oldest kernel with everything the driver uses (multishot receive
/// is 6.0; 6.1 is the first long-term kernel with all of it).
const KERNEL_MIN: (u32, u32) = (6, 1);

/// Checks that this process can run the io_uring driver with `config`'s
/// ring settings. `Err` is one line: what failed and the likely cause.
pub fn probe(config: &Config) -> Result<(), String> {
    let release = nix::sys::utsname::uname()
        .map(|uts| uts.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(version) = kernel_version(&release)
        && version < KERNEL_MIN
    {
        return Err(format!(
            "kernel {release} is older than {}.{}, which the io_uring driver needs",
            KERNEL_MIN.0, KERNEL_MIN.1
        ));
    }
    let ring = Ring::new(
        config.uring_entries as u32,
        config.uring_buffers,
        config.uring_buffer_size,
    )
    .map_err(|e| explain(&e))?;
    ring.enable().map_err(|e| explain(&e))?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| explain(&e))?;
    for (name, _, code) in NEEDED {
        if !probe.is_supported(code) {
            return Err(format!("the kernel lacks the io_uring {name} operation"));
        }
    }
    Ok(())
}

/// Every operation the driver posts (`io.rs`): the name the refusal gives,
/// the `opcode` type that builds it, and its code.
const NEEDED: [(&str, &str, u8); 6] = [
    ("accept", "AcceptMulti", opcode::AcceptMulti::CODE),
    ("recv", "Recv", opcode::Recv::CODE),
    ("send", "Send", opcode::Send::CODE),
    ("read", "Read", opcode::Read::CODE),
    ("async_cancel", "AsyncCancel", opcode::AsyncCancel::CODE),
    // Upstream connections (`holdfast proxy`).
    ("connect", "Connect", opcode::Connect::CODE),
];

/// The errno of a failed set-up, with its usual cause.
fn explain(error: &std::io::Error) -> String {
    let cause = match error.raw_os_error() {
        Some(libc::ENOSYS) => {
            "the kernel has no io_uring, or a seccomp profile (a container default) blocks it"
        }
        Some(libc::EPERM) => {
            "io_uring is disabled (sysctl kernel.io_uring_disabled) or blocked by a seccomp \
             or LSM policy"
        }
        Some(libc::EINVAL) => "the kernel is too old for the ring's flags (needs 6.1)",
        Some(libc::ENOMEM) => "the locked-memory limit is too low (ulimit -l) on this kernel",
        _ => "unexpected error",
    };
    format!("{error}: {cause}")
}

/// `(major, minor)` of a kernel release such as `6.18.44-fc`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_the_driver_posts_is_probed() {
        let source = include_str!("io.rs");
        let posted: std::collections::BTreeSet<&str> = source
            .split("opcode::")
            .skip(1)
            .filter_map(|rest| rest.split_once("::new").map(|(name, _)| name))
            .filter(|name| name.chars().all(char::is_alphanumeric))
            .collect();
        assert!(posted.contains("Send"), "found {posted:?}");
        for name in posted {
            assert!(
                NEEDED.iter().any(|&(_, built_by, _)| built_by == name),
                "io.rs posts {name}, which the probe does not check"
            );
        }
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(kernel_version("6.18.44-fc-v857"), Some((6, 18)));
        assert_eq!(kernel_version("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(kernel_version("garbage"), None);
        assert!(kernel_version("5.19.0").unwrap() < KERNEL_MIN);
        assert!(kernel_version("6.1.0").unwrap() >= KERNEL_MIN);
    }

    #[test]
    fn causes_name_the_usual_suspects() {
        let eperm = explain(&std::io::Error::from_raw_os_error(libc::EPERM));
        assert!(eperm.contains("kernel.io_uring_disabled"), "{eperm}");
        let enosys = explain(&std::io::Error::from_raw_os_error(libc::ENOSYS));
        assert!(enosys.contains("seccomp"), "{enosys}");
    }
}
