//! Rootless containers through subordinate id ranges (`/etc/subuid`, `/etc/subgid`, mapped by
//! `newuidmap`/`newgidmap`): an image whose files belong to many uids and gids keeps its
//! ownership inside, `su` to another user works, a `useradd`-like change is committed with
//! the ids the container saw, and removing the container, the image and GC leave nothing.
//!
//! As root, the test runs itself again as `molde-rootless` (`common::rootless`, made by `cargo xtask test` with a
//! subordinate range; `useradd -m molde-rootless` on Debian gives one). Run as that user (the
//! xtask's unprivileged pass), it runs directly. The single-id case (umoci's
//! `user.rootlesscontainers` record) runs as nobody, who has no range.

mod common;

use std::io::Read;
use std::path::Path;

use molde_container::Container;
use molde_image::{Image, ImageBuilder, Store};
use molde_layerfs::idmap::IdMaps;

use common::rootless;

const APPLETS: &[&str] = &[
    "sh", "ls", "id", "su", "cat", "echo", "chown", "chmod", "mkdir", "touch", "stat", "grep",
];

fn entry(
    tar: &mut tar::Builder<Vec<u8>>,
    name: &str,
    mode: u32,
    (uid, gid): (u64, u64),
    data: Option<&[u8]>,
    link: Option<&str>,
) {
    let mut h = tar::Header::new_ustar();
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(1_700_000_000);
    match (data, link) {
        (_, Some(target)) => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            tar.append_link(&mut h, name, target).unwrap();
        }
        (Some(data), None) => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(data.len() as u64);
            tar.append_data(&mut h, name, data).unwrap();
        }
        (None, None) => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            tar.append_data(&mut h, name, &[][..]).unwrap();
        }
    }
}

/// An image of static busybox (setuid root) whose files belong to several users and groups,
/// as a distribution's do: root, `mail` (8), `shadow` (42), `appuser` (1000), `nobody`.
fn many_ids_image(store: &Store, busybox: &Path) -> Image {
    let busybox = std::fs::read(busybox).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    for d in ["bin", "etc", "proc", "dev", "sys", "root", "home", "var"] {
        entry(&mut tar, d, 0o755, (0, 0), None, None);
    }
    entry(&mut tar, "tmp", 0o1777, (0, 0), None, None);
    entry(&mut tar, "var/mail", 0o2775, (0, 8), None, None);
    entry(&mut tar, "home/appuser", 0o700, (1000, 1000), None, None);
    let notes = b"mine\n";
    entry(
        &mut tar,
        "home/appuser/notes",
        0o600,
        (1000, 1000),
        Some(notes),
        None,
    );
    entry(
        &mut tar,
        "var/nobody",
        0o644,
        (65534, 65534),
        Some(b"x"),
        None,
    );
    entry(
        &mut tar,
        "bin/busybox",
        0o4755,
        (0, 0),
        Some(&busybox),
        None,
    );
    for applet in APPLETS {
        entry(
            &mut tar,
            &format!("bin/{applet}"),
            0o777,
            (0, 0),
            None,
            Some("busybox"),
        );
    }
    let passwd = "root::0:0:root:/root:/bin/sh\nmail:x:8:8::/var/mail:/bin/sh\n\
                  appuser:x:1000:1000::/home/appuser:/bin/sh\n";
    entry(
        &mut tar,
        "etc/passwd",
        0o644,
        (0, 0),
        Some(passwd.as_bytes()),
        None,
    );
    let group = "root:x:0:\nmail:x:8:\nshadow:x:42:\nappuser:x:1000:\n";
    entry(
        &mut tar,
        "etc/group",
        0o644,
        (0, 0),
        Some(group.as_bytes()),
        None,
    );
    let shadow = "root::19000::::::\nappuser:!:19000::::::\n";
    entry(
        &mut tar,
        "etc/shadow",
        0o640,
        (0, 42),
        Some(shadow.as_bytes()),
        None,
    );
    let bytes = tar.into_inner().unwrap();
    let layer = store.add_layer(&bytes[..]).unwrap().layer;
    store
        .commit(ImageBuilder::new().layer(layer, "busybox with many owners"))
        .unwrap()
}

