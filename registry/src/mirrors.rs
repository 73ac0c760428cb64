//! Where to pull a reference from, as `registries.conf` (containers-registries.conf(5),
//! version 2, the file podman, skopeo and buildah read) says: a short name (`alpine`,
//! `team/app`) is looked for in each of `unqualified-search-registries` in turn (docker.io
//! when the list is empty or absent, as Docker does), and a `[[registry]]` whose `prefix` (or
//! `location`) matches the reference sends the pull to its `[[registry.mirror]]`s first, then
//! to its own `location`. A registry marked `blocked` is refused.
//!
//! ```toml
//! unqualified-search-registries = ["docker.io"]
//!
//! [[registry]]
//! location = "docker.io"
//!
//! [[registry.mirror]]
//! location = "mirror.example:5000/dockerhub"
//! insecure = true
//! ```
//!
//! Files: `$CONTAINERS_REGISTRIES_CONF` if set, else `$HOME/.config/containers/registries.conf`
//! if it exists, else `/etc/containers/registries.conf`; then the drop-ins beside it
//! (`registries.conf.d/*.conf`, in name order, later files adding search registries and
//! replacing the entries of the same prefix).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::RegistryError;

#[derive(Debug, Default, Deserialize)]
struct ConfFile {
    #[serde(rename = "unqualified-search-registries")]
    unqualified_search_registries: Option<Vec<String>>,
    #[serde(default)]
    registry: Vec<ConfRegistry>,
}

#[derive(Debug, Deserialize)]
struct ConfRegistry {
    prefix: Option<String>,
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default, rename = "mirror-by-digest-only")]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<ConfMirror>,
}

#[derive(Debug, Deserialize)]
struct ConfMirror {
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(rename = "pull-from-mirror")]
    pull_from_mirror: Option<String>,
}

/// One `[[registry]]` entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    prefix: String,
    location: String,
    insecure: bool,
    blocked: bool,
    mirrors: Vec<Mirror>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Mirror {
    location: String,
    insecure: bool,
    /// `all`, `digest-only` or `tag-only`.
    pull_from: String,
}

/// The rules of one or more `registries.conf` files (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistriesConf {
    search: Vec<String>,
    entries: Vec<Entry>,
}

/// One place to try a pull from: a reference (`host[:port]/repo[:tag][@digest]`) and
/// whether plain HTTP may be spoken to its registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The reference the image is known by there (a short name qualified with the search
    /// registry it was looked for in; before any mirror's rewriting): what it is tagged as.
    pub name: String,
    /// The reference to pull, on the registry to pull it from.
    pub reference: String,
    /// Whether `registries.conf` allows plain HTTP (and unverified TLS) for it.
    pub insecure: bool,
    /// Whether this is a mirror (its failure falls back to the next source).
    pub mirror: bool,
}

