//! The molde tour: images and containers, told with real layers and real mounts.
//!
//! `cargo run --example tour` — as root, or as an unprivileged user (the tour then enters a user
//! namespace of its own, as a rootless container runtime does).
//!
//! This first chapter tells the layer story that everything else stands on: an image is a stack
//! of read-only layers; a container adds one writable layer on top, joined by a union filesystem
//! with copy-on-write; committing a container turns its writable layer into a new layer.

use std::error::Error;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use molde::layerfs::apply::{ApplyOptions, apply};
use molde::layerfs::diff::{self, DiffOptions};
use molde::layerfs::snapshot::default_backend;
use molde::layerfs::view::UnionView;
use molde::prelude::*;

/// A fixed "source date epoch": layers made twice from the same files are byte-identical.
const EPOCH: u64 = 1_700_000_000;

fn main() -> Result<(), Box<dyn Error>> {
    enter_user_namespace_if_unprivileged()?;
    let work = tempfile::Builder::new().prefix("molde-tour-").tempdir()?;
    let xattr = OverlayXattr::for_current_process();

    say("1. An image is a stack of read-only layers.");
    say("   We make two layers from plain directories, as a build would: a base with a small");
    say("   filesystem, and a second layer that adds an app and removes a file of the base.");
    let src = work.path().join("src");
    let base_dir = src.join("base");
    write_files(
        &base_dir,
        &[
            ("etc/motd", "hola desde la imagen\n"),
            ("etc/os-release", "NAME=molde-tour\n"),
            ("etc/obsolete.conf", "this file goes away in layer 2\n"),
            ("usr/share/doc/README", "layers are shared, not copied\n"),
        ],
    )?;
    let layers = work.path().join("layers");
    let empty = work.path().join("empty");
    fs::create_dir_all(&empty)?;
    fs::create_dir_all(&layers)?;
    let opts = DiffOptions {
        mtime_clamp: Some(EPOCH),
        xattr,
    };

    // Layer 1: everything in base_dir (a diff against an empty tree).
    let layer1_tar = layers.join("layer1.tar");
    let r1 = diff::naive(
        &UnionView::new(vec![empty.clone()], None, xattr),
        &base_dir,
        fs::File::create(&layer1_tar)?,
        &opts,
    )?;
    // Layer 2: the base with an app added and one file removed.
    let next_dir = src.join("next");
    copy_tree(&base_dir, &next_dir)?;
    fs::remove_file(next_dir.join("etc/obsolete.conf"))?;
    write_files(&next_dir, &[("app/run.sh", "#!/bin/sh\necho running\n")])?;
    fs::set_permissions(
        next_dir.join("app/run.sh"),
        fs::Permissions::from_mode(0o755),
    )?;
    let layer2_tar = layers.join("layer2.tar");
    let r2 = diff::naive(
        &UnionView::new(vec![base_dir.clone()], None, xattr),
        &next_dir,
        fs::File::create(&layer2_tar)?,
        &opts,
    )?;
    say(&format!(
        "   layer 1  DiffID {}  ({} bytes)",
        r1.diff_id, r1.size
    ));
    say(&format!(
        "   layer 2  DiffID {}  ({} bytes)",
        r2.diff_id, r2.size
    ));
    list_tar("   layer 2 holds", &layer2_tar)?;

    say("\n2. Layers are unpacked once, read-only, and named by their ChainID.");
    let l1 = layers.join("l1");
    let l2 = layers.join("l2");
    for (tar, dir) in [(&layer1_tar, &l1), (&layer2_tar, &l2)] {
        fs::create_dir_all(dir)?;
        let report = apply(
            fs::File::open(tar)?,
            dir,
            &ApplyOptions::for_current_process(Format::Overlay(xattr)),
        )?;
        say(&format!(
            "   applied {} -> {} ({} files, {} whiteouts)",
            report.diff_id,
            dir.file_name().unwrap_or_default().to_string_lossy(),
            report.counts.files,
            report.counts.whiteouts
        ));
    }
    let chain = chain_id(&[r1.diff_id, r2.diff_id]).ok_or("no layers")?;
    say(&format!("   ChainID of the stack: {chain}"));

    say("\n3. The image as a container sees it: the union of its layers (no mount needed).");
    let image = UnionView::new(vec![l2.clone(), l1.clone()], None, xattr);
    for dir in ["/", "/etc", "/app"] {
        let names: Vec<String> = image
            .read_dir(Path::new(dir))?
            .into_iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect();
        say(&format!("   {dir:<5} {}", names.join("  ")));
    }
    say("   (etc/obsolete.conf is hidden by layer 2's whiteout; layer 1 still holds it.)");

    say("\n4. A container is the image plus one writable layer: copy-on-write.");
    say("   Two containers start from the same image; the first changes /etc/motd.");
    let backend = default_backend();
    say(&format!("   snapshot backend: {}", backend.name()));
    let lowers = vec![l2.clone(), l1.clone()];
    let a_dir = work.path().join("containers/a");
    let b_dir = work.path().join("containers/b");
    fs::create_dir_all(&a_dir)?;
    fs::create_dir_all(&b_dir)?;
    let a = backend.prepare(&lowers, &a_dir)?;
    let b = backend.prepare(&lowers, &b_dir)?;
    let a_root = work.path().join("mnt/a");
    let b_root = work.path().join("mnt/b");
    fs::create_dir_all(&a_root)?;
    fs::create_dir_all(&b_root)?;
    let motd_before = fs::read(l1.join("etc/motd"))?;
    {
        let _a_mounted = Mounted::new(&a.mounts, &a_root)?;
        let _b_mounted = Mounted::new(&b.mounts, &b_root)?;
        fs::write(a_root.join("etc/motd"), "hola desde el contenedor A\n")?;
        fs::write(a_root.join("etc/new-in-a"), "only A has this\n")?;
        say(&format!(
            "   A reads /etc/motd: {}",
            fs::read_to_string(a_root.join("etc/motd"))?.trim()
        ));
        say(&format!(
            "   B reads /etc/motd: {}",
            fs::read_to_string(b_root.join("etc/motd"))?.trim()
        ));
        say(&format!(
            "   B sees /etc/new-in-a: {}",
            b_root.join("etc/new-in-a").exists()
        ));
    }
    let motd_after = fs::read(l1.join("etc/motd"))?;
    say(&format!(
        "   the image's layer is unchanged: {}",
        motd_before == motd_after
    ));

    say("\n5. Commit: A's writable layer becomes a new layer on top of the same base.");
    let commit_tar = layers.join("layer3.tar");
    let mut out = fs::File::create(&commit_tar)?;
    let r3 = backend.diff(&a, &mut out, &opts)?;
    out.flush()?;
    list_tar("   the new layer holds", &commit_tar)?;
    if a.backend() == "overlay" {
        say("   what changed, like `docker diff` (A added, C changed, D deleted):");
        let view = UnionView::new(lowers.clone(), None, xattr);
        for change in diff::changes(a.changes_dir(), &view, xattr)? {
            say(&format!("     {change}"));
        }
    }
    let chain3 = chain_id(&[r1.diff_id, r2.diff_id, r3.diff_id]).ok_or("no layers")?;
    say(&format!("   new image's ChainID: {chain3}"));
    say(&format!(
        "   it shares the first two layers ({chain}) with the first image: nothing is copied."
    ));

    say("\n6. History: one entry per step, like `docker history`.");
    say(&format!("   {:<72} {:>8}  CREATED BY", "LAYER", "SIZE"));
    for (d, size, by) in [
        (r3.diff_id, r3.size, "commit of container A"),
        (r2.diff_id, r2.size, "COPY app/ + RUN rm /etc/obsolete.conf"),
        (r1.diff_id, r1.size, "ADD base filesystem"),
    ] {
        say(&format!("   {d:<72} {size:>8}  {by}"));
    }

    say("\n7. Removing the containers deletes their writable layers; the image stays.");
    backend.remove(a)?;
    backend.remove(b)?;
    say(&format!(
        "   containers left: {}",
        fs::read_dir(work.path().join("containers"))?
            .filter(|e| e.as_ref().is_ok_and(|e| e.path().exists()))
            .count()
    ));
    work.close()?;
    say("\nDone: every step above ran for real.");
    Ok(())
}

