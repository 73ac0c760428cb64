//! Container start figures: create + start + wait + remove of a container running /bin/true
//! from an image already in the store, against the peers' command lines on the same rootfs.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use molde::container::{Container, Seccomp, Stdio};
use molde::image::base;
use molde::image::unpack::unpack;
use molde::image::{Image, ImageBuilder, Store};

use super::{Figure, interleave, peak_rss_kib, run_peer};

/// What the start figures need: a store with the images, and the same rootfs for the peers.
pub struct StartFixture {
    _dir: tempfile::TempDir,
    store: Store,
    image: Image,
    /// The image's one layer, unpacked: the peers' rootfs (nothing in it is a whiteout).
    rootfs: PathBuf,
    /// An OCI runtime bundle over `rootfs` for crun and runc.
    bundle: PathBuf,
}

impl StartFixture {
    /// Build the image from host binaries (/bin/true, /bin/sleep) in a store on disk.
    pub fn new(base_dir: &Path) -> StartFixture {
        let dir = tempfile::Builder::new()
            .prefix("start-")
            .tempdir_in(base_dir)
            .expect("tempdir");
        let store = Store::open(dir.path().join("store")).expect("store");
        let image = base::from_host(&store, &[Path::new("/bin/true"), Path::new("/bin/sleep")])
            .expect("image from host binaries");
        let layers = unpack(&store, &image).expect("unpack");
        let rootfs = layers[0].path.clone();
        let bundle = dir.path().join("bundle");
        fs::create_dir_all(&bundle).unwrap();
        write_bundle(&bundle, &rootfs);
        StartFixture {
            _dir: dir,
            store,
            image,
            rootfs,
            bundle,
        }
    }

    /// An image of 500 layers: the base and 499 one-file layers on top.
    fn image_500(&self) -> Image {
        let mut builder = ImageBuilder::from_image(&self.image);
        for i in 1..500 {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(8);
            h.set_mtime(0);
            b.append_data(
                &mut h,
                format!("etc/layer-{i:03}"),
                format!("{i:08}").as_bytes(),
            )
            .unwrap();
            let tar = b.into_inner().unwrap();
            let layer = self.store.add_layer(&tar[..]).expect("add layer").layer;
            builder = builder.layer(layer, format!("layer {i}"));
        }
        self.store.commit(builder).expect("commit 500-layer image")
    }
}

/// A minimal OCI runtime config: /bin/true on `rootfs`, the namespaces the other peers get.
fn write_bundle(bundle: &Path, rootfs: &Path) {
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/true"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": "bench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}
            ]
        }
    });
    fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
}

/// create + start + wait + remove of one /bin/true container, timed.
fn molde_true(store: &Store, image: &Image, ephemeral: bool) -> (Duration, u64) {
    molde_true_with(store, image, ephemeral, Seccomp::Default)
}

/// [`molde_true`] under the system call filter `seccomp`.
fn molde_true_with(
    store: &Store,
    image: &Image,
    ephemeral: bool,
    seccomp: Seccomp,
) -> (Duration, u64) {
    let start = Instant::now();
    let mut c = Container::builder(store, image)
        .command("/bin/true")
        .seccomp(seccomp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .ephemeral(ephemeral)
        .create()
        .expect("create");
    c.start().expect("start");
    let status = c.wait().expect("wait");
    c.remove().expect("remove");
    let took = start.elapsed();
    assert!(
        matches!(
            status,
            molde::container::Status::Exited { code: Some(0), .. }
        ),
        "/bin/true failed: {status:?}"
    );
    (took, peak_rss_kib())
}

fn unshare_chroot(rootfs: &Path) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--fork", "--pid", "--mount", "--uts", "--ipc", "--net", "chroot",
    ])
    .arg(rootfs)
    .arg("/bin/true");
    cmd
}

fn bwrap(rootfs: &Path) -> Command {
    let mut cmd = Command::new("bwrap");
    cmd.args(["--unshare-all", "--bind"]).arg(rootfs).args([
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "/bin/true",
    ]);
    cmd
}

