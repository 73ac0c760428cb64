//! The config of a build in progress, as the cache key's parent state sees it, and helpers
//! that look inside an image (its union view, its users).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use molde_image::{Image, ImageBuilder, Store, StoreError};
use molde_layerfs::OverlayXattr;
use molde_layerfs::view::UnionView;
use serde::Serialize;

use super::StepError;
use super::step::{Healthcheck, default_shell};

/// The config so far.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ConfigState {
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub exposed: BTreeSet<String>,
    pub volumes: BTreeSet<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    pub shell: Option<Vec<String>>,
    pub healthcheck: Option<serde_json::Value>,
    pub onbuild: Vec<String>,
    pub author: Option<String>,
}

impl ConfigState {
    pub fn of(image: &Image) -> ConfigState {
        let shell = image
            .docker_field("Shell")
            .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok());
        ConfigState {
            env: image.env().to_vec(),
            cmd: Some(image.cmd().to_vec()).filter(|c| !c.is_empty()),
            entrypoint: Some(image.entrypoint().to_vec()).filter(|c| !c.is_empty()),
            workdir: image.working_dir().map(str::to_owned),
            user: image.user().map(str::to_owned),
            exposed: image.exposed_ports().into_iter().collect(),
            volumes: image.volumes().into_iter().collect(),
            labels: image.labels().into_iter().collect(),
            stop_signal: image.stop_signal().map(str::to_owned),
            shell,
            healthcheck: image.docker_field("Healthcheck").cloned(),
            // Triggers run in the build that starts FROM the image; they do not pass on.
            onbuild: Vec::new(),
            author: image.config().author().clone(),
        }
    }

    pub fn set_env(&mut self, k: &str, v: &str) {
        let prefix = format!("{k}=");
        self.env.retain(|kv| !kv.starts_with(&prefix));
        self.env.push(format!("{k}={v}"));
    }

    /// The shell of shell-form steps.
    pub fn shell(&self) -> Vec<String> {
        self.shell.clone().unwrap_or_else(default_shell)
    }

    /// `path` made absolute against the working directory.
    pub fn absolute(&self, path: &str) -> PathBuf {
        if path.starts_with('/') {
            PathBuf::from(path)
        } else {
            Path::new(self.workdir.as_deref().unwrap_or("/")).join(path)
        }
    }

    /// Put the config on an image builder.
    pub fn apply(&self, mut b: ImageBuilder) -> ImageBuilder {
        for kv in &self.env {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            b = b.env(k, v);
        }
        if let Some(cmd) = &self.cmd {
            b = b.cmd(cmd.clone());
        }
        if let Some(ep) = &self.entrypoint {
            b = b.entrypoint(ep.clone());
        }
        if let Some(w) = &self.workdir {
            b = b.working_dir(w.clone());
        }
        if let Some(u) = &self.user {
            b = b.user(u.clone());
        }
        for p in &self.exposed {
            b = b.expose(p.clone());
        }
        for v in &self.volumes {
            b = b.volume(v.clone());
        }
        for (k, v) in &self.labels {
            b = b.label(k.clone(), v.clone());
        }
        if let Some(s) = &self.stop_signal {
            b = b.stop_signal(s.clone());
        }
        if let Some(a) = &self.author {
            b = b.author(a.clone());
        }
        let shell = self.shell.as_ref().map(|s| serde_json::json!(s));
        let onbuild = Some(serde_json::json!(self.onbuild)).filter(|_| !self.onbuild.is_empty());
        b.docker_field("Shell", shell)
            .docker_field("Healthcheck", self.healthcheck.clone())
            .docker_field("OnBuild", onbuild)
    }
}

/// A health check as Docker's config stores it.
pub(crate) fn healthcheck_json(h: &Healthcheck) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("Test".into(), serde_json::json!(h.test));
    for (k, v) in [
        ("Interval", h.interval),
        ("Timeout", h.timeout),
        ("StartPeriod", h.start_period),
        ("StartInterval", h.start_interval),
        ("Retries", h.retries),
    ] {
        if v != 0 {
            m.insert(k.into(), serde_json::json!(v));
        }
    }
    serde_json::Value::Object(m)
}

impl Healthcheck {
    /// The health check of `image` (Docker's `Healthcheck` config field), if it has one.
    pub fn of(image: &Image) -> Option<Healthcheck> {
        let v = image.docker_field("Healthcheck")?;
        let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        Some(Healthcheck {
            test: serde_json::from_value(v.get("Test")?.clone()).ok()?,
            interval: n("Interval"),
            timeout: n("Timeout"),
            start_period: n("StartPeriod"),
            start_interval: n("StartInterval"),
            retries: n("Retries"),
        })
    }
}

/// The `ONBUILD` triggers `image` stores, in order.
pub fn onbuild_triggers(image: &Image) -> Vec<String> {
    image
        .docker_field("OnBuild")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// Remove an image a build made from the index, unless something tagged it (the same image
/// may be a tagged result of an earlier build: removing by digest would untag it too).
pub(crate) fn remove_untagged(store: &Store, image: &Image) {
    match store.tags_of(image) {
        Ok(tags) if tags.is_empty() => {
            if let Err(e) = store.remove(&image.manifest_digest().to_string()) {
                tracing::debug!(
                    "removing the build's image {}: {e}",
                    image.manifest_digest()
                );
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!("looking at the tags of {}: {e}", image.manifest_digest()),
    }
}

/// The union view of an image's layers (unpacked first if needed).
pub(crate) fn view_of(store: &Store, image: &Image) -> Result<UnionView, StoreError> {
    let unpacked = molde_image::unpack::unpack(store, image)?;
    let lowers: Vec<PathBuf> = unpacked.into_iter().rev().map(|u| u.path).collect();
    Ok(UnionView::new(
        lowers,
        None,
        OverlayXattr::for_current_process(),
    ))
}

/// The uid and gid of a `--chown` spec: names looked up in the image; without a group, the
/// gid is the uid's number (as Docker does).
pub(crate) fn resolve_owner(view: &UnionView, spec: &str) -> Result<(u32, u32), StepError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid = match user.parse::<u32>() {
        Ok(n) => n,
        Err(_) => crate::config::resolve_identity(view, Some(user), Some("0"))?.uid,
    };
    let gid = match group {
        None => uid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => crate::config::resolve_identity(view, Some("0"), Some(g))?.gid,
        },
    };
    Ok((uid, gid))
}

pub(crate) fn check_user_spec(spec: &str) -> Result<(), String> {
    let bad = || format!("invalid user {spec:?}: expected user, uid, user:group or uid:gid");
    match spec.split_once(':') {
        _ if spec.is_empty() => Err(bad()),
        Some((u, g)) if u.is_empty() || g.is_empty() || g.contains(':') => Err(bad()),
        _ => Ok(()),
    }
}
