//! From an image's config and a builder's overrides to what the container's process runs:
//! the command line, the environment, the working directory, and the user and groups, resolved
//! by name in the image's own `/etc/passwd` and `/etc/group` (read through a
//! [`UnionView`], without mounting anything).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use molde_layerfs::view::UnionView;

/// The `PATH` a container gets when neither its image nor its builder sets one (Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why an image's config and a builder's overrides do not give a runnable process.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The user named is not in the image's `/etc/passwd`.
    #[error("user {name:?} is not in the image's /etc/passwd{}", if *passwd_found { "" } else { " (the image has no /etc/passwd)" })]
    UnknownUser {
        /// The name given.
        name: String,
        /// Whether the image has an `/etc/passwd` at all.
        passwd_found: bool,
    },
    /// The group named is not in the image's `/etc/group`.
    #[error("group {name:?} is not in the image's /etc/group{}", if *group_found { "" } else { " (the image has no /etc/group)" })]
    UnknownGroup {
        /// The name given.
        name: String,
        /// Whether the image has an `/etc/group` at all.
        group_found: bool,
    },
    /// A user or group spec is malformed (empty, too many colons).
    #[error("invalid user spec {0:?}: expected user, uid, user:group or uid:gid")]
    BadUserSpec(String),
    /// Reading `/etc/passwd` or `/etc/group` of the image failed.
    #[error("reading {path} in the image: {source}")]
    Read {
        /// The path in the image.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Neither the builder nor the image gives a command.
    #[error("no command: the image has no entrypoint or cmd and none was given")]
    NoCommand,
    /// The working directory is not absolute.
    #[error("working directory {0:?} is not an absolute path")]
    RelativeWorkdir(PathBuf),
}

/// Who the process runs as, inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// Supplementary group ids (from `/etc/group` memberships), sorted, without `gid`.
    pub groups: Vec<u32>,
    /// The home directory from `/etc/passwd`, if the user has an entry.
    pub home: Option<PathBuf>,
}

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The text of `path` in the view; `None` if the image does not have it.
fn read_text(view: &UnionView, path: &str) -> Result<Option<String>, ConfigError> {
    match view.read(Path::new(path)) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Read {
            path: PathBuf::from(path),
            source,
        }),
    }
}

/// Resolve a user spec (`name`, `uid`, `name:group`, `uid:gid`; `None` or empty means root)
/// against the image's `/etc/passwd` and `/etc/group`, read through `view`. An explicit
/// `group` overrides the spec's group part.
///
/// As Docker does: a numeric uid needs no passwd entry (its group is then 0 unless given); a
/// name must be in `/etc/passwd`, a group name in `/etc/group`; supplementary groups are the
/// groups that list the user as a member.
pub fn resolve_identity(
    view: &UnionView,
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Identity, ConfigError> {
    let spec = user.unwrap_or("").trim();
    let (user_part, spec_group) = match spec.split_once(':') {
        Some((u, g)) => {
            if g.contains(':') || u.is_empty() || g.is_empty() {
                return Err(ConfigError::BadUserSpec(spec.to_owned()));
            }
            (u, Some(g))
        }
        None => (spec, None),
    };
    let group_part = group.or(spec_group);
    let passwd_text = read_text(view, "/etc/passwd")?;
    let passwd = passwd_text.as_deref().map(parse_passwd).unwrap_or_default();
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd
            .iter()
            .find(|e| e.uid == uid)
            .cloned()
            .or(Some(PasswdEntry {
                name: String::new(),
                uid,
                gid: 0,
                home: String::new(),
            })),
        Err(_) => passwd.iter().find(|e| e.name == user_part).cloned(),
    };
    let Some(entry) = entry else {
        return Err(ConfigError::UnknownUser {
            name: user_part.to_owned(),
            passwd_found: passwd_text.is_some(),
        });
    };
    let group_text = read_text(view, "/etc/group")?;
    let groups = group_text.as_deref().map(parse_group).unwrap_or_default();
    let gid = match group_part {
        None => entry.gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                groups
                    .iter()
                    .find(|e| e.name == g)
                    .ok_or_else(|| ConfigError::UnknownGroup {
                        name: g.to_owned(),
                        group_found: group_text.is_some(),
                    })?
                    .gid
            }
        },
    };
    let mut extra: Vec<u32> = if entry.name.is_empty() {
        Vec::new()
    } else {
        groups
            .iter()
            .filter(|g| g.members.contains(&entry.name) && g.gid != gid)
            .map(|g| g.gid)
            .collect()
    };
    extra.sort_unstable();
    extra.dedup();
    Ok(Identity {
        uid: entry.uid,
        gid,
        groups: extra,
        home: Some(PathBuf::from(&entry.home)).filter(|h| !h.as_os_str().is_empty()),
    })
}