impl RegistriesConf {
    /// The rules of the files the containers tools read (see the module documentation);
    /// none (Docker's behaviour) when there is no such file.
    pub fn load_default() -> Result<RegistriesConf, RegistryError> {
        let main = match std::env::var_os("CONTAINERS_REGISTRIES_CONF") {
            Some(p) => PathBuf::from(p),
            None => {
                let user = std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".config/containers/registries.conf"));
                match user.filter(|p| p.is_file()) {
                    Some(p) => p,
                    None => PathBuf::from("/etc/containers/registries.conf"),
                }
            }
        };
        let mut conf = RegistriesConf::default();
        if main.is_file() {
            conf.add_file(&main)?;
        }
        let dropins = main.with_extension("conf.d");
        if let Ok(rd) = std::fs::read_dir(&dropins) {
            let mut files: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                .collect();
            files.sort();
            for f in files {
                conf.add_file(&f)?;
            }
        }
        Ok(conf)
    }

    /// The rules of one file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<RegistriesConf, RegistryError> {
        let mut conf = RegistriesConf::default();
        conf.add_file(path.as_ref())?;
        Ok(conf)
    }

    /// The rules of a file's text (`what` names it in errors).
    pub fn parse(what: &str, text: &str) -> Result<RegistriesConf, RegistryError> {
        let mut conf = RegistriesConf::default();
        conf.add(what, text)?;
        Ok(conf)
    }

    fn add_file(&mut self, path: &Path) -> Result<(), RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|e| RegistryError::Config {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        self.add(&path.display().to_string(), &text)
    }

    fn add(&mut self, what: &str, text: &str) -> Result<(), RegistryError> {
        let bad = |reason: String| RegistryError::Config {
            path: what.to_owned(),
            reason,
        };
        let file: ConfFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if let Some(search) = file.unqualified_search_registries {
            self.search = search;
        }
        for r in file.registry {
            let Some(prefix) = r.prefix.or_else(|| r.location.clone()) else {
                return Err(bad("a [[registry]] has neither prefix nor location".into()));
            };
            let prefix = normalise(&prefix);
            let location = normalise(r.location.as_deref().unwrap_or(&prefix));
            let mut mirrors = Vec::new();
            for m in r.mirror {
                let pull_from = match m.pull_from_mirror.as_deref() {
                    None | Some("all") if r.mirror_by_digest_only => "digest-only",
                    None | Some("all") => "all",
                    Some(p @ ("digest-only" | "tag-only")) => p,
                    Some(other) => {
                        return Err(bad(format!(
                            "pull-from-mirror = {other:?}: expected all, digest-only or tag-only"
                        )));
                    }
                };
                mirrors.push(Mirror {
                    location: normalise(&m.location),
                    insecure: m.insecure,
                    pull_from: pull_from.to_owned(),
                });
            }
            self.entries.retain(|e| e.prefix != prefix);
            self.entries.push(Entry {
                prefix,
                location,
                insecure: r.insecure,
                blocked: r.blocked,
                mirrors,
            });
        }
        Ok(())
    }

    /// Where to pull `reference` (as the user wrote it) from, in order: for a short name
    /// each search registry, and for each such name the mirrors of its `[[registry]]`, then
    /// its location.
    pub fn sources(&self, reference: &str) -> Result<Vec<Source>, RegistryError> {
        let names: Vec<String> = if is_short(reference) && !self.search.is_empty() {
            self.search.iter().map(|r| qualify(r, reference)).collect()
        } else {
            // Docker's rule: a short name is on docker.io.
            vec![reference.to_owned()]
        };
        let mut out = Vec::new();
        for name in names {
            let parsed = molde_image::Reference::parse(&name)?;
            let (path, suffix) = split(&parsed);
            let Some(entry) = self.entry_for(&path) else {
                out.push(Source {
                    reference: name.clone(),
                    name,
                    insecure: false,
                    mirror: false,
                });
                continue;
            };
            if entry.blocked {
                return Err(RegistryError::Blocked {
                    reference: reference.to_owned(),
                    registry: entry.prefix.clone(),
                });
            }
            let rest = &path[entry.prefix.len()..];
            let by_digest = parsed.digest().is_some();
            for m in &entry.mirrors {
                let wanted = match m.pull_from.as_str() {
                    "digest-only" => by_digest,
                    "tag-only" => !by_digest,
                    _ => true,
                };
                if wanted {
                    out.push(Source {
                        name: name.clone(),
                        reference: format!("{}{rest}{suffix}", m.location),
                        insecure: m.insecure,
                        mirror: true,
                    });
                }
            }
            out.push(Source {
                name: name.clone(),
                reference: format!("{}{rest}{suffix}", entry.location),
                insecure: entry.insecure,
                mirror: false,
            });
        }
        Ok(out)
    }

    /// The entry with the longest prefix matching `path` (`host/repo`) at a component
    /// boundary.
    fn entry_for(&self, path: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .filter(|e| {
                path == e.prefix
                    || path
                        .strip_prefix(e.prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|e| e.prefix.len())
    }
}

/// `index.docker.io` and `registry-1.docker.io` are docker.io; no trailing slash.
fn normalise(s: &str) -> String {
    let s = s.trim().trim_end_matches('/');
    for alias in ["index.docker.io", "registry-1.docker.io"] {
        if let Some(rest) = s.strip_prefix(alias)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return format!("docker.io{rest}");
        }
    }
    s.to_owned()
}

