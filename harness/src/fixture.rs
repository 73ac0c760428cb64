//! Fixtures: an image plus setup steps run once (e.g. `initdb` and a schema), committed, and
//! cached in the harness's store under a key of everything that went in. Any number of test
//! processes ask for it at once; the first builds it under a file lock, the others wait for it
//! and then find it. Each test then runs its own copy-on-write container of it.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use molde_container::{ContainerError, LogConfig, Status};
use molde_image::archive::{self, ArchiveError, ImportOptions};
use molde_image::lock::{FileLock, LockKind};
use molde_image::{Image, StoreError};
use sha2::{Digest as _, Sha256};

use crate::Harness;
use crate::ready::LastLines;

/// Where a fixture's image comes from.
#[derive(Debug, Clone)]
enum Source {
    /// An oci-archive or docker-archive on the host (imported once).
    Archive(PathBuf),
    /// An image already in the harness's store (a reference).
    Image(String),
    /// An image pulled from a registry (a reference).
    #[cfg(feature = "registry")]
    Registry(String),
}

/// One setup step: a command run in a container of the image so far, its changes committed.
#[derive(Debug, Clone)]
struct Step {
    argv: Vec<String>,
    user: Option<String>,
    env: Vec<(String, String)>,
}

/// A fixture: a source image and setup steps, built once per key.
///
/// ```no_run
/// use molde_harness::{Fixture, Harness};
/// # fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let harness = Harness::shared()?;
/// let image = Fixture::archive("postgres", "target/fixtures/services.oci.tar")
///     .run_as("postgres", ["initdb", "-D", "/var/lib/postgresql/data", "--auth=trust"])
///     .build(harness)?;
/// # let _ = image; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Fixture {
    name: String,
    source: Source,
    steps: Vec<Step>,
}

/// Why a fixture could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The fixture's name cannot be part of an image reference.
    #[error("fixture name {0:?}: use lowercase letters, digits, '.', '-' and '_'")]
    Name(String),
    /// The source archive could not be read.
    #[error("fixture {name}: reading {path}: {source}")]
    Source {
        /// The fixture.
        name: String,
        /// The archive.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The source archive could not be imported.
    #[error("fixture {name}: importing {path}: {source}")]
    Import {
        /// The fixture.
        name: String,
        /// The archive.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<ArchiveError>,
    },
    /// A setup step failed.
    #[error("fixture {name}: step `{step}` {status}; {lines}")]
    Step {
        /// The fixture.
        name: String,
        /// The step's command.
        step: String,
        /// How it ended.
        status: Status,
        /// Its last log lines.
        lines: LastLines,
    },
    /// The source image could not be pulled.
    #[cfg(feature = "registry")]
    #[error("fixture {name}: pulling {reference}: {source}")]
    Pull {
        /// The fixture.
        name: String,
        /// The reference.
        reference: String,
        /// The cause.
        #[source]
        source: Box<molde_registry::RegistryError>,
    },
    /// The store refused.
    #[error("fixture {name}: {source}")]
    Store {
        /// The fixture.
        name: String,
        /// The cause.
        #[source]
        source: Box<StoreError>,
    },
    /// A step's container could not be made, run or committed.
    #[error("fixture {name}: {source}")]
    Container {
        /// The fixture.
        name: String,
        /// The cause.
        #[source]
        source: Box<ContainerError>,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "(as {u}) ")?;
        }
        f.write_str(&self.argv.join(" "))
    }
}

impl Fixture {
    /// A fixture from an oci-archive or docker-archive (its first image).
    pub fn archive(name: impl Into<String>, path: impl Into<PathBuf>) -> Fixture {
        Fixture {
            name: name.into(),
            source: Source::Archive(path.into()),
            steps: Vec::new(),
        }
    }

    /// A fixture from an image already in the harness's store (tag, digest or id).
    pub fn image(name: impl Into<String>, reference: impl Into<String>) -> Fixture {
        Fixture {
            name: name.into(),
            source: Source::Image(reference.into()),
            steps: Vec::new(),
        }
    }

    /// A fixture from an image pulled from a registry (`host:port/repo:tag`,
    /// `repo@sha256:...`; plain HTTP for loopback registries), into the harness's store,
    /// when the fixture is first built. A digest reference keys the fixture by that digest
    /// alone (the registry's address may change from run to run, the content cannot); a tag
    /// is read once, when the fixture is built: pin a digest to follow new content.
    #[cfg(feature = "registry")]
    pub fn pull(name: impl Into<String>, reference: impl Into<String>) -> Fixture {
        Fixture {
            name: name.into(),
            source: Source::Registry(reference.into()),
            steps: Vec::new(),
        }
    }

    /// A setup step: `argv` run as the image's user; its changes are committed.
    pub fn run<S: Into<String>>(self, argv: impl IntoIterator<Item = S>) -> Fixture {
        self.step(None, argv, Vec::new())
    }

    /// A setup step run as `user` (a name of the image's `/etc/passwd`, or a uid).
    pub fn run_as<S: Into<String>>(
        self,
        user: impl Into<String>,
        argv: impl IntoIterator<Item = S>,
    ) -> Fixture {
        self.step(Some(user.into()), argv, Vec::new())
    }

    /// A setup step with a user (or `None`) and environment variables.
    pub fn step<S: Into<String>>(
        mut self,
        user: Option<String>,
        argv: impl IntoIterator<Item = S>,
        env: Vec<(String, String)>,
    ) -> Fixture {
        self.steps.push(Step {
            argv: argv.into_iter().map(Into::into).collect(),
            user,
            env,
        });
        self
    }

