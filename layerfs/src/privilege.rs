//! What this process may do: root in the initial user namespace, or not.
//!
//! The differences between running as root and rootless are injected into apply, diff and mount
//! as options built here, not tested for all over the code.

/// Whether this process is in the initial user namespace (its uid map is the identity map of
/// the whole range).
pub fn in_initial_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields == ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

/// Whether this process can create device nodes and set any owner: it is root in the initial
/// user namespace.
pub fn is_privileged() -> bool {
    nix::unistd::geteuid().is_root() && in_initial_user_namespace()
}