/// A builder's changes to the environment, in the order they were made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvOp {
    /// Set a variable.
    Set(OsString, OsString),
    /// Remove a variable.
    Remove(OsString),
    /// Drop everything so far, the image's environment included.
    Clear,
}

/// The process environment: the image's `KEY=value` entries, then the builder's changes; then
/// `PATH` (Docker's default) and `HOME` (from `/etc/passwd`, else `/`) when still unset.
pub fn merge_env(
    image_env: &[String],
    ops: &[EnvOp],
    home: Option<&Path>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let set = |env: &mut Vec<(OsString, OsString)>, k: OsString, v: OsString| match env
        .iter_mut()
        .find(|(key, _)| *key == k)
    {
        Some(slot) => slot.1 = v,
        None => env.push((k, v)),
    };
    for kv in image_env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        set(&mut env, k.into(), v.into());
    }
    for op in ops {
        match op {
            EnvOp::Set(k, v) => set(&mut env, k.clone(), v.clone()),
            EnvOp::Remove(k) => env.retain(|(key, _)| key != k),
            EnvOp::Clear => env.clear(),
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        let home = home.map_or_else(|| OsString::from("/"), |h| h.as_os_str().to_owned());
        env.push(("HOME".into(), home));
    }
    env
}

/// The directories of a `PATH` value, absolute ones only.
pub fn path_dirs(env: &[(OsString, OsString)]) -> Vec<PathBuf> {
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or_else(|| OsString::from(DEFAULT_PATH), |(_, v)| v.clone());
    path.as_bytes()
        .split(|b| *b == b':')
        .map(|d| PathBuf::from(OsStr::from_bytes(d)))
        .filter(|d| d.is_absolute())
        .collect()
}

/// The command line: `command` (with `args`) replaces the image's entrypoint and cmd; else an
/// `entrypoint` override replaces the image's (and drops its cmd, as Docker does), and `args`,
/// when given, replace the cmd.
pub fn argv(
    image_entrypoint: &[String],
    image_cmd: &[String],
    command: Option<&OsStr>,
    entrypoint: Option<&[OsString]>,
    args: Option<&[OsString]>,
) -> Result<Vec<OsString>, ConfigError> {
    let mut out: Vec<OsString> = Vec::new();
    if let Some(c) = command {
        out.push(c.to_owned());
        out.extend(args.unwrap_or(&[]).iter().cloned());
    } else {
        match entrypoint {
            Some(ep) => out.extend(ep.iter().cloned()),
            None => out.extend(image_entrypoint.iter().map(OsString::from)),
        }
        match (args, entrypoint) {
            (Some(a), _) => out.extend(a.iter().cloned()),
            (None, Some(_)) => {}
            (None, None) => out.extend(image_cmd.iter().map(OsString::from)),
        }
    }
    if out.is_empty() || out[0].is_empty() {
        return Err(ConfigError::NoCommand);
    }
    Ok(out)
}