fn say(line: &str) {
    println!("{line}");
}

/// Mounts performed at a target, unmounted when dropped.
struct Mounted<'a> {
    target: &'a Path,
}

impl<'a> Mounted<'a> {
    fn new(
        mounts: &[molde::layerfs::mount::Mount],
        target: &'a Path,
    ) -> Result<Self, Box<dyn Error>> {
        for m in mounts {
            m.mount_at(target)?;
        }
        Ok(Mounted { target })
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = molde::layerfs::mount::unmount(self.target);
    }
}

fn write_files(root: &Path, files: &[(&str, &str)]) -> std::io::Result<()> {
    for (path, content) in files {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap_or(root))?;
        fs::write(p, content)?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let dest: PathBuf = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else {
            fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}

fn list_tar(title: &str, tar: &Path) -> Result<(), Box<dyn Error>> {
    let mut archive = tar::Archive::new(fs::File::open(tar)?);
    let names: Vec<String> = archive
        .entries()?
        .map(|e| Ok(e?.path()?.to_string_lossy().into_owned()))
        .collect::<Result<_, Box<dyn Error>>>()?;
    say(&format!("{title}: {}", names.join("  ")));
    Ok(())
}

/// As an unprivileged user, enter a new user and mount namespace where this process is root,
/// mapped to the caller's own uid and gid: overlay mounts are then allowed (with `userxattr`).
fn enter_user_namespace_if_unprivileged() -> Result<(), Box<dyn Error>> {
    use nix::sched::{CloneFlags, unshare};
    if molde::layerfs::privilege::is_privileged() {
        return Ok(());
    }
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).map_err(|e| {
        format!(
            "cannot create a user namespace ({e}); check that the sysctls \
             kernel.unprivileged_userns_clone=1 (Debian) and user.max_user_namespaces > 0 allow it, \
             and that no AppArmor policy (kernel.apparmor_restrict_unprivileged_userns) forbids it"
        )
    })?;
    fs::write("/proc/self/setgroups", "deny")?;
    fs::write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    fs::write("/proc/self/gid_map", format!("0 {gid} 1"))?;
    println!("(unprivileged: running in a user namespace of our own, uid {uid} mapped to root)\n");
    Ok(())
}