/// Run `script` with `sh -c` in a container of `image`; its stdout (it must succeed).
fn sh(store: &Store, image: &Image, script: &str) -> String {
    let out = Container::builder(store, image)
        .command("/bin/sh")
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(out.success(), "{script}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `(uid, gid, mode)` of each entry of the layer tar `bytes`, by name.
fn owners(bytes: &[u8]) -> Vec<(String, u64, u64, u32)> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mode().unwrap(),
            )
        })
        .collect()
}

#[test]
fn many_owners_survive_a_rootless_run_and_commit() {
    if !rootless::as_unprivileged_user("many_owners_survive_a_rootless_run_and_commit") {
        return;
    }
    let busybox = molde_container::image::base::static_busybox();
    if !common::require(busybox.is_some(), "needs busybox-static") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let image = many_ids_image(&store, &busybox.unwrap());

    // The image's owners, as `ls -ln` shows them inside.
    let ls = sh(
        &store,
        &image,
        "stat -c '%n %u %g %a' /etc/shadow /var/mail /home/appuser /home/appuser/notes \
         /var/nobody /bin/busybox /etc/passwd",
    );
    assert_eq!(
        ls,
        "/etc/shadow 0 42 640\n/var/mail 0 8 2775\n/home/appuser 1000 1000 700\n\
         /home/appuser/notes 1000 1000 600\n/var/nobody 65534 65534 644\n\
         /bin/busybox 0 0 4755\n/etc/passwd 0 0 644\n",
    );
    // The whole map, and `su` to another user (setuid busybox, setgroups allowed).
    let map = sh(&store, &image, "cat /proc/self/uid_map");
    assert!(map.lines().count() >= 2, "subordinate ranges mapped: {map}");
    let su = sh(
        &store,
        &image,
        "su appuser -c 'id -u; id -g; cat /home/appuser/notes; touch /home/appuser/new; \
         stat -c %u:%g /home/appuser/new'",
    );
    assert_eq!(su, "1000\n1000\nmine\n1000:1000\n");

    // A user added as `useradd -m` does, committed: ids as the container saw them.
    let mut c = Container::builder(&store, &image)
        .command("/bin/sh")
        .args([
            "-c",
            "echo appuser2:x:1005:1005::/home/appuser2:/bin/sh >> /etc/passwd && \
             echo 'appuser2:!:19000::::::' >> /etc/shadow && \
             mkdir -m 700 /home/appuser2 && echo hi > /home/appuser2/.profile && \
             chown -R 1005:1005 /home/appuser2 && touch /var/mail/appuser2 && \
             chown 1005:8 /var/mail/appuser2",
        ])
        .create()
        .unwrap();
    c.start().unwrap();
    let status = c.wait().unwrap();
    assert!(
        matches!(
            status,
            molde_container::Status::Exited { code: Some(0), .. }
        ),
        "{status:?}"
    );
    // `docker diff` lists what the user's 0700 home holds, which the caller cannot read.
    let changes: Vec<String> = c.diff().unwrap().iter().map(|c| c.to_string()).collect();
    for line in [
        "A /home/appuser2",
        "A /home/appuser2/.profile",
        "C /etc/shadow",
        "A /var/mail/appuser2",
    ] {
        assert!(changes.iter().any(|c| c == line), "{line} in {changes:?}");
    }
    let committed = c.commit("useradd -m appuser2").unwrap();
    let top = *committed.layers().last().unwrap();
    let mut bytes = Vec::new();
    store
        .open_blob(&top.digest)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    let entries = owners(&bytes);
    let find = |name: &str| -> (u64, u64, u32) {
        let e = entries
            .iter()
            .find(|e| e.0.trim_end_matches('/') == name)
            .unwrap_or_else(|| panic!("{name} in {entries:?}"));
        (e.1, e.2, e.3)
    };
    assert_eq!(find("etc/shadow"), (0, 42, 0o640));
    assert_eq!(find("etc/passwd"), (0, 0, 0o644));
    assert_eq!(find("home/appuser2"), (1005, 1005, 0o700));
    assert_eq!(find("home/appuser2/.profile"), (1005, 1005, 0o644));
    assert_eq!(find("var/mail"), (0, 8, 0o2775));
    assert_eq!(find("var/mail/appuser2"), (1005, 8, 0o644));
    let host_uid = u64::from(nix::unistd::geteuid().as_raw());
    for (name, uid, gid, _) in &entries {
        assert!(
            *uid != host_uid && *uid < 65536 && *gid < 65536,
            "{name} recorded with a host id {uid}:{gid}"
        );
    }
    // What tar(1) itself lists.
    let listing = std::process::Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(store.layout().blob(&top.digest))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.contains("0/42") && l.ends_with("etc/shadow")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.contains("1005/1005") && l.ends_with("home/appuser2/")),
        "{listing}"
    );
    // The committed image runs with those owners too.
    assert_eq!(
        sh(
            &store,
            &committed,
            "stat -c '%u %g' /home/appuser2/.profile /etc/shadow"
        ),
        "1005 1005\n0 42\n"
    );

    // Everything goes, though parts belong to subordinate ids the caller cannot touch.
    c.remove().unwrap();
    store.remove(&committed.id().to_string()).unwrap();
    store.remove(&image.id().to_string()).unwrap();
    store.gc().unwrap();
    let left: Vec<_> = std::fs::read_dir(store.layout().layers())
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter().all(|n| n.to_string_lossy().ends_with(".lock")),
        "unpacked layers left: {left:?}"
    );
    drop(store);
    dir.close().unwrap();
}

