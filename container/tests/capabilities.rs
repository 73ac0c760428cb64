//! Capabilities by user (issue 11): root keeps the default set; any other uid holds none (as
//! with Docker, runc and crun), its bounding set keeping the default list so that a setuid
//! binary can still raise it; ambient capabilities only when asked for by name. Tried for real
//! on an image of static busybox (installed setuid root, as distributions ship `su`), reading
//! the process's own `/proc/self/status`.

mod common;

use molde_container::launch::{Capability, Stage};
use molde_container::{Container, ContainerError};
use molde_image::{Image, ImageBuilder, Store};
use nix::errno::Errno;

/// Docker's default set without CAP_MKNOD (`launch::default_capabilities`), as
/// `/proc/<pid>/status` prints it.
const DEFAULT_SET: &str = "00000000a00425fb";
const NONE: &str = "0000000000000000";
/// CAP_NET_BIND_SERVICE alone (bit 10).
const NET_BIND_SERVICE: &str = "0000000000000400";

const APPLETS: &[&str] = &[
    "sh", "cat", "grep", "su", "id", "touch", "sleep", "true", "echo", "whoami",
];

fn can_run() -> bool {
    common::containers_or_skip()
}

/// A tar entry: a file (`Some(body)`), a directory (`None` and no link) or a symlink.
fn entry(
    tar: &mut tar::Builder<Vec<u8>>,
    name: &str,
    mode: u32,
    uid: u64,
    body: Option<&[u8]>,
    link: Option<&str>,
) {
    let mut h = tar::Header::new_gnu();
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(uid);
    match (body, link) {
        (Some(body), _) => {
            h.set_size(body.len() as u64);
            h.set_cksum();
            tar.append_data(&mut h, name, body).unwrap();
        }
        (None, Some(target)) => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            tar.append_link(&mut h, name, target).unwrap();
        }
        (None, None) => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_cksum();
            tar.append_data(&mut h, name, &[][..]).unwrap();
        }
    }
}