/// The working directory: the builder's, else the image's, else `/`. Must be absolute.
pub fn workdir(image_workdir: Option<&str>, given: Option<&Path>) -> Result<PathBuf, ConfigError> {
    let dir = given
        .map(Path::to_path_buf)
        .or_else(|| image_workdir.filter(|w| !w.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/"));
    if !dir.is_absolute() {
        return Err(ConfigError::RelativeWorkdir(dir));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use molde_layerfs::OverlayXattr;
    use std::fs;

    fn view_with(passwd: Option<&str>, group: Option<&str>) -> (tempfile::TempDir, UnionView) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        if let Some(p) = passwd {
            fs::write(dir.path().join("etc/passwd"), p).unwrap();
        }
        if let Some(g) = group {
            fs::write(dir.path().join("etc/group"), g).unwrap();
        }
        let view = UnionView::new(vec![dir.path().to_owned()], None, OverlayXattr::User);
        (dir, view)
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          appuser:x:1000:1000::/home/appuser:/bin/sh\n\
                          # a comment\n\
                          svc:x:999:998::/:/bin/false\n";
    const GROUP: &str =
        "root:x:0:\napp:x:1000:\nwheel:x:10:appuser,svc\naudio:x:29:appuser\nsvcgrp:x:998:\n";

    #[test]
    fn user_by_name_resolves_uid_gid_home_and_groups() {
        let (_d, v) = view_with(Some(PASSWD), Some(GROUP));
        let id = resolve_identity(&v, Some("appuser"), None).unwrap();
        assert_eq!(
            id,
            Identity {
                uid: 1000,
                gid: 1000,
                groups: vec![10, 29],
                home: Some("/home/appuser".into())
            }
        );
    }

    #[test]
    fn user_and_group_names_and_numbers() {
        let (_d, v) = view_with(Some(PASSWD), Some(GROUP));
        let id = resolve_identity(&v, Some("appuser:wheel"), None).unwrap();
        assert_eq!((id.uid, id.gid, id.groups), (1000, 10, vec![29]));
        let id = resolve_identity(&v, Some("4242:77"), None).unwrap();
        assert_eq!((id.uid, id.gid, id.home), (4242, 77, None));
        let id = resolve_identity(&v, Some("999"), None).unwrap();
        assert_eq!((id.uid, id.gid), (999, 998));
        let id = resolve_identity(&v, None, Some("audio")).unwrap();
        assert_eq!((id.uid, id.gid), (0, 29));
        let id = resolve_identity(&v, None, None).unwrap();
        assert_eq!((id.uid, id.gid, id.home), (0, 0, Some("/root".into())));
    }

    #[test]
    fn unknown_names_are_errors() {
        let (_d, v) = view_with(Some(PASSWD), Some(GROUP));
        let e = resolve_identity(&v, Some("nobody"), None).unwrap_err();
        assert!(
            matches!(&e, ConfigError::UnknownUser { name, passwd_found: true } if name == "nobody"),
            "{e}"
        );
        let e = resolve_identity(&v, Some("appuser:nogroup"), None).unwrap_err();
        assert!(
            matches!(&e, ConfigError::UnknownGroup { name, .. } if name == "nogroup"),
            "{e}"
        );
        let e = resolve_identity(&v, Some("a:b:c"), None).unwrap_err();
        assert!(matches!(e, ConfigError::BadUserSpec(_)));
        let (_d, v) = view_with(None, None);
        let e = resolve_identity(&v, Some("appuser"), None).unwrap_err();
        assert!(e.to_string().contains("has no /etc/passwd"), "{e}");
        // Root needs no passwd.
        assert_eq!(resolve_identity(&v, None, None).unwrap().uid, 0);
    }

    #[test]
    fn env_merge_order_and_defaults() {
        let image = vec!["A=1".to_string(), "B=2".into(), "PATH=/bin".into()];
        let env = merge_env(
            &image,
            &[
                EnvOp::Set("B".into(), "3".into()),
                EnvOp::Remove("A".into()),
                EnvOp::Set("C".into(), "x=y".into()),
            ],
            Some(Path::new("/home/u")),
        );
        let s: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string_lossy().into(), v.to_string_lossy().into()))
            .collect();
        assert_eq!(
            s,
            vec![
                ("B".into(), "3".into()),
                ("PATH".into(), "/bin".into()),
                ("C".into(), "x=y".into()),
                ("HOME".into(), "/home/u".into())
            ]
        );
        let env = merge_env(&image, &[EnvOp::Clear], None);
        assert_eq!(env.len(), 2);
        assert_eq!(env[0], ("PATH".into(), DEFAULT_PATH.into()));
        assert_eq!(env[1], ("HOME".into(), "/".into()));
        assert_eq!(path_dirs(&env)[0], PathBuf::from("/usr/local/sbin"));
    }

    #[test]
    fn argv_rules() {
        let ep = vec!["/ep".to_string()];
        let cmd = vec!["c1".to_string(), "c2".into()];
        let a: Vec<OsString> = vec!["x".into()];
        assert_eq!(
            argv(&ep, &cmd, None, None, None).unwrap(),
            ["/ep", "c1", "c2"]
        );
        assert_eq!(argv(&ep, &cmd, None, None, Some(&a)).unwrap(), ["/ep", "x"]);
        let ep2: Vec<OsString> = vec!["/other".into()];
        assert_eq!(argv(&ep, &cmd, None, Some(&ep2), None).unwrap(), ["/other"]);
        assert_eq!(
            argv(&ep, &cmd, Some(OsStr::new("/bin/sh")), None, Some(&a)).unwrap(),
            ["/bin/sh", "x"]
        );
        assert!(matches!(
            argv(&[], &[], None, None, None),
            Err(ConfigError::NoCommand)
        ));
        assert_eq!(workdir(Some("/srv"), None).unwrap(), PathBuf::from("/srv"));
        assert_eq!(workdir(Some(""), None).unwrap(), PathBuf::from("/"));
        assert!(workdir(None, Some(Path::new("rel"))).is_err());
    }
}