/// With the caller's own id alone, every file shows root inside, and the owners the layer
/// recorded stay in `user.rootlesscontainers` (as umoci keeps them): a commit writes them
/// back, for files the container changed (copied up with their xattrs) as for new ones.
#[test]
fn one_id_keeps_owners_in_the_xattr_and_commits_them() {
    if !rootless::as_nobody("one_id_keeps_owners_in_the_xattr_and_commits_them") {
        return;
    }
    assert!(
        IdMaps::subordinate_for_current_process().is_none(),
        "nobody has no range"
    );
    let busybox = molde_container::image::base::static_busybox();
    if !common::require(busybox.is_some(), "needs busybox-static") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let image = many_ids_image(&store, &busybox.unwrap());
    assert_eq!(
        sh(
            &store,
            &image,
            "stat -c '%n %u %g' /etc/shadow /home/appuser"
        ),
        "/etc/shadow 0 0\n/home/appuser 0 0\n",
        "one id: root owns everything inside"
    );
    let mut c = Container::builder(&store, &image)
        .command("/bin/sh")
        .args([
            "-c",
            "echo 'appuser2:!:19000::::::' >> /etc/shadow && echo more >> /home/appuser/notes \
             && echo new > /etc/new",
        ])
        .create()
        .unwrap();
    c.start().unwrap();
    let status = c.wait().unwrap();
    assert!(
        matches!(
            status,
            molde_container::Status::Exited { code: Some(0), .. }
        ),
        "{status:?}"
    );
    let committed = c.commit("append").unwrap();
    let top = *committed.layers().last().unwrap();
    let mut bytes = Vec::new();
    store
        .open_blob(&top.digest)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    let entries = owners(&bytes);
    let find = |name: &str| -> (u64, u64, u32) {
        let e = entries
            .iter()
            .find(|e| e.0.trim_end_matches('/') == name)
            .unwrap_or_else(|| panic!("{name} in {entries:?}"));
        (e.1, e.2, e.3)
    };
    assert_eq!(find("etc/shadow"), (0, 42, 0o640));
    assert_eq!(find("home/appuser"), (1000, 1000, 0o700));
    assert_eq!(find("home/appuser/notes"), (1000, 1000, 0o600));
    assert_eq!(find("etc/new"), (0, 0, 0o644));
    // The record itself is not part of the layer.
    let mut archive = tar::Archive::new(&bytes[..]);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if let Some(ext) = e.pax_extensions().unwrap() {
            for x in ext {
                let key = x.unwrap().key().unwrap().to_owned();
                assert!(!key.contains("rootlesscontainers"), "{key}");
            }
        }
    }
    c.remove().unwrap();
}
