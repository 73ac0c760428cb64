//! `cargo xtask fixtures`: real Debian images for the tests and benchmarks, made with
//! `mmdebstrap` from the package mirror alone (no container registry) and cached under
//! `target/fixtures/`:
//!
//! ```text
//! target/fixtures/debian.oci.tar     Debian bookworm, minbase             (debian:bookworm)
//! target/fixtures/services.oci.tar   the same plus postgresql-15 and       (services:bookworm)
//!                                    redis-server (no cluster: initdb is a
//!                                    fixture step of the tests)
//! target/fixtures/NAME.recipe        the recipe each archive was made from
//! target/fixtures/registry/          a registry's storage (docker-registry's filesystem
//!                                    driver) holding each image as
//!                                    molde-fixtures/NAME:bookworm
//! target/fixtures/NAME.digest        its manifest digest there
//! ```
//!
//! Tests pull the images as users do: `molde_harness::fixture_reference` serves
//! `registry/` read-only from a `docker-registry` of the test process on 127.0.0.1 and names
//! each image by its digest. An image is pushed again (skopeo, digests kept: the layer stays
//! an uncompressed tar) whenever its archive is newer than its digest file.
//!
//! An archive is made again only when its recipe changed (or it is missing). Each is an
//! oci-archive of a one-layer image, imported from mmdebstrap's rootfs tarball by molde itself
//! (`molde_image::archive::rootfs`), so podman loads it (`podman load -i`) and molde's harness
//! imports it like any archive.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use molde_image::archive::{oci, rootfs};
use molde_image::{ImageBuilder, Store};

/// The `PATH` of the images: PostgreSQL's server programs are not on Debian's default one.
const PATH: &str =
    "/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One image to make.
struct Recipe {
    /// File name stem under `target/fixtures`.
    name: &'static str,
    /// The image's tag.
    tag: &'static str,
    /// Packages beyond minbase.
    include: &'static [&'static str],
    /// Ports the image says it listens on.
    expose: &'static [&'static str],
}

const RECIPES: &[Recipe] = &[
    Recipe {
        name: "debian",
        tag: "debian:bookworm",
        include: &[],
        expose: &[],
    },
    Recipe {
        name: "services",
        tag: "services:bookworm",
        include: &["postgresql-15", "redis-server"],
        expose: &["5432/tcp", "6379/tcp"],
    },
];

/// Where the fixtures go: `$CARGO_TARGET_DIR/fixtures`, else `<workspace>/target/fixtures`.
pub fn dir(workspace: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("fixtures")
}

/// The Debian mirror this machine reaches: `$MOLDE_DEBIAN_MIRROR`, else the first
/// `.../debian` source of apt's configuration, else deb.debian.org.
fn mirror() -> String {
    if let Ok(m) = std::env::var("MOLDE_DEBIAN_MIRROR") {
        return m;
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            let urls = line
                .strip_prefix("URIs:")
                .map(|rest| rest.split_whitespace().collect::<Vec<_>>())
                .or_else(|| {
                    line.strip_prefix("deb ").map(|rest| {
                        rest.split_whitespace()
                            .filter(|w| w.contains("://"))
                            .take(1)
                            .collect()
                    })
                })
                .unwrap_or_default();
            if let Some(url) = urls
                .into_iter()
                .find(|u| u.trim_end_matches('/').ends_with("/debian"))
            {
                return url.to_owned();
            }
        }
    }
    "http://deb.debian.org/debian".to_owned()
}

/// mmdebstrap's arguments for `recipe`, writing the rootfs tarball to `out`.
fn mmdebstrap_args(recipe: &Recipe, mirror: &str, out: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--variant=minbase".into(),
        "--mode=auto".into(),
        "--quiet".into(),
    ];
    if !recipe.include.is_empty() {
        args.push(format!("--include={}", recipe.include.join(",")));
    }
    // Documentation, manual pages and translations: a third of the tree, of no use here.
    for excluded in ["man", "doc", "locale", "info"] {
        args.push(format!("--dpkgopt=path-exclude=/usr/share/{excluded}/*"));
    }
    // Debian's postgresql package makes a cluster ("main") at install: the tests make their
    // own with initdb (a fixture step), so the image ships none. Apt's lists and cache go too.
    args.push(
        "--customize-hook=rm -rf \"$1\"/var/lib/postgresql/15/main \"$1\"/etc/postgresql/15/main \
         \"$1\"/var/cache/apt/archives/*.deb \"$1\"/var/lib/apt/lists/*"
            .into(),
    );
    args.push("bookworm".into());
    args.push(out.display().to_string());
    args.push(mirror.into());
    args
}

/// The image config of `recipe`.
fn image_config(recipe: &Recipe) -> ImageBuilder {
    let mut b = ImageBuilder::new().env("PATH", PATH).cmd(["/bin/bash"]);
    for port in recipe.expose {
        b = b.expose(*port);
    }
    b
}

/// The Debian packages making and pushing the fixtures needs.
const PACKAGES: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("skopeo", "skopeo"),
    ("docker-registry", "docker-registry"),
];