/// crun 1.8 refuses this host's v1/v2 hybrid cgroup layout; it runs in a private mount
/// namespace with an empty tmpfs over /sys/fs/cgroup/unified, which changes no cgroup.
fn crun(bundle: &Path, id: usize) -> Command {
    let mut cmd = Command::new("crun");
    cmd.args(["run", "--bundle"])
        .arg(bundle)
        .arg(format!("molde-bench-{}-{id}", std::process::id()));
    if Path::new("/sys/fs/cgroup/unified").is_dir() {
        // SAFETY: between fork and exec the closure makes only async-signal-safe syscalls
        // (unshare, mount) and allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                use nix::mount::{MsFlags, mount};
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
                mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None::<&str>,
                )?;
                mount(
                    Some("tmpfs"),
                    "/sys/fs/cgroup/unified",
                    Some("tmpfs"),
                    MsFlags::empty(),
                    None::<&str>,
                )?;
                Ok(())
            });
        }
    }
    cmd
}

fn runc(bundle: &Path, id: usize) -> Command {
    let mut cmd = Command::new("runc");
    cmd.args(["run", "--bundle"])
        .arg(bundle)
        .arg(format!("molde-bench-{}-{id}", std::process::id()));
    cmd
}

#[allow(clippy::too_many_arguments)]
fn figure(
    name: &'static str,
    peer: &'static str,
    goal: f64,
    pairs: usize,
    molde: impl FnMut() -> (Duration, u64),
    peer_run: impl FnMut() -> Duration,
    molde_cmd: &str,
    peer_cmd: &str,
) -> Figure {
    eprintln!("{name}: molde vs {peer} ({pairs} pairs)");
    let (ratios, m, p, rss) = interleave(pairs, molde, peer_run);
    Figure {
        name,
        peer,
        goal,
        ratios,
        molde: m,
        peers: p,
        rss_kib: rss,
        molde_cmd: molde_cmd.into(),
        peer_cmd: peer_cmd.into(),
        note: "image from host binaries (/bin/true, /bin/sleep); store and writable layer on a \
               fresh ext4 (journal, no discard) on a loop device, unless said"
            .into(),
    }
}

const MOLDE_TRUE: &str = "Container::builder(&store, &image).command(\"/bin/true\").create(); \
                          start(); wait(); remove()";

/// The start figures wanted (by name), each measured with `pairs` interleaved pairs.
pub fn figures(fixtures: &Path, pairs: usize, wanted: &dyn Fn(&str) -> bool) -> Vec<Figure> {
    let names = [
        "start-floor",
        "start-seccomp",
        "start-bwrap",
        "start-crun",
        "start-runc",
        "start-ephemeral",
        "layers-500",
        "start-many",
        "start-host-mounts",
    ];
    if !names.iter().any(|n| wanted(n)) {
        return Vec::new();
    }
    let fx = StartFixture::new(fixtures);
    let (store, image, rootfs, bundle) = (&fx.store, &fx.image, &fx.rootfs, &fx.bundle);
    // Warm up both sides (page cache, first-use costs).
    for _ in 0..3 {
        molde_true(store, image, false);
        run_peer(&mut unshare_chroot(rootfs));
    }
    let mut out = Vec::new();
    let mut id = 0usize;
    let mut next = || {
        id += 1;
        id
    };
    if wanted("start-floor") {
        out.push(figure(
            "start-floor",
            "unshare+chroot",
            0.8,
            pairs,
            || molde_true(store, image, false),
            || run_peer(&mut unshare_chroot(rootfs)),
            MOLDE_TRUE,
            "unshare --fork --pid --mount --uts --ipc --net chroot ROOTFS /bin/true",
        ));
    }
    if wanted("start-seccomp") {
        out.push(figure(
            "start-seccomp",
            "molde unconfined",
            1.05,
            pairs,
            || molde_true(store, image, false),
            || molde_true_with(store, image, false, Seccomp::Unconfined).0,
            "start-floor's run with the default seccomp profile (moby's)",
            "the same with .seccomp(Seccomp::Unconfined)",
        ));
    }
    if wanted("start-bwrap") {
        out.push(figure(
            "start-bwrap",
            "bwrap",
            0.55,
            pairs,
            || molde_true(store, image, false),
            || run_peer(&mut bwrap(rootfs)),
            MOLDE_TRUE,
            "bwrap --unshare-all --bind ROOTFS / --proc /proc --dev /dev --tmpfs /tmp /bin/true",
        ));
    }
    if wanted("start-crun") {
        out.push(figure(
            "start-crun",
            "crun",
            0.3,
            pairs,
            || molde_true(store, image, false),
            || run_peer(&mut crun(bundle, next())),
            MOLDE_TRUE,
            "crun run --bundle BUNDLE ID (private mount ns, tmpfs over /sys/fs/cgroup/unified)",
        ));
    }
    if wanted("start-runc") {
        out.push(figure(
            "start-runc",
            "runc",
            0.1,
            pairs,
            || molde_true(store, image, false),
            || run_peer(&mut runc(bundle, next())),
            MOLDE_TRUE,
            "runc run --bundle BUNDLE ID",
        ));
    }
    if wanted("start-ephemeral") {
        out.push(figure(
            "start-ephemeral",
            "unshare+chroot",
            0.55,
            pairs,
            || molde_true(store, image, true),
            || run_peer(&mut unshare_chroot(rootfs)),
            "the same with .ephemeral(true): writable layer on a tmpfs",
            "unshare --fork --pid --mount --uts --ipc --net chroot ROOTFS /bin/true",
        ));
    }
    if wanted("layers-500") {
        let image500 = fx.image_500();
        molde_true(store, &image500, false);
        out.push(figure(
            "layers-500",
            "molde 1 layer",
            2.0,
            pairs,
            || molde_true(store, &image500, false),
            || molde_true(store, image, false).0,
            "start /bin/true from a 500-layer image",
            "start /bin/true from its 1-layer base",
        ));
    }
    if wanted("start-many") {
        out.push(start_many(store, image, rootfs, pairs));
    }
    if wanted("start-host-mounts") {
        out.push(host_mounts(store, image, pairs));
    }
    out
}

