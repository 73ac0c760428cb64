//! A `RUN` step: a container of the current state, its mounts (`cache` directories kept in
//! the store, `bind` of the context or a stage, `tmpfs`, `secret` files) present only while it
//! runs, and its writable layer made a layer. Mount points the image did not have are removed
//! from the writable layer before the diff, so no mount leaves a trace in the image.

use std::fs::{self, File};
use std::io::{self, BufReader, Seek, SeekFrom};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};

use molde_image::Layer;
use molde_image::lock::{FileLock, LockKind};
use molde_layerfs::diff::DiffOptions;
use molde_layerfs::view::UnionView;
use molde_layerfs::{Digest, OverlayXattr};

use super::exec::Executor;
use super::state::view_of;
use super::step::{CopyFrom, Run, RunCommand, RunMount, RunNetwork, Sharing};
use super::{StepError, copy};
use crate::container::{Container, Status};
use crate::launch::Network;
use crate::{ContainerBuilder, Stdio};

/// What a `RUN`'s mounts hold on to until it ends: locks, temporary copies.
#[derive(Default)]
struct Held {
    locks: Vec<FileLock>,
    dirs: Vec<tempfile::TempDir>,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StepError + 'a {
    move |source| StepError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

impl Executor<'_> {
    /// The part of a `RUN`'s cache key its mounts make: each mount's description and, for a
    /// bind of the context, the content of what it binds (a secret's content never); then
    /// its Landlock ruleset, if any.
    pub(super) fn mounts_key(&self, r: &Run) -> Result<String, StepError> {
        let mut out = String::new();
        if let Some(l) = &r.landlock {
            out += &format!(
                "landlock(ro={:?},rw={:?}) ",
                l.read_only_paths(),
                l.read_write_paths()
            );
        }
        for m in &r.mounts {
            out += &m.describe();
            match m {
                RunMount::Bind {
                    source, from: None, ..
                } => {
                    let meta = fs::metadata(source).map_err(io_err("reading", source))?;
                    let mut plan = copy::Plan::new();
                    copy::plan_tree(
                        &mut plan,
                        source,
                        meta,
                        Path::new("/"),
                        Default::default(),
                        true,
                    )?;
                    out += &format!(" content {}", copy::manifest(&plan, true)?);
                }
                RunMount::Bind { from: Some(f), .. } => {
                    let image = self.image_of(f)?;
                    out += &format!(" image {}", image.id());
                }
                _ => {}
            }
            out.push('\n');
        }
        Ok(out)
    }

    fn image_of(&self, from: &CopyFrom) -> Result<molde_image::Image, StepError> {
        match from {
            CopyFrom::Image(i) => Ok(i.clone()),
            CopyFrom::Stage(n) => (self.stages)(n)
                .ok_or_else(|| StepError::Refused(format!("the stage {n:?} has not been built"))),
        }
    }

    /// The network a `RUN` gets.
    fn run_network(&self, r: &Run) -> Result<Network, StepError> {
        Ok(match r.network {
            RunNetwork::Default => self.settings.network,
            RunNetwork::None => Network::Isolated,
            RunNetwork::Host if self.settings.network == Network::Host => Network::Host,
            RunNetwork::Host => {
                return Err(StepError::Refused(
                    "RUN --network=host needs a build whose network is the host's \
                     (Build::network(Network::Host))"
                        .into(),
                ));
            }
        })
    }

    /// Add `r`'s mounts to `builder`; what they need kept alive goes to `held`.
    fn add_mounts(
        &self,
        mut builder: ContainerBuilder,
        r: &Run,
        held: &mut Held,
    ) -> Result<ContainerBuilder, StepError> {
        for m in &r.mounts {
            builder = match m {
                RunMount::Cache {
                    target,
                    id,
                    sharing,
                    readonly,
                    mode,
                    uid,
                    gid,
                } => {
                    let dir = self.cache_mount_dir(id, *sharing, (*mode, *uid, *gid), held)?;
                    let t = self.config.absolute(target);
                    if *readonly {
                        builder.mount_bind_ro(dir, t)
                    } else {
                        builder.mount_bind(dir, t)
                    }
                }
                RunMount::Tmpfs { target, size } => {
                    builder.mount_tmpfs(self.config.absolute(target), *size)
                }
                RunMount::Secret {
                    id,
                    target,
                    required,
                } => match self.settings.secrets.get(id) {
                    Some(file) => builder.mount_bind_ro(file, self.config.absolute(target)),
                    None if *required => {
                        return Err(StepError::Refused(format!(
                            "the secret {id:?} is required and the build was given none \
                             (Build::secret)"
                        )));
                    }
                    None => builder,
                },
                RunMount::Bind {
                    target,
                    source,
                    from,
                    rw,
                    ..
                } => {
                    let host = self.bind_source(source, from.as_ref(), *rw, held)?;
                    let t = self.config.absolute(target);
                    if *rw {
                        builder.mount_bind(host, t)
                    } else {
                        builder.mount_bind_ro(host, t)
                    }
                }
            };
        }
        Ok(builder)
    }