/// Make every fixture whose archive is missing or whose recipe changed, and push what the
/// fixture registry lacks.
pub fn make(workspace: &Path) -> Result<(), String> {
    crate::install(PACKAGES)?;
    let dir = dir(workspace);
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mirror = mirror();
    for recipe in RECIPES {
        let archive = dir.join(format!("{}.oci.tar", recipe.name));
        let recipe_file = dir.join(format!("{}.recipe", recipe.name));
        let rootfs = dir.join(format!("{}.rootfs.tar", recipe.name));
        let args = mmdebstrap_args(recipe, &mirror, &rootfs);
        // The recipe, minus where it writes and which mirror it reads: those change nothing
        // in the image.
        let text = format!(
            "mmdebstrap {}\nimage {} {:?}\n",
            args[..args.len() - 2].join(" "),
            recipe.tag,
            recipe.expose
        );
        if archive.is_file() && fs::read_to_string(&recipe_file).ok().as_deref() == Some(&text) {
            eprintln!("fixture {}: cached ({})", recipe.tag, archive.display());
            continue;
        }
        let _ = fs::remove_file(&recipe_file);
        crate::run(
            &format!("mmdebstrap ({})", recipe.tag),
            Command::new("mmdebstrap").args(&args),
        )?;
        let made = import_and_export(recipe, &rootfs, &archive, &dir);
        let _ = fs::remove_file(&rootfs);
        made?;
        fs::write(&recipe_file, text).map_err(|e| format!("{}: {e}", recipe_file.display()))?;
        eprintln!("fixture {}: made ({})", recipe.tag, archive.display());
    }
    push(&dir)
}

/// Whether the registry holds `recipe`'s image as its archive is now.
fn pushed(dir: &Path, recipe: &Recipe) -> bool {
    let modified = |p: PathBuf| fs::metadata(p).and_then(|m| m.modified()).ok();
    let archive = modified(dir.join(format!("{}.oci.tar", recipe.name)));
    let digest = modified(dir.join(format!("{}.digest", recipe.name)));
    archive.is_some()
        && digest >= archive
        && molde_harness::registry::fixture_digest(dir, recipe.name).is_some()
}

/// Push every image the fixture registry lacks (or holds an older archive of) into
/// `<dir>/registry`, recording its digest in `<dir>/NAME.digest`.
fn push(dir: &Path) -> Result<(), String> {
    let todo: Vec<&Recipe> = RECIPES.iter().filter(|r| !pushed(dir, r)).collect();
    if todo.is_empty() {
        eprintln!(
            "fixture registry: up to date ({})",
            dir.join("registry").display()
        );
        return Ok(());
    }
    let registry = molde_harness::LocalRegistry::start(&dir.join("registry"), false)
        .map_err(|e| format!("fixture registry: {e}"))?;
    for recipe in todo {
        let archive = dir.join(format!("{}.oci.tar", recipe.name));
        let digest = dir.join(format!("{}.digest", recipe.name));
        let tmp = dir.join(format!("{}.digest.tmp", recipe.name));
        let tag = recipe.tag.rsplit_once(':').map_or("latest", |(_, t)| t);
        let target = registry.reference(&format!(
            "{}/{}:{tag}",
            molde_harness::registry::FIXTURE_REPOSITORY,
            recipe.name
        ));
        crate::run(
            &format!("push {} to the fixture registry", recipe.tag),
            Command::new("skopeo").args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--preserve-digests",
                "--dest-tls-verify=false",
                "--digestfile",
                &tmp.display().to_string(),
                &format!("oci-archive:{}", archive.display()),
                &format!("docker://{target}"),
            ]),
        )?;
        fs::rename(&tmp, &digest).map_err(|e| format!("{}: {e}", digest.display()))?;
    }
    Ok(())
}

/// Import the rootfs tarball as a one-layer image and write it as an oci-archive (through a
/// temporary file, renamed into place: a cut run leaves no half archive).
fn import_and_export(
    recipe: &Recipe,
    rootfs: &Path,
    archive: &Path,
    dir: &Path,
) -> Result<(), String> {
    let store = Store::temporary().map_err(|e| format!("temporary store: {e}"))?;
    let tar = fs::File::open(rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
    let options = rootfs::RootfsOptions {
        builder: image_config(recipe),
        created_by: format!(
            "mmdebstrap --variant=minbase bookworm (+{})",
            recipe.include.join(",")
        ),
        comment: "Imported from mmdebstrap".into(),
        tag: Some(recipe.tag.into()),
    };
    rootfs::import(&store, std::io::BufReader::new(tar), options)
        .map_err(|e| format!("importing {}: {e}", rootfs.display()))?;
    let tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    oci::export_archive(
        &store,
        &[recipe.tag],
        std::io::BufWriter::new(tmp.as_file()),
    )
    .map_err(|e| format!("exporting {}: {e}", recipe.tag))?;
    // Readable by every user: rootless tests import it too.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("{}: {e}", tmp.path().display()))?;
    tmp.persist(archive)
        .map_err(|e| format!("{}: {e}", archive.display()))?;
    Ok(())
}