/// Extra mounts in the launching thread's mount namespace for `start-host-mounts`.
const HOST_MOUNTS: usize = 1000;
/// Starts per side of a `start-host-mounts` pair (their median is the side's time).
const STARTS_PER_SIDE: usize = 5;

/// `start-host-mounts`: the same start from a mount namespace holding [`HOST_MOUNTS`] more
/// mounts (a node running other containers, a desktop with snaps) against the host's. The
/// bench's main thread (which launches: the clone happens on it) moves between its own
/// namespace and a private copy with the extra mounts (tmpfs under a temporary directory),
/// so the host's mount table is never touched; both are gone when the figure is done.
fn host_mounts(store: &Store, image: &Image, pairs: usize) -> Figure {
    use nix::mount::{MntFlags, MsFlags};
    use nix::sched::{CloneFlags, setns, unshare};
    let own_ns =
        || fs::File::open("/proc/thread-self/ns/mnt").expect("open this thread's mount namespace");
    let home = own_ns();
    let cwd = std::env::current_dir().expect("cwd");
    unshare(CloneFlags::CLONE_NEWNS).expect("unshare the mount namespace");
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make the copy private");
    let dir = tempfile::tempdir().expect("tempdir");
    nix::mount::mount(
        Some("tmpfs"),
        dir.path(),
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m"),
    )
    .expect("tmpfs for the mount points");
    for i in 0..HOST_MOUNTS {
        let point = dir.path().join(i.to_string());
        fs::create_dir(&point).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &point,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=4k"),
        )
        .expect("extra mount");
    }
    let crowded = own_ns();
    let enter = |ns: &fs::File| {
        setns(ns, CloneFlags::CLONE_NEWNS).expect("setns");
        std::env::set_current_dir(&cwd).expect("cwd");
    };
    // Each side of a pair is the median of a few starts: the first start after the thread
    // changed namespace reads that namespace's mount table once (snapshot removal keeps the
    // calling thread's current namespace's table, parsed), which a program that stays in one
    // namespace pays once.
    let median_of_starts = || {
        let mut runs: Vec<(Duration, u64)> = (0..STARTS_PER_SIDE)
            .map(|_| molde_true(store, image, false))
            .collect();
        runs.sort();
        runs[STARTS_PER_SIDE / 2]
    };
    // Warm up in the crowded namespace (the first launches there may copy it).
    for _ in 0..3 {
        molde_true(store, image, false);
    }
    let figure = figure(
        "start-host-mounts",
        "molde, host's mounts",
        1.15,
        pairs,
        || {
            enter(&crowded);
            median_of_starts()
        },
        || {
            enter(&home);
            median_of_starts().0
        },
        "start /bin/true from a mount namespace with 1000 more mounts (tmpfs; median of 5 \
         starts)",
        "start /bin/true from the bench's own mount namespace (median of 5 starts)",
    );
    // The crowded namespace ends with its last reference.
    enter(&crowded);
    let _ = nix::mount::umount2(dir.path(), MntFlags::MNT_DETACH);
    enter(&home);
    drop(crowded);
    figure
}

