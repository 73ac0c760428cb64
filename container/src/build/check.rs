//! A recipe checked before any work: what can be known wrong without running anything.

use std::path::Path;

use molde_image::Store;

use super::ignore::has_wildcards;
use super::state::{check_user_spec, view_of};
use super::step::{RunCommand, RunMount, Step};
use super::{Base, Build, BuildError, Settings, copy};

impl Build {
    /// Check the recipe (`stage` names it in errors) before any work.
    pub(crate) fn check(
        &self,
        store: &Store,
        stage: &str,
        settings: &Settings,
    ) -> Result<(), BuildError> {
        let invalid = |i: usize, s: &Step, reason: String| BuildError::Invalid {
            stage: stage.to_owned(),
            step: i + 1,
            instruction: s.instruction(),
            reason,
        };
        let base_view = match &self.base {
            Base::Image(b) => {
                let from = |reason| BuildError::Invalid {
                    stage: stage.to_owned(),
                    step: 0,
                    instruction: format!("FROM {}", b.id()),
                    reason,
                };
                if !store.has_blob(&b.manifest_digest()) {
                    return Err(from("the base image is not in this store".into()));
                }
                Some(
                    view_of(store, b)
                        .map_err(|e| from(format!("unpacking the base image: {e}")))?,
                )
            }
            Base::Scratch | Base::Stage(_) => None,
        };
        let known_base = !matches!(self.base, Base::Stage(_));
        let mut files_changed = false;
        for (i, s) in self.steps.iter().enumerate() {
            let ctx = Ctx {
                base_view: base_view.as_ref(),
                known_base,
                files_changed,
                settings,
                shell_set: self.steps[..i].iter().any(|s| matches!(s, Step::Shell(_))),
            };
            check_step(s, &ctx).map_err(|reason| invalid(i, s, reason))?;
            if s.touches_files() {
                files_changed = true;
            }
        }
        Ok(())
    }
}

/// What one step's check needs to know.
struct Ctx<'a> {
    base_view: Option<&'a molde_layerfs::view::UnionView>,
    known_base: bool,
    files_changed: bool,
    settings: &'a Settings,
    shell_set: bool,
}

/// Check step `s`; the reason it cannot work.
fn check_step(s: &Step, c: &Ctx<'_>) -> Result<(), String> {
    let (base_view, known_base, files_changed, settings) =
        (c.base_view, c.known_base, c.files_changed, c.settings);
    match s {
        Step::Run(r) => {
            if let RunCommand::Exec(v) = &r.command
                && v.first().is_none_or(String::is_empty)
            {
                return Err("an exec-form RUN needs a program".into());
            }
            for m in &r.mounts {
                if let RunMount::Secret {
                    id, required: true, ..
                } = m
                    && !settings.secrets.contains_key(id)
                {
                    return Err(format!("the secret {id:?} is required and none was given"));
                }
            }
            if !files_changed && known_base && !c.shell_set {
                let program = match &r.command {
                    RunCommand::Shell(_) => "/bin/sh",
                    RunCommand::Exec(v) => v[0].as_str(),
                };
                match &base_view {
                    None => {
                        return Err(format!(
                            "RUN on scratch: the image is empty, there is no {program} to run (COPY one in first)"
                        ));
                    }
                    Some(v) if program.starts_with('/') && v.open(Path::new(program)).is_err() => {
                        return Err(format!("the base image has no {program} to run"));
                    }
                    Some(_) => {}
                }
            }
        }
        Step::Copy(c) => {
            if c.sources.is_empty() && c.inline.is_empty() {
                return Err("COPY needs a source".into());
            }
            if c.dest.is_empty() {
                return Err("COPY needs a destination".into());
            }
            if c.from.is_none() {
                for src in &c.sources {
                    if !has_wildcards(&src.to_string_lossy())
                        && let Err(e) = std::fs::metadata(src)
                    {
                        let shown = c.shown_sources();
                        let name = shown.first().cloned().unwrap_or_default();
                        return Err(format!("source {name}: {e}"));
                    }
                }
            }
            if let Some(o) = &c.chown {
                check_user_spec(o)?;
            }
        }
        Step::AddTar { tar, dest } => {
            if dest.is_empty() {
                return Err("ADD needs a destination".into());
            }
            if let Err(e) = std::fs::metadata(tar) {
                return Err(format!("source: {e}"));
            }
            if !copy::is_tar(tar) {
                return Err("the source is not a tar (plain, gzip or zstd)".into());
            }
        }
        Step::AddUrl { url, .. } => {
            if settings.fetcher.is_none() {
                return Err(format!(
                    "ADD {url}: this build has no fetcher to download with (give one \
                             with Build::fetcher, or download the file into the context and \
                             COPY it)"
                ));
            }
        }
        Step::Env(kvs) => {
            for (k, _) in kvs {
                if k.is_empty() || k.contains('=') || k.contains('\0') {
                    return Err(format!("invalid variable name {k:?}"));
                }
            }
        }
        Step::Arg(k, _) => {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(format!("invalid variable name {k:?}"));
            }
        }
        Step::Workdir(d) => {
            if d.is_empty() {
                return Err("needs a path".into());
            }
        }
        Step::Volume(vs) => {
            if vs.is_empty() || vs.iter().any(String::is_empty) {
                return Err("needs a path".into());
            }
        }
        Step::User(u) => {
            check_user_spec(u)?;
            if !files_changed && let Some(v) = &base_view {
                crate::config::resolve_identity(v, Some(u), None).map_err(|e| e.to_string())?;
            }
        }
        Step::Label(kvs) => {
            if kvs.iter().any(|(k, _)| k.is_empty()) {
                return Err("a label needs a key".into());
            }
        }
        Step::Shell(v) => {
            if v.is_empty() {
                return Err("SHELL needs a program".into());
            }
        }
        Step::Expose(_)
        | Step::Cmd(_)
        | Step::Entrypoint(_)
        | Step::StopSignal(_)
        | Step::Healthcheck(_)
        | Step::OnBuild(_)
        | Step::Maintainer(_) => {}
    }
    Ok(())
}