/// A name without a registry: its first component has no `.` or `:` and is not
/// `localhost`.
fn is_short(reference: &str) -> bool {
    match reference.split_once('/') {
        None => true,
        Some((first, _)) => !(first.contains('.') || first.contains(':') || first == "localhost"),
    }
}

/// A short name on registry `registry` (`library/` added on docker.io for one component).
fn qualify(registry: &str, name: &str) -> String {
    let registry = normalise(registry);
    let repo = name.split(['@', ':']).next().unwrap_or(name);
    if registry == "docker.io" && !repo.contains('/') {
        format!("docker.io/library/{name}")
    } else {
        format!("{registry}/{name}")
    }
}

/// `host/repo` and the `:tag` / `@digest` that follows it.
fn split(reference: &molde_image::Reference) -> (String, String) {
    let path = normalise(&format!(
        "{}/{}",
        reference.registry(),
        reference.repository()
    ));
    let mut suffix = String::new();
    if let Some(t) = reference.tag() {
        suffix.push(':');
        suffix.push_str(t);
    }
    if let Some(d) = reference.digest() {
        suffix.push('@');
        suffix.push_str(&d.to_string());
    }
    (path, suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = r#"
unqualified-search-registries = ["quay.io", "docker.io"]

[[registry]]
location = "docker.io"

[[registry.mirror]]
location = "mirror.example:5000/hub"
insecure = true

[[registry.mirror]]
location = "pinned.example"
pull-from-mirror = "digest-only"

[[registry]]
prefix = "docker.io/team/secret"
location = "docker.io/team/secret"
blocked = true

[[registry]]
prefix = "example.com/old"
location = "example.com/new"
"#;

    fn refs(sources: Vec<Source>) -> Vec<String> {
        sources.into_iter().map(|s| s.reference).collect()
    }

    #[test]
    fn mirrors_come_first_with_the_prefix_rewritten() {
        let conf = RegistriesConf::parse("test", CONF).unwrap();
        let s = conf.sources("docker.io/library/alpine:3.19").unwrap();
        assert_eq!(
            refs(s.clone()),
            [
                "mirror.example:5000/hub/library/alpine:3.19",
                "docker.io/library/alpine:3.19"
            ]
        );
        assert!(s[0].insecure && s[0].mirror && !s[1].mirror);
        let digest = format!("alpine@sha256:{}", "a".repeat(64));
        let s = refs(
            conf.sources(&format!("index.docker.io/library/{digest}"))
                .unwrap(),
        );
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[1], format!("pinned.example/library/{digest}"));
        assert_eq!(
            refs(conf.sources("example.com/old/app:1").unwrap()),
            ["example.com/new/app:1"]
        );
        assert_eq!(
            refs(conf.sources("example.com/older/app:1").unwrap()),
            ["example.com/older/app:1"],
            "prefixes match whole components"
        );
    }

    #[test]
    fn short_names_are_searched_in_order() {
        let conf = RegistriesConf::parse("test", CONF).unwrap();
        assert_eq!(
            refs(conf.sources("alpine").unwrap()),
            [
                "quay.io/alpine",
                "mirror.example:5000/hub/library/alpine:latest",
                "docker.io/library/alpine:latest"
            ]
        );
        let none = RegistriesConf::default();
        assert_eq!(refs(none.sources("alpine").unwrap()), ["alpine"]);
    }

    #[test]
    fn blocked_registries_and_bad_files_are_typed_errors() {
        let conf = RegistriesConf::parse("test", CONF).unwrap();
        let e = conf.sources("docker.io/team/secret/x:1").unwrap_err();
        assert!(matches!(e, RegistryError::Blocked { .. }), "{e}");
        for bad in [
            "unqualified-search-registries = 3",
            "[[registry]]\ninsecure = true",
            "[[registry]]\nlocation = \"a.io\"\n[[registry.mirror]]\nlocation = \"b.io\"\npull-from-mirror = \"sometimes\"",
        ] {
            let e = RegistriesConf::parse("bad.conf", bad).unwrap_err();
            assert!(matches!(e, RegistryError::Config { .. }), "{e}");
            assert!(e.to_string().contains("bad.conf"), "{e}");
        }
    }
}