/// Containers alive at once in `start-many`.
const MANY: usize = 100;

/// A kernel memory figure: `MemAvailable` in KiB.
fn mem_available_kib() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// The proportional set size of a process, in KiB (0 if gone).
fn pss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// The children of `pid` (all its threads'), from /proc.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Whether a process named `sleep` runs under `pid` (itself included).
fn runs_sleep(pid: u32) -> bool {
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep") {
            return true;
        }
        stack.extend(children(p));
    }
    false
}

/// `start-many`: 100 containers of one image alive at once, each running sleep; the time
/// until all run, against 100 bwrap sandboxes started the same way; and the host memory each
/// container costs beyond its own process.
fn start_many(store: &Store, image: &Image, rootfs: &Path, pairs: usize) -> Figure {
    eprintln!("start-many: {MANY} molde containers vs {MANY} bwrap sandboxes ({pairs} pairs)");
    let per_container = std::cell::RefCell::new(Vec::new());
    let molde = || {
        let before = mem_available_kib();
        let start = Instant::now();
        let mut all = Vec::with_capacity(MANY);
        for _ in 0..MANY {
            let c = Container::builder(store, image)
                .command("/bin/sleep")
                .arg("1000")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .start()
                .expect("start");
            all.push(c);
        }
        // `start` returns once the program is exec'd: all run.
        let took = start.elapsed();
        let after = mem_available_kib();
        let own: u64 = all.iter().filter_map(|c| c.pid()).map(pss_kib).sum();
        // Signed: other processes of the host allocate and free meanwhile, so one sample
        // can come out below zero; the median over the pairs is reported.
        let beyond = before as i64 - after as i64 - own as i64;
        per_container.borrow_mut().push(beyond as f64 / MANY as f64);
        for c in all {
            c.remove().expect("remove");
        }
        (took, peak_rss_kib())
    };
    let peer = || {
        let start = Instant::now();
        let mut all = Vec::with_capacity(MANY);
        for _ in 0..MANY {
            let child = bwrap_sleep(rootfs).spawn().expect("spawn bwrap");
            all.push(child);
        }
        let mut waiting: Vec<u32> = all.iter().map(|c| c.id()).collect();
        while !waiting.is_empty() {
            waiting.retain(|pid| !runs_sleep(*pid));
            if !waiting.is_empty() {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let took = start.elapsed();
        for mut c in all {
            let _ = c.kill();
            let _ = c.wait();
        }
        took
    };
    let (ratios, m, p, rss) = interleave(pairs, molde, peer);
    let mut mem = per_container.into_inner();
    mem.sort_by(f64::total_cmp);
    let mem_kib = mem.get(mem.len() / 2).copied().unwrap_or(0.0);
    eprintln!("start-many: host memory per container beyond its own process: {mem_kib:.0} KiB");
    Figure {
        name: "start-many",
        peer: "bwrap",
        goal: 1.0,
        ratios,
        molde: m,
        peers: p,
        rss_kib: rss,
        molde_cmd: format!(
            "{MANY} x Container::builder(&store, &image).command(\"/bin/sleep\").arg(\"1000\")\
             .start(), all alive; time until the last start returns"
        ),
        peer_cmd: format!(
            "{MANY} x bwrap --unshare-all --die-with-parent --bind ROOTFS / --proc /proc --dev \
             /dev --tmpfs /tmp /bin/sleep 1000, spawned in a row; time until every one runs sleep"
        ),
        note: format!(
            "host memory per container beyond its own process: {:.0} KiB (median over the \
             pairs of (MemAvailable drop - sum of the containers' Pss) / {MANY}; goal < 1024 KiB: {})",
            mem_kib,
            if mem_kib < 1024.0 { "met" } else { "MISSED" }
        ),
    }
}

fn bwrap_sleep(rootfs: &Path) -> Command {
    let mut cmd = Command::new("bwrap");
    cmd.args(["--unshare-all", "--die-with-parent", "--bind"])
        .arg(rootfs)
        .args([
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "/bin/sleep",
            "1000",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}