/// A store and an image of static busybox (setuid root) with users `root` (no password) and
/// `appuser` (uid 1000), a root-only `/etc/secret` (0600) and a root-owned `/etc`; `None` when
/// busybox-static is missing (a failure under `MOLDE_REQUIRE_ALL=1`).
fn setup() -> Option<(tempfile::TempDir, Store, Image)> {
    let busybox = molde_container::image::base::static_busybox();
    if !common::require(
        busybox.is_some(),
        "needs busybox-static (apt-get install busybox-static)",
    ) {
        return None;
    }
    let busybox = std::fs::read(busybox.unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    for d in ["bin", "etc", "proc", "dev", "sys", "root"] {
        entry(&mut tar, d, 0o755, 0, None, None);
    }
    entry(&mut tar, "tmp", 0o1777, 0, None, None);
    entry(&mut tar, "home", 0o755, 0, None, None);
    entry(&mut tar, "home/appuser", 0o755, 1000, None, None);
    entry(&mut tar, "bin/busybox", 0o4755, 0, Some(&busybox), None);
    for applet in APPLETS {
        entry(
            &mut tar,
            &format!("bin/{applet}"),
            0o777,
            0,
            None,
            Some("busybox"),
        );
    }
    let passwd = "root::0:0:root:/root:/bin/sh\nappuser:x:1000:1000::/home/appuser:/bin/sh\n";
    entry(
        &mut tar,
        "etc/passwd",
        0o644,
        0,
        Some(passwd.as_bytes()),
        None,
    );
    let group = "root:x:0:\nappuser:x:1000:\n";
    entry(
        &mut tar,
        "etc/group",
        0o644,
        0,
        Some(group.as_bytes()),
        None,
    );
    entry(
        &mut tar,
        "etc/secret",
        0o600,
        0,
        Some(b"top secret\n"),
        None,
    );
    let bytes = tar.into_inner().unwrap();
    let layer = store.add_layer(&bytes[..]).unwrap().layer;
    let image = store
        .commit(ImageBuilder::new().layer(layer, "busybox, setuid root"))
        .unwrap();
    Some((dir, store, image))
}

/// The capability lines of `/proc/self/status` as printed by a shell in the container.
fn cap_lines(status: &str) -> Vec<String> {
    status
        .lines()
        .filter(|l| l.starts_with("Cap"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The exact lines for these sets (`CapInh`, `CapPrm`, `CapEff`, `CapBnd`, `CapAmb`).
fn expect(inh: &str, prm: &str, eff: &str, bnd: &str, amb: &str) -> Vec<String> {
    vec![
        format!("CapInh: {inh}"),
        format!("CapPrm: {prm}"),
        format!("CapEff: {eff}"),
        format!("CapBnd: {bnd}"),
        format!("CapAmb: {amb}"),
    ]
}

/// `cat /proc/self/status` in a container of `image` configured by `f`: its Cap lines.
fn caps_of(
    store: &Store,
    image: &Image,
    f: impl FnOnce(molde_container::ContainerBuilder) -> molde_container::ContainerBuilder,
) -> Vec<String> {
    let out = f(Container::builder(store, image)
        .command("cat")
        .arg("/proc/self/status"))
    .output()
    .unwrap();
    assert!(out.success(), "{out:?}");
    cap_lines(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn root_keeps_the_default_set_and_inherits_none() {
    if !can_run() {
        return;
    }
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    assert_eq!(
        caps_of(&store, &image, |b| b),
        expect(NONE, DEFAULT_SET, DEFAULT_SET, DEFAULT_SET, NONE)
    );
}

#[test]
fn a_numeric_uid_holds_no_capability() {
    if !can_run() {
        return;
    }
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    assert_eq!(
        caps_of(&store, &image, |b| b.user("1000")),
        expect(NONE, NONE, NONE, DEFAULT_SET, NONE)
    );
    // A uid with no passwd entry as well.
    assert_eq!(
        caps_of(&store, &image, |b| b.user("4242:4242")),
        expect(NONE, NONE, NONE, DEFAULT_SET, NONE)
    );
}

#[test]
fn the_images_named_user_holds_no_capability() {
    if !can_run() {
        return;
    }
    let Some((_dir, store, base)) = setup() else {
        return;
    };
    let image = store
        .commit(
            ImageBuilder::from_image(&base)
                .user("appuser")
                .step("USER appuser"),
        )
        .unwrap();
    let out = Container::builder(&store, &image)
        .command("sh")
        .args(["-c", "id -u; cat /proc/self/status"])
        .output()
        .unwrap();
    assert!(out.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("1000\n"), "{text}");
    assert_eq!(
        cap_lines(&text),
        expect(NONE, NONE, NONE, DEFAULT_SET, NONE)
    );
}

#[test]
fn an_exec_as_another_user_holds_no_capability() {
    if !can_run() {
        return;
    }
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    let c = Container::builder(&store, &image)
        .command("sleep")
        .arg("30")
        .start()
        .unwrap();
    let run = |user: Option<&str>| {
        let mut e = c.exec("cat").arg("/proc/self/status");
        if let Some(u) = user {
            e = e.user(u);
        }
        let out = e.output().unwrap();
        assert!(out.success(), "{out:?}");
        cap_lines(&String::from_utf8_lossy(&out.stdout))
    };
    assert_eq!(
        run(Some("appuser")),
        expect(NONE, NONE, NONE, DEFAULT_SET, NONE)
    );
    assert_eq!(
        run(Some("1000")),
        expect(NONE, NONE, NONE, DEFAULT_SET, NONE)
    );
    assert_eq!(
        run(None),
        expect(NONE, DEFAULT_SET, DEFAULT_SET, DEFAULT_SET, NONE)
    );
    // A container whose process is not root: its exec'd processes are not either, unless
    // they ask to be.
    let c2 = Container::builder(&store, &image)
        .user("appuser")
        .command("sleep")
        .arg("30")
        .start()
        .unwrap();
    let out = c2.exec("cat").arg("/proc/self/status").output().unwrap();
    assert_eq!(
        cap_lines(&String::from_utf8_lossy(&out.stdout)),
        expect(NONE, NONE, NONE, DEFAULT_SET, NONE)
    );
    let out = c2
        .exec("cat")
        .arg("/proc/self/status")
        .user("root")
        .output()
        .unwrap();
    assert_eq!(
        cap_lines(&String::from_utf8_lossy(&out.stdout)),
        expect(NONE, DEFAULT_SET, DEFAULT_SET, DEFAULT_SET, NONE)
    );
    for mut c in [c, c2] {
        c.kill().unwrap();
        c.remove().unwrap();
    }
}

#[test]
fn ambient_capabilities_only_when_asked_for_by_name() {
    if !can_run() {
        return;
    }
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    let bind = |b: molde_container::ContainerBuilder| {
        b.user("1000")
            .ambient_capabilities([Capability::CAP_NET_BIND_SERVICE])
    };
    assert_eq!(
        caps_of(&store, &image, bind),
        expect(
            NET_BIND_SERVICE,
            NET_BIND_SERVICE,
            NET_BIND_SERVICE,
            DEFAULT_SET,
            NET_BIND_SERVICE
        )
    );
    // Exec'd processes of that container get the same.
    let c = bind(Container::builder(&store, &image))
        .command("sleep")
        .arg("30")
        .start()
        .unwrap();
    let out = c.exec("cat").arg("/proc/self/status").output().unwrap();
    assert_eq!(
        cap_lines(&String::from_utf8_lossy(&out.stdout)),
        expect(
            NET_BIND_SERVICE,
            NET_BIND_SERVICE,
            NET_BIND_SERVICE,
            DEFAULT_SET,
            NET_BIND_SERVICE
        )
    );
    let mut c = c;
    c.kill().unwrap();
    c.remove().unwrap();
    // One outside the container's capabilities is refused, not silently dropped.
    let err = Container::builder(&store, &image)
        .user("1000")
        .ambient_capabilities([Capability::CAP_SYS_ADMIN])
        .command("true")
        .output()
        .unwrap_err();
    match err {
        ContainerError::Launch(e) => {
            assert_eq!((e.stage, e.errno), (Stage::Capabilities, Errno::EINVAL))
        }
        other => panic!("expected a launch error at Stage::Capabilities, got {other:?}"),
    }
}

/// A script's output lines as a non-root user and as root, for the same image.
fn as_user_and_root(store: &Store, image: &Image, script: &str) -> (String, String) {
    let run = |user: &str| {
        let out = Container::builder(store, image)
            .user(user)
            .command("sh")
            .args(["-c", script])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    (run("appuser"), run("root"))
}

#[test]
fn a_non_root_user_cannot_read_root_files_nor_write_root_directories() {
    if !can_run() {
        return;
    }
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    let script = "cat /etc/secret 2>/dev/null && echo read || echo no-read; \
                  touch /etc/new 2>/dev/null && echo wrote || echo no-write; \
                  touch /root/new 2>/dev/null && echo wrote-root || echo no-write-root; \
                  echo x > /etc/passwd 2>/dev/null && echo replaced || echo no-replace";
    let (user, root) = as_user_and_root(&store, &image, script);
    assert_eq!(
        user, "no-read\nno-write\nno-write-root\nno-replace\n",
        "as appuser"
    );
    assert_eq!(
        root, "top secret\nread\nwrote\nwrote-root\nreplaced\n",
        "as root (the same script can succeed)"
    );
}

#[test]
fn su_from_root_to_a_user_and_back() {
    if !can_run() {
        return;
    }
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    // Root becomes appuser (no privilege needed beyond root's own), which holds nothing.
    let out = Container::builder(&store, &image)
        .command("su")
        .args([
            "appuser",
            "-c",
            "id -u; grep -E '^Cap(Prm|Eff)' /proc/self/status",
        ])
        .output()
        .unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("1000\nCapPrm:\t{NONE}\nCapEff:\t{NONE}\n")
    );
    // Back to root through the setuid su: works once no_new_privs is off (Docker's default),
    // and gives root's default set again, bounded as before.
    let back = "su root -c 'id -u; grep -E \"^Cap(Prm|Eff|Bnd)\" /proc/self/status'";
    let out = Container::builder(&store, &image)
        .user("appuser")
        .no_new_privileges(false)
        .command("sh")
        .args(["-c", back])
        .output()
        .unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("0\nCapPrm:\t{DEFAULT_SET}\nCapEff:\t{DEFAULT_SET}\nCapBnd:\t{DEFAULT_SET}\n")
    );
    // With no_new_privs (molde's default) the setuid bit gives nothing: su fails.
    let out = Container::builder(&store, &image)
        .user("appuser")
        .command("sh")
        .args(["-c", back])
        .output()
        .unwrap();
    assert!(!out.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).starts_with("0\n"));
}