    /// The host directory of a cache mount, made on first use, locked as `sharing` says.
    fn cache_mount_dir(
        &self,
        id: &str,
        sharing: Sharing,
        (mode, uid, gid): (u32, u32, u32),
        held: &mut Held,
    ) -> Result<PathBuf, StepError> {
        let root = self.store.layout().state().join("build-mounts");
        fs::create_dir_all(&root).map_err(io_err("creating", &root))?;
        let dir = root.join(Digest::of(id.as_bytes()).hex());
        let lock_path = root.join(format!("{}.lock", Digest::of(id.as_bytes()).hex()));
        match sharing {
            Sharing::Shared => {}
            Sharing::Locked => held.locks.push(
                FileLock::acquire(&lock_path, LockKind::Exclusive)
                    .map_err(io_err("locking", &lock_path))?,
            ),
            Sharing::Private => {
                let f = File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .map_err(io_err("opening", &lock_path))?;
                match FileLock::try_exclusive(f).map_err(io_err("locking", &lock_path))? {
                    Some(l) => held.locks.push(l),
                    None => {
                        // In use: this RUN gets a fresh directory of its own.
                        let t = tempfile::Builder::new()
                            .prefix("cache-")
                            .tempdir_in(&root)
                            .map_err(io_err("creating a directory in", &root))?;
                        let p = t.path().to_owned();
                        held.dirs.push(t);
                        return Ok(p);
                    }
                }
            }
        }
        if !dir.exists() {
            let tmp = tempfile::Builder::new()
                .prefix("new-")
                .tempdir_in(&root)
                .map_err(io_err("creating a directory in", &root))?;
            fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))
                .map_err(io_err("setting the mode of", tmp.path()))?;
            give_owner(tmp.path(), uid, gid).map_err(io_err("chown", tmp.path()))?;
            let made = tmp.keep();
            if fs::rename(&made, &dir).is_err() {
                // Another build made it first.
                let _ = fs::remove_dir(&made);
            }
        }
        Ok(dir)
    }

    /// The host path to bind for a `type=bind` mount.
    fn bind_source(
        &self,
        source: &Path,
        from: Option<&CopyFrom>,
        rw: bool,
        held: &mut Held,
    ) -> Result<PathBuf, StepError> {
        let tmp_root = self.store.layout().tmp();
        let mut temp = || {
            let t = tempfile::Builder::new()
                .prefix("bind-")
                .tempdir_in(&tmp_root)
                .map_err(io_err("creating a directory in", &tmp_root))?;
            let p = t.path().to_owned();
            held.dirs.push(t);
            Ok::<PathBuf, StepError>(p)
        };
        let view_err = |e: molde_layerfs::view::ViewError| {
            StepError::Refused(format!("preparing the bind of {}: {e}", source.display()))
        };
        match from {
            None if !rw => Ok(source.to_owned()),
            None => {
                // Writes to a writable bind are thrown away: bind a copy.
                let dir = temp()?;
                let view = UnionView::new(
                    vec![source.to_owned()],
                    None,
                    OverlayXattr::for_current_process(),
                );
                view.copy_to(&dir.join("c")).map_err(view_err)?;
                Ok(dir.join("c"))
            }
            Some(f) => {
                let image = self.image_of(f)?;
                let view = view_of(self.store, &image)?;
                let dir = temp()?;
                let root = dir.join("c");
                if rw {
                    view.copy_to(&root).map_err(view_err)?;
                } else {
                    view.link_to(&root).map_err(view_err)?;
                }
                let inside = copy::key_of(source).iter().collect::<PathBuf>();
                Ok(root.join(inside))
            }
        }
    }

    /// Run a `RUN` step's container and make its writable layer a layer.
    pub(super) fn run(&mut self, r: &Run) -> Result<(Layer, Vec<u8>), StepError> {
        let (image, view) = self.current()?;
        let argv: Vec<String> = match &r.command {
            RunCommand::Shell(c) => {
                let mut shell = self.config.shell();
                if view.open(Path::new(&shell[0])).is_err() {
                    return Err(StepError::NoShell(shell[0].clone()));
                }
                shell.push(c.clone());
                shell
            }
            RunCommand::Exec(v) => v.clone(),
        };
        let mut held = Held::default();
        let mut builder = ContainerBuilder::new(self.store, &image);
        // Each RUN runs on a new intermediate image: flattening it would be work for one use.
        builder.flatten = false;
        builder = builder
            .command(&argv[0])
            .args(&argv[1..])
            .envs(self.settings.run_env.iter().cloned())
            .envs(self.run_args())
            .network(self.run_network(r)?)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        builder = self.add_mounts(builder, r, &mut held)?;
        if let Some(rules) = &r.landlock {
            builder = builder.landlock(rules.clone());
        }
        let mut child = builder.spawn()?;
        let (out, err) = crate::container::child::collect(child.stdout.take(), child.stderr.take());
        let mut container: Container = child.into_container();
        let status = container.wait()?;
        drop(held);
        let out = out.unwrap_or_default();
        let err = err.unwrap_or_default();
        if !matches!(status, Status::Exited { code: Some(0), .. }) {
            let tail = &err[err.len().saturating_sub(2048)..];
            container.close()?;
            return Err(StepError::RunFailed {
                status,
                stderr: String::from_utf8_lossy(tail).into_owned(),
            });
        }
        self.remove_mount_points(r, &view, container.snapshot.changes_dir());
        let tmp_dir = self.store.layout().tmp();
        let mut tmp =
            tempfile::tempfile_in(&tmp_dir).map_err(io_err("creating a file in", &tmp_dir))?;
        let opts = DiffOptions {
            mtime_clamp: self.settings.epoch,
            ..DiffOptions::default()
        };
        crate::container::commit::write_diff(
            container.backend.as_ref(),
            &container.snapshot,
            &mut tmp,
            opts,
        )?;
        tmp.seek(SeekFrom::Start(0))
            .map_err(io_err("rewinding a layer in", &tmp_dir))?;
        let layer = self
            .store
            .add_layer(BufReader::with_capacity(1 << 20, tmp))?
            .layer;
        container.close()?;
        let mut output = out;
        output.extend_from_slice(&err);
        Ok((layer, output))
    }

    /// Remove, from the writable layer at `changes`, the mount points of `r` (and the parents
    /// made for them) that the image did not have: empty directories and files only.
    fn remove_mount_points(&self, r: &Run, view: &UnionView, changes: &Path) {
        for m in &r.mounts {
            let target = match m {
                RunMount::Cache { target, .. }
                | RunMount::Bind { target, .. }
                | RunMount::Tmpfs { target, .. }
                | RunMount::Secret { target, .. } => self.config.absolute(target),
            };
            let key = copy::key_of(&target);
            for n in (1..=key.len()).rev() {
                let rel: PathBuf = key[..n].iter().collect();
                if view.metadata(&Path::new("/").join(&rel)).is_ok() {
                    break;
                }
                let p = changes.join(&rel);
                match fs::symlink_metadata(&p) {
                    Ok(m) if m.is_dir() => {
                        if fs::remove_dir(&p).is_err() {
                            break;
                        }
                    }
                    Ok(m) if m.is_file() && m.len() == 0 => {
                        let _ = fs::remove_file(&p);
                    }
                    _ => break,
                }
            }
        }
    }
}

/// Give `path` the owner `uid:gid` as the build's containers see it. As root, a plain
/// `chown`. Rootless with subordinate ids, a `chown` as root of a user namespace with the
/// maps the containers run with (the caller alone may not give a file to a subordinate id).
/// With one id, the caller already owns it as the containers' root sees it, and no other
/// owner exists there.
fn give_owner(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    match molde_layerfs::idmap::IdMaps::for_current_process() {
        None => chown(path, Some(uid), Some(gid)),
        Some(maps) if maps.needs_helpers() => {
            molde_layerfs::userns::run_as_root(maps, || chown(path, Some(uid), Some(gid)))
        }
        Some(_) => Ok(()),
    }
}
