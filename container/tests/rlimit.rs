//! rlimits for real: what [`effective`] returns can be set by a child process, also where the
//! raw request cannot (no CAP_SYS_RESOURCE).

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;

use molde_container::rlimit::{Resource, Rlimit, effective, may_raise_hard_limits};
use nix::sys::resource::{getrlimit, setrlimit};

/// Runs `sh -c 'ulimit -Hn; ulimit -Sn'` with `limits` set by setrlimit between fork and exec;
/// `Err` with the errno if setrlimit fails.
fn run_with(limits: Vec<Rlimit>) -> std::io::Result<String> {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ulimit -Hn; ulimit -Sn"]);
    // SAFETY: the closure only calls setrlimit(2), which is async-signal-safe, and allocates
    // nothing.
    unsafe {
        cmd.pre_exec(move || {
            for l in &limits {
                setrlimit(l.resource, l.soft, l.hard).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    let out = cmd.output()?;
    assert!(out.status.success());
    Ok(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn effective_limits_can_always_be_set() {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if !common::require(
        hard != u64::MAX,
        "RLIMIT_NOFILE's hard limit is unlimited; there is nothing to raise above",
    ) {
        return;
    }
    let request = Rlimit {
        resource: Resource::RLIMIT_NOFILE,
        soft: hard + 10,
        hard: hard + 10,
    };
    let got = effective(&[request], false);
    if may_raise_hard_limits() {
        assert_eq!(got, vec![request]);
        assert_eq!(
            run_with(got).unwrap(),
            format!("{}\n{}\n", hard + 10, hard + 10)
        );
    } else {
        // As on this project's machine: the bounding set lacks CAP_SYS_RESOURCE.
        let raw = run_with(vec![request]).unwrap_err();
        assert_eq!(raw.raw_os_error(), Some(libc::EPERM), "{raw}");
        assert_eq!(
            got,
            vec![Rlimit {
                resource: Resource::RLIMIT_NOFILE,
                soft: hard,
                hard,
            }]
        );
        assert_eq!(run_with(got).unwrap(), format!("{hard}\n{hard}\n"));
    }
    // Lowering passes unchanged and is enforced.
    let lower = Rlimit {
        resource: Resource::RLIMIT_NOFILE,
        soft: soft.min(64),
        hard: soft.min(128),
    };
    let got = effective(&[lower], false);
    assert_eq!(got, vec![lower]);
    assert_eq!(
        run_with(got).unwrap(),
        format!("{}\n{}\n", lower.hard, lower.soft)
    );
    // For a child in a new user namespace, hard limits never rise, capability or not.
    assert_eq!(
        effective(&[request], true),
        vec![Rlimit {
            resource: Resource::RLIMIT_NOFILE,
            soft: hard,
            hard,
        }]
    );
    assert_eq!(effective(&[lower], true), vec![lower]);
}

#[test]
fn this_host_lacks_cap_sys_resource_as_status_says() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let mask = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
            .unwrap()
    };
    let expected = mask("CapEff:") & mask("CapBnd:") & (1 << 24) != 0;
    assert_eq!(may_raise_hard_limits(), expected);
}
