//! [`ImageBuilder`]: the only way to make a new image (images themselves never change).
//! A builder starts empty or from a base image, gathers layers, history and config, and
//! [`Store::commit`](crate::Store::commit) writes it as config and manifest blobs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use oci_spec::image::{
    Arch, Config, ConfigBuilder, History, HistoryBuilder, ImageConfiguration,
    ImageConfigurationBuilder, Os, RootFs,
};

use crate::image::Image;
use crate::layer::Layer;

/// Builds a new image config from scratch or on top of a base [`Image`].
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    layers: Vec<Layer>,
    history: Vec<History>,
    env: Vec<String>,
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    exposed_ports: BTreeSet<String>,
    volumes: BTreeSet<String>,
    labels: BTreeMap<String, String>,
    stop_signal: Option<String>,
    created: Option<String>,
    author: Option<String>,
    docker: BTreeMap<String, serde_json::Value>,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageBuilder {
    /// An empty image (like `FROM scratch`).
    pub fn new() -> ImageBuilder {
        ImageBuilder {
            layers: Vec::new(),
            history: Vec::new(),
            env: Vec::new(),
            cmd: None,
            entrypoint: None,
            working_dir: None,
            user: None,
            exposed_ports: BTreeSet::new(),
            volumes: BTreeSet::new(),
            labels: BTreeMap::new(),
            stop_signal: None,
            created: None,
            author: None,
            docker: BTreeMap::new(),
        }
    }

    /// Start from `base`: its layers, history and config (like `FROM base`).
    pub fn from_image(base: &Image) -> ImageBuilder {
        let mut b = ImageBuilder::new();
        b.layers = base.layers().to_vec();
        b.history = match base.config().history() {
            Some(h) => h.clone(),
            None => base.layers().iter().map(|_| History::default()).collect(),
        };
        b.env = base.env().to_vec();
        b.cmd = Some(base.cmd().to_vec()).filter(|c| !c.is_empty());
        b.entrypoint = Some(base.entrypoint().to_vec()).filter(|c| !c.is_empty());
        b.working_dir = base.working_dir().map(str::to_owned);
        b.user = base.user().map(str::to_owned);
        b.exposed_ports = base.exposed_ports().into_iter().collect();
        b.volumes = base.volumes().into_iter().collect();
        b.labels = base.labels().into_iter().collect();
        b.stop_signal = base.stop_signal().map(str::to_owned);
        b.docker = base.docker_fields().clone();
        b
    }

    /// Set (`Some`) or remove (`None`) one of Docker's run-config fields that OCI has no
    /// place for ([`DOCKER_FIELDS`](crate::image::DOCKER_FIELDS): `Healthcheck`, `OnBuild`,
    /// `Shell`); other keys are ignored.
    pub fn docker_field(mut self, key: &str, value: Option<serde_json::Value>) -> Self {
        if !crate::image::DOCKER_FIELDS.contains(&key) {
            return self;
        }
        match value {
            Some(v) if !v.is_null() => {
                self.docker.insert(key.to_owned(), v);
            }
            _ => {
                self.docker.remove(key);
            }
        }
        self
    }

    /// The Docker run-config fields set so far.
    pub fn docker_fields(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.docker
    }

    /// Add a layer made by a step described by `created_by`.
    pub fn layer(mut self, layer: Layer, created_by: impl Into<String>) -> Self {
        self.layers.push(layer);
        let h = self.history_entry(created_by.into(), false);
        self.history.push(h);
        self
    }

    /// Record a step that changed only the config (an empty-layer history entry).
    pub fn step(mut self, created_by: impl Into<String>) -> Self {
        let h = self.history_entry(created_by.into(), true);
        self.history.push(h);
        self
    }

    /// Set the comment of the last history entry (the step just added), as `docker import`
    /// records `Imported from ...`. Does nothing before the first step.
    pub fn comment(mut self, comment: impl Into<String>) -> Self {
        if let Some(h) = self.history.last_mut() {
            h.set_comment(Some(comment.into()));
        }
        self
    }

    fn history_entry(&self, created_by: String, empty: bool) -> History {
        let mut b = HistoryBuilder::default()
            .created(self.created.clone().unwrap_or_else(now_rfc3339))
            .created_by(created_by);
        if empty {
            b = b.empty_layer(true);
        }
        b.build().unwrap_or_default()
    }

    /// Set (or replace) an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        let prefix = format!("{key}=");
        self.env.retain(|kv| !kv.starts_with(&prefix));
        self.env.push(format!("{key}={value}"));
        self
    }
    /// Set the default command.
    pub fn cmd<S: Into<String>>(mut self, cmd: impl IntoIterator<Item = S>) -> Self {
        self.cmd = Some(cmd.into_iter().map(Into::into).collect());
        self
    }
    /// Set the entrypoint.
    pub fn entrypoint<S: Into<String>>(mut self, ep: impl IntoIterator<Item = S>) -> Self {
        self.entrypoint = Some(ep.into_iter().map(Into::into).collect());
        self
    }
    /// Set the working directory.
    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }
    /// Set the user (`name`, `uid`, `uid:gid`).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }
    /// Expose a port (`80/tcp`; a bare number means tcp).
    pub fn expose(mut self, port: impl Into<String>) -> Self {
        let p = port.into();
        self.exposed_ports.insert(if p.contains('/') {
            p
        } else {
            format!("{p}/tcp")
        });
        self
    }
    /// Declare a volume.
    pub fn volume(mut self, path: impl Into<String>) -> Self {
        self.volumes.insert(path.into());
        self
    }
    /// Set a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
    /// Set the stop signal (`SIGTERM`).
    pub fn stop_signal(mut self, signal: impl Into<String>) -> Self {
        self.stop_signal = Some(signal.into());
        self
    }
    /// Fix the creation time (RFC 3339) of the image and of steps added after this call;
    /// by default the current time. A fixed time makes builds reproducible.
    pub fn created(mut self, rfc3339: impl Into<String>) -> Self {
        self.created = Some(rfc3339.into());
        self
    }
    /// Set the author.
    pub fn author(mut self, author: impl Into<String>) -> Self {
        self.author = Some(author.into());
        self
    }

    /// The layers so far, bottom first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The config document and the layers for the manifest.
    pub(crate) fn into_config(self) -> (ImageConfiguration, Vec<Layer>) {
        let mut run = ConfigBuilder::default();
        if !self.env.is_empty() {
            run = run.env(self.env);
        }
        if let Some(cmd) = self.cmd {
            run = run.cmd(cmd);
        }
        if let Some(ep) = self.entrypoint {
            run = run.entrypoint(ep);
        }
        if let Some(wd) = self.working_dir {
            run = run.working_dir(wd);
        }
        if let Some(u) = self.user {
            run = run.user(u);
        }
        if !self.exposed_ports.is_empty() {
            run = run.exposed_ports(self.exposed_ports.into_iter().collect::<Vec<_>>());
        }
        if !self.volumes.is_empty() {
            run = run.volumes(self.volumes.into_iter().collect::<Vec<_>>());
        }
        if !self.labels.is_empty() {
            run = run.labels(
                self.labels
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            );
        }
        if let Some(s) = self.stop_signal {
            run = run.stop_signal(s);
        }
        let run: Config = run.build().unwrap_or_default();
        let mut rootfs = RootFs::default();
        rootfs.set_diff_ids(self.layers.iter().map(|l| l.diff_id.to_string()).collect());
        let mut cfg = ImageConfigurationBuilder::default()
            .created(self.created.unwrap_or_else(now_rfc3339))
            .architecture(Arch::default())
            .os(Os::Linux)
            .config(run)
            .rootfs(rootfs)
            .history(self.history);
        if let Some(a) = self.author {
            cfg = cfg.author(a);
        }
        let cfg = cfg.build().unwrap_or_default();
        (cfg, self.layers)
    }
}

/// The current UTC time as RFC 3339 (`2024-05-01T12:00:00Z`).
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Seconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