    /// The cache key: a digest of the source (an archive's path, size and modification time)
    /// and every step.
    fn key(&self) -> Result<String, FixtureError> {
        let mut h = Sha256::new();
        h.update(b"molde-harness fixture 1\n");
        match &self.source {
            Source::Archive(p) => {
                let m = std::fs::metadata(p).map_err(|source| self.source_err(p, source))?;
                let canonical = p.canonicalize().unwrap_or_else(|_| p.clone());
                h.update(format!(
                    "archive {} {} {} {}\n",
                    canonical.display(),
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec()
                ));
            }
            Source::Image(r) => h.update(format!("image {r}\n")),
            #[cfg(feature = "registry")]
            Source::Registry(r) => match r.rsplit_once('@') {
                Some((_, digest)) => h.update(format!("registry {digest}\n")),
                None => h.update(format!("registry {r}\n")),
            },
        }
        for s in &self.steps {
            h.update(format!("step {:?} {:?} {:?}\n", s.user, s.argv, s.env));
        }
        Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    fn source_err(&self, path: &Path, source: std::io::Error) -> FixtureError {
        FixtureError::Source {
            name: self.name.clone(),
            path: path.to_owned(),
            source,
        }
    }

    /// The fixture's image: found in the cache, or built now (once across every process using
    /// the same harness store).
    pub fn build(&self, harness: &Harness) -> Result<Image, FixtureError> {
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
        if self.name.is_empty() || !self.name.chars().all(valid) {
            return Err(FixtureError::Name(self.name.clone()));
        }
        let key = self.key()?;
        let tag = format!("molde-harness/{}:{}", self.name, &key[..16]);
        let store = harness.store();
        let locks = crate::owner::dir(store).join("fixtures");
        let lock_path = locks.join(format!("{key}.lock"));
        if let Ok(image) = store.resolve(&tag) {
            // Its use keeps it from `Harness::prune_fixtures`.
            let _ = crate::prune::touch(&lock_path);
            return Ok(image);
        }
        std::fs::create_dir_all(&locks).map_err(|e| self.source_err(&locks, e))?;
        // Held while building: a prune waits for no build, and removes nothing one uses.
        let builds = crate::prune::builds_lock(&locks);
        let _building = FileLock::acquire(&builds, LockKind::Shared)
            .map_err(|e| self.source_err(&builds, e))?;
        let _lock = FileLock::acquire(&lock_path, LockKind::Exclusive)
            .map_err(|e| self.source_err(&lock_path, e))?;
        let _ = crate::prune::touch(&lock_path);
        // Another process may have built it while this one waited.
        if let Ok(image) = store.resolve(&tag) {
            return Ok(image);
        }
        let mut image = self.source_image(harness)?;
        let mut between = Vec::new();
        for step in &self.steps {
            image = self.run_step(harness, &image, step)?;
            between.push(image.clone());
        }
        store
            .tag(&image, &tag)
            .map_err(|source| FixtureError::Store {
                name: self.name.clone(),
                source: Box::new(source),
            })?;
        // The images of the steps before the last are of no use but to hold their layers,
        // which the fixture's image holds too.
        between.pop();
        for step_image in between {
            if store.tags_of(&step_image).is_ok_and(|t| t.is_empty()) {
                let _ = store.remove(&step_image.manifest_digest().to_string());
            }
        }
        Ok(image)
    }

    fn source_image(&self, harness: &Harness) -> Result<Image, FixtureError> {
        let store = harness.store();
        match &self.source {
            Source::Image(r) => store.resolve(r).map_err(|source| FixtureError::Store {
                name: self.name.clone(),
                source: Box::new(source),
            }),
            Source::Archive(p) => {
                let f = File::open(p).map_err(|e| self.source_err(p, e))?;
                let report = archive::import(
                    store,
                    std::io::BufReader::with_capacity(1 << 20, f),
                    &ImportOptions::default(),
                )
                .map_err(|source| FixtureError::Import {
                    name: self.name.clone(),
                    path: p.clone(),
                    source: Box::new(source),
                })?;
                let first = report.images.into_iter().next().ok_or_else(|| {
                    self.source_err(p, std::io::Error::other("the archive holds no image"))
                })?;
                Ok(first.image)
            }
            #[cfg(feature = "registry")]
            Source::Registry(r) => molde_registry::Pull::new(store, r)
                .run()
                .map(|report| report.image)
                .map_err(|source| FixtureError::Pull {
                    name: self.name.clone(),
                    reference: r.clone(),
                    source: Box::new(source),
                }),
        }
    }

    fn run_step(
        &self,
        harness: &Harness,
        image: &Image,
        step: &Step,
    ) -> Result<Image, FixtureError> {
        let err = |source| FixtureError::Container {
            name: self.name.clone(),
            source: Box::new(source),
        };
        let Some((program, args)) = step.argv.split_first() else {
            return Ok(image.clone());
        };
        let mut b = molde_container::Container::builder(harness.store(), image)
            .command(program)
            .args(args)
            .envs(step.env.iter().map(|(k, v)| (k, v)))
            .logs(LogConfig::default())
            .timeout(Duration::from_secs(600));
        if let Some(u) = &step.user {
            b = b.user(u.clone());
        }
        let mut c = harness.start(b).map_err(|e| match e {
            crate::HarnessError::Container(source) => err(source),
            other => err(ContainerError::Io {
                op: "marking the fixture step's container",
                path: PathBuf::new(),
                source: std::io::Error::other(other.to_string()),
            }),
        })?;
        let status = c.wait().map_err(err)?;
        if status
            != (Status::Exited {
                code: Some(0),
                signal: None,
            })
        {
            return Err(FixtureError::Step {
                name: self.name.clone(),
                step: step.to_string(),
                status,
                lines: LastLines(c.log_tail(20).unwrap_or_default()),
            });
        }
        c.commit(&format!("fixture {}: {step}", self.name))
            .map_err(err)
    }
}
