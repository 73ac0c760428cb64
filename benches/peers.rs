//! molde against its peers, measured in the same run (`cargo xtask bench`).
//!
//! Every figure is a ratio molde/peer: runs are interleaved (A B A B ...), each pair gives one
//! ratio, and the figure is the median of the pairs' ratios (medians of each side are printed
//! too). molde runs as users run it: a Rust program (this binary, re-executed in a child mode)
//! calling the library; the peers run as their command lines. Peak RSS of every molde run is
//! taken from the child's own `getrusage`.
//!
//! Output: one line per figure,
//! `BENCH <name> ratio=<molde/peer> goal=<=<value> <met|MISSED> (molde <median> vs <peer> <median>)`
//! (`goal=none reported` for a figure only reported),
//! and the same table with the machine and the exact commands in docs/benchmarks.md.
//!
//! Options (after `cargo xtask bench --`): `--pairs N` (default 30), `--only NAME[,NAME]`,
//! `--no-write` (do not rewrite docs/benchmarks.md). With `MOLDE_BENCH_CPU=1` in the
//! environment, the CPU time of each child and peer run is printed to stderr.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use molde::layerfs::apply::{ApplyOptions, apply};
use molde::layerfs::diff::{DiffOptions, naive, native};
use molde::layerfs::mount::{Mount, OverlayMount, unmount};
use molde::layerfs::view::UnionView;
use molde::layerfs::{Digest, Format, OverlayXattr};

#[path = "peers/build.rs"]
mod build;
#[path = "peers/dockerfile.rs"]
mod dockerfile;
#[path = "peers/harness.rs"]
mod harness;
#[path = "peers/network.rs"]
mod network;
#[path = "peers/pg_podman.rs"]
mod pg_podman;
#[path = "peers/pg_testcontainers.rs"]
mod pg_testcontainers;
#[path = "../registry/tests/common/mod.rs"]
mod regcommon;
#[path = "peers/registry.rs"]
mod registry;
#[path = "peers/start.rs"]
mod start;
#[path = "peers/tty.rs"]
mod tty;

/// Files in the apply fixture layer.
const FILES: usize = 20_000;
/// Files per directory in the fixture.
const PER_DIR: usize = 100;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(&args[1..]);
        return;
    }
    let mut pairs = 30usize;
    let mut only: Option<Vec<String>> = None;
    let mut write_doc = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pairs" => pairs = it.next().and_then(|n| n.parse().ok()).expect("--pairs N"),
            "--only" => only = it.next().map(|s| s.split(',').map(str::to_owned).collect()),
            "--no-write" => write_doc = false,
            "--bench" => {}
            other => panic!("unknown option {other:?}"),
        }
    }
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|n| n == name));
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "the benchmarks mount a fresh tmpfs per run and overlay mounts: run them as root"
        );
        std::process::exit(2);
    }

    let fixtures = fixtures_dir();
    let mut run = Run::default();
    if ["apply-tar", "apply-floor", "apply-umoci", "commit-1pct"]
        .iter()
        .any(|n| wanted(n))
    {
        run.group("apply", || {
            let layer = layer_fixture(&fixtures);
            let mut figures = Vec::new();
            if wanted("apply-tar") {
                figures.push(apply_tar(&layer, pairs));
            }
            if wanted("apply-floor") {
                figures.push(apply_floor(&layer, pairs));
            }
            if wanted("apply-umoci") {
                figures.push(apply_umoci(&layer, pairs));
            }
            if wanted("commit-1pct") {
                figures.extend(commit_1pct(&layer, pairs));
            }
            figures
        });
    }
    if wanted("digest") {
        run.group("digest", || vec![digest(&fixtures, pairs)]);
    }
    {
        // The start figures' store (image, unpacked layers, writable layers) is on disk: a
        // fresh ext4 made for this run (see FreshExt4).
        let disk = FreshExt4::new();
        run.group("start", || start::figures(&disk.path(), pairs, &wanted));
        run.group("tty", || tty::figures(&disk.path(), pairs, &wanted));
        run.group("network", || network::figures(&disk.path(), pairs, &wanted));
    }
    run.group("build", || build::figures(&fixtures, pairs, &wanted));
    run.group("dockerfile", || {
        dockerfile::figures(&fixtures, pairs, &wanted)
    });
    run.group("harness", || harness::figures(pairs, &wanted));
    run.group("testcontainers", || {
        harness::testcontainers_figures(pairs, &wanted)
    });
    run.group("registry", || registry::figures(&fixtures, pairs, &wanted));
    for f in &run.figures {
        println!("{}", f.line());
    }
    if write_doc && only.is_none() {
        let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks.md");
        fs::write(&doc, report(&run.figures, &run.failed, pairs))
            .expect("write docs/benchmarks.md");
        eprintln!("wrote {}", doc.display());
    }
    if !run.failed.is_empty() {
        eprintln!("failed groups: {:?}", run.failed);
        std::process::exit(1);
    }
}

/// The figures made so far, and the groups that failed. A group that panics is reported
/// and the run goes on with the next one, so that one failure loses only its own figures.
#[derive(Default)]
struct Run {
    figures: Vec<Figure>,
    failed: Vec<(String, String)>,
}

impl Run {
    fn group(&mut self, name: &str, f: impl FnOnce() -> Vec<Figure>) {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(figures) => {
                // Each line as soon as its group ends: a later failure loses nothing here.
                for fig in &figures {
                    eprintln!("{}", fig.line());
                }
                self.figures.extend(figures);
            }
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "a panic".to_owned());
                eprintln!("BENCH group {name} FAILED: {why}");
                self.failed.push((name.to_owned(), why));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Child mode: one molde operation, then print "rss_kib=<peak RSS>" on stdout.

fn child(args: &[String]) {
    match args.first().map(String::as_str) {
        Some("pull" | "push") => registry::child(args),
        Some("apply") => {
            let file = File::open(&args[1]).expect("open layer");
            let report = apply(
                file,
                Path::new(&args[2]),
                &ApplyOptions::for_current_process(Format::Flat),
            )
            .expect("apply");
            eprintln!("diff_id={}", report.diff_id);
        }
        Some("native-diff") => {
            let lowers = UnionView::new(vec![PathBuf::from(&args[2])], None, OverlayXattr::Trusted);
            native(Path::new(&args[1]), &lowers, io::sink(), &diff_options()).expect("native diff");
        }
        Some("native-diff-gz") => {
            let lowers = UnionView::new(vec![PathBuf::from(&args[2])], None, OverlayXattr::Trusted);
            let out = File::create(&args[3]).expect("create the layer file");
            let mut gz =
                flate2::write::GzEncoder::new(BufWriter::new(out), flate2::Compression::new(6));
            native(Path::new(&args[1]), &lowers, &mut gz, &diff_options()).expect("native diff");
            gz.finish().expect("gzip").flush().expect("write the layer");
        }
        Some("full-diff") => {
            let base = UnionView::new(vec![PathBuf::from(&args[2])], None, OverlayXattr::Trusted);
            naive(&base, Path::new(&args[1]), io::sink(), &diff_options()).expect("full diff");
        }
        Some("digest") => {
            let (d, _) = Digest::of_reader(File::open(&args[1]).expect("open")).expect("read");
            eprintln!("{d}");
        }
        other => panic!("unknown child command {other:?}"),
    }
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    println!("rss_kib={}", usage.max_rss());
}

/// This process's peak resident memory so far, in KiB.
fn peak_rss_kib() -> u64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map_or(0, |u| u.max_rss() as u64)
}

fn diff_options() -> DiffOptions {
    DiffOptions {
        mtime_clamp: None,
        xattr: OverlayXattr::Trusted,
        owners: None,
    }
}

/// Run this binary in child mode; its wall time and peak RSS.
fn run_child(args: &[&str]) -> (Duration, u64) {
    let exe = std::env::current_exe().expect("current exe");
    let cpu = children_cpu();
    let start = Instant::now();
    let out = Command::new(exe)
        .arg("--child")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("spawn child");
    let took = start.elapsed();
    report_cpu(&format!("molde {}", args[0]), cpu);
    assert!(out.status.success(), "molde child {args:?} failed");
    let rss = String::from_utf8_lossy(&out.stdout)
        .trim()
        .strip_prefix("rss_kib=")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (took, rss)
}

/// CPU time (user + system) of the children waited for so far.
fn children_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::new(t.tv_sec().max(0) as u64, (t.tv_usec().max(0) * 1000) as u32)
    };
    getrusage(UsageWho::RUSAGE_CHILDREN)
        .map(|u| tv(u.user_time()) + tv(u.system_time()))
        .unwrap_or_default()
}

/// With `MOLDE_BENCH_CPU` set, print the CPU time of the child just waited for (what a
/// loaded machine can compare fairly, where wall times follow the load).
fn report_cpu(what: &str, before: Duration) {
    if std::env::var_os("MOLDE_BENCH_CPU").is_some() {
        let ms = (children_cpu() - before).as_secs_f64() * 1e3;
        eprintln!("cpu {what}: {ms:.0} ms");
    }
}

/// Run a peer command line; its wall time.
fn run_peer(cmd: &mut Command) -> Duration {
    let cpu = children_cpu();
    let start = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("spawn peer");
    let took = start.elapsed();
    report_cpu(&cmd.get_program().to_string_lossy(), cpu);
    assert!(status.success(), "peer {cmd:?} failed");
    took
}

// ---------------------------------------------------------------------------------------------
// Figures.

struct Figure {
    name: &'static str,
    peer: &'static str,
    goal: f64,
    ratios: Vec<f64>,
    molde: Vec<Duration>,
    peers: Vec<Duration>,
    rss_kib: u64,
    molde_cmd: String,
    peer_cmd: String,
    note: String,
}

impl Figure {
    fn ratio(&self) -> f64 {
        median_f(&self.ratios)
    }
    fn met(&self) -> bool {
        self.ratio() <= self.goal
    }
    /// The goal as printed: `<= X`, or `none` for a figure only reported (an infinite goal).
    fn goal_text(&self) -> String {
        if self.goal.is_finite() {
            format!("<={}", self.goal)
        } else {
            "none".to_owned()
        }
    }
    fn status(&self) -> &'static str {
        match (self.goal.is_finite(), self.met()) {
            (false, _) => "reported",
            (true, true) => "met",
            (true, false) => "MISSED",
        }
    }
    fn line(&self) -> String {
        format!(
            "BENCH {} ratio={:.3} goal={} {} (molde {} vs {} {})",
            self.name,
            self.ratio(),
            self.goal_text(),
            self.status(),
            fmt_d(median_d(&self.molde)),
            self.peer,
            fmt_d(median_d(&self.peers)),
        )
    }
}

fn median_f(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median_d(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn fmt_d(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.3}s", d.as_secs_f64())
    } else {
        format!("{:.2}ms", d.as_secs_f64() * 1000.0)
    }
}

/// A fresh tmpfs mounted on a new temporary directory, unmounted and removed on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new() -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("molde-bench-")
            .tempdir()
            .expect("tempdir");
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=80%"),
        )
        .expect("mount tmpfs");
        Tmpfs { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A fresh ext4 (made by `mkfs.ext4` with its defaults, journal included, and mounted
/// without `discard`: the file system of a typical host's /var/lib) on a loop device over a
/// sparse file in /var/tmp, unmounted and removed on drop. This VM's root ext4 has no journal
/// and is mounted `discard`: there every block a container frees is a synchronous TRIM, and
/// every new inode skips all those freed in the last minutes (`recently_deleted`), so a
/// figure measured on it drifts with whatever ran before; no peer writes to disk to start a
/// container, so the drift is molde's alone. docs/benchmarks-analysis.md gives the root ext4's
/// figures too.
struct FreshExt4 {
    dir: tempfile::TempDir,
}

impl FreshExt4 {
    fn new() -> FreshExt4 {
        let dir = tempfile::Builder::new()
            .prefix("molde-bench-ext4-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let image = dir.path().join("fs.img");
        fs::File::create(&image)
            .and_then(|f| f.set_len(4 << 30))
            .expect("sparse file for the ext4");
        let ok = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&image)
            .status()
            .expect("mkfs.ext4 (apt-get install e2fsprogs)")
            .success();
        assert!(ok, "mkfs.ext4 failed");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let ok = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mnt)
            .status()
            .expect("mount -o loop")
            .success();
        assert!(ok, "mount -o loop failed");
        FreshExt4 { dir }
    }
    fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for FreshExt4 {
    fn drop(&mut self) {
        // The loop device was set up with autoclear: it goes with the mount.
        let _ = nix::mount::umount2(&self.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Interleave `pairs` runs of molde and the peer, alternating which goes first.
fn interleave(
    pairs: usize,
    mut molde: impl FnMut() -> (Duration, u64),
    mut peer: impl FnMut() -> Duration,
) -> (Vec<f64>, Vec<Duration>, Vec<Duration>, u64) {
    let (mut ratios, mut ms, mut ps, mut rss) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for i in 0..pairs {
        let (m, p) = if i % 2 == 0 {
            let m = molde();
            (m, peer())
        } else {
            let p = peer();
            (molde(), p)
        };
        rss = rss.max(m.1);
        ratios.push(m.0.as_secs_f64() / p.as_secs_f64());
        ms.push(m.0);
        ps.push(p);
        eprint!(".");
    }
    eprintln!();
    (ratios, ms, ps, rss)
}

struct LayerFixture {
    tar: PathBuf,
    gz: PathBuf,
    layout: PathBuf,
    bytes: u64,
}

fn apply_tar(layer: &LayerFixture, pairs: usize) -> Figure {
    eprintln!("apply-tar: molde apply vs tar -x ({pairs} pairs)");
    let tar = layer.tar.to_str().unwrap();
    let (ratios, molde, peers, rss) = interleave(
        pairs,
        || {
            let fs = Tmpfs::new();
            run_child(&["apply", tar, fs.path().to_str().unwrap()])
        },
        || {
            let fs = Tmpfs::new();
            run_peer(Command::new("tar").args(["-xf", tar, "-C"]).arg(fs.path()))
        },
    );
    Figure {
        name: "apply-tar",
        peer: "tar -x",
        goal: 1.2,
        ratios,
        molde,
        peers,
        rss_kib: rss,
        molde_cmd: "molde_layerfs::apply::apply(<layer.tar>, <fresh tmpfs>, Flat)".into(),
        peer_cmd: "tar -xf layer.tar -C <fresh tmpfs>".into(),
        note: format!("{FILES} files, {} MB uncompressed", layer.bytes / 1_000_000),
    }
}

/// `apply-floor`: a verified apply cannot beat the slower of its two streams, writing the tree
/// and hashing its bytes (DESIGN.md, "apply-tar's limit"): molde's apply against the larger
/// of `tar -x` and `sha256sum` of the same tar, both timed in the same pair.
fn apply_floor(layer: &LayerFixture, pairs: usize) -> Figure {
    eprintln!("apply-floor: molde apply vs max(tar -x, sha256sum) ({pairs} pairs)");
    let tar = layer.tar.to_str().unwrap();
    let (ratios, molde, peers, rss) = interleave(
        pairs,
        || {
            let fs = Tmpfs::new();
            run_child(&["apply", tar, fs.path().to_str().unwrap()])
        },
        || {
            let fs = Tmpfs::new();
            let x = run_peer(Command::new("tar").args(["-xf", tar, "-C"]).arg(fs.path()));
            let h = run_peer(Command::new("sha256sum").arg(tar));
            x.max(h)
        },
    );
    Figure {
        name: "apply-floor",
        peer: "max(tar -x, sha256sum)",
        goal: 1.1,
        ratios,
        molde,
        peers,
        rss_kib: rss,
        molde_cmd: "molde_layerfs::apply::apply(<layer.tar>, <fresh tmpfs>, Flat)".into(),
        peer_cmd: "max(tar -xf layer.tar -C <fresh tmpfs>, sha256sum layer.tar), timed apart"
            .into(),
        note: format!("{FILES} files, {} MB uncompressed", layer.bytes / 1_000_000),
    }
}

fn apply_umoci(layer: &LayerFixture, pairs: usize) -> Figure {
    eprintln!("apply-umoci: molde apply of the gzip blob vs umoci raw unpack ({pairs} pairs)");
    let gz = layer.gz.to_str().unwrap();
    let image = format!("{}:bench", layer.layout.display());
    let (ratios, molde, peers, rss) = interleave(
        pairs,
        || {
            let fs = Tmpfs::new();
            run_child(&["apply", gz, fs.path().to_str().unwrap()])
        },
        || {
            let fs = Tmpfs::new();
            run_peer(
                Command::new("umoci")
                    .args(["raw", "unpack", "--image", &image])
                    .arg(fs.path().join("rootfs")),
            )
        },
    );
    Figure {
        name: "apply-umoci",
        peer: "umoci raw unpack",
        goal: 0.4,
        ratios,
        molde,
        peers,
        rss_kib: rss,
        molde_cmd: "molde_layerfs::apply::apply(<layer.tar.gz>, <fresh tmpfs>, Flat)".into(),
        peer_cmd: "umoci raw unpack --image <layout>:bench <fresh tmpfs>/rootfs".into(),
        note: "the same layer, gzip level 6".into(),
    }
}

fn commit_1pct(layer: &LayerFixture, pairs: usize) -> Vec<Figure> {
    eprintln!("commit-1pct: native diff after a 1% change vs a full diff ({pairs} pairs)");
    let fs = Tmpfs::new();
    let lower = fs.path().join("lower");
    let upper = fs.path().join("upper");
    let work = fs.path().join("work");
    let merged = fs.path().join("merged");
    for d in [&lower, &upper, &work, &merged] {
        fs::create_dir(d).unwrap();
    }
    apply(
        File::open(&layer.tar).unwrap(),
        &lower,
        &ApplyOptions::for_current_process(Format::Overlay(OverlayXattr::Trusted)),
    )
    .expect("apply fixture");
    let mount = Mount::Overlay(OverlayMount {
        lowerdirs: vec![lower.clone()],
        upperdir: Some(upper.clone()),
        workdir: Some(work.clone()),
        userxattr: false,
        volatile: false,
    });
    mount.mount_at(&merged).expect("overlay mount");
    // Change 1% of the files: rewrite one file in every hundred.
    for i in (0..FILES).step_by(100) {
        let p = merged.join(fixture_path(i));
        fs::write(&p, format!("changed {i}")).unwrap();
    }
    let (upper_s, lower_s, merged_s) = (
        upper.to_str().unwrap(),
        lower.to_str().unwrap(),
        merged.to_str().unwrap(),
    );
    let (ratios, molde, peers, rss) = interleave(
        pairs,
        || run_child(&["native-diff", upper_s, lower_s]),
        || run_child(&["full-diff", merged_s, lower_s]).0,
    );
    unmount(&merged).expect("unmount");
    let own = Figure {
        name: "commit-1pct",
        peer: "molde full diff",
        goal: 0.05,
        ratios,
        molde,
        peers,
        rss_kib: rss,
        molde_cmd: "molde_layerfs::diff::native(<upper>, <lower>) after rewriting 1% of files"
            .into(),
        peer_cmd: "molde_layerfs::diff::naive(<lower>, <merged overlay>) of the same change".into(),
        note: "output to a sink".into(),
    };
    vec![own, commit_umoci(layer, &fs, &upper, &lower, pairs)]
}

/// `commit-umoci`: the same 1% change committed as a gzip layer by molde's native diff, against
/// `umoci repack` of a bundle that `umoci unpack` made from the same image, with the same change.
fn commit_umoci(
    layer: &LayerFixture,
    fs_: &Tmpfs,
    upper: &Path,
    lower: &Path,
    pairs: usize,
) -> Figure {
    eprintln!(
        "commit-umoci: molde native diff + gzip vs umoci repack of a 1% change ({pairs} pairs)"
    );
    let layout = fs_.path().join("layout");
    let status = Command::new("cp")
        .args(["-a", "--no-target-directory"])
        .arg(&layer.layout)
        .arg(&layout)
        .status()
        .expect("cp");
    assert!(status.success());
    let bundle = fs_.path().join("bundle");
    let image = format!("{}:bench", layout.display());
    run_peer(
        Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle),
    );
    for i in (0..FILES).step_by(100) {
        fs::write(
            bundle.join("rootfs").join(fixture_path(i)),
            format!("changed {i}"),
        )
        .unwrap();
    }
    let out = fs_.path().join("layer.tar.gz");
    let (u, l, o) = (
        upper.to_str().unwrap(),
        lower.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let repacked = format!("{}:repacked", layout.display());
    let (ratios, molde, peers, rss) = interleave(
        pairs,
        || run_child(&["native-diff-gz", u, l, o]),
        || {
            run_peer(
                Command::new("umoci")
                    .args(["repack", "--image", &repacked])
                    .arg(&bundle),
            )
        },
    );
    Figure {
        name: "commit-umoci",
        peer: "umoci repack",
        goal: 0.05,
        ratios,
        molde,
        peers,
        rss_kib: rss,
        molde_cmd: "molde_layerfs::diff::native(<upper>, <lower>) into a gzip file".into(),
        peer_cmd: "umoci repack --image <layout>:repacked <bundle> after the same 1% change".into(),
        note: "200 of 20,000 files rewritten; both write a gzip layer (level 6)".into(),
    }
}

fn digest(fixtures: &Path, pairs: usize) -> Figure {
    let blob = fixtures.join("random-1g.bin");
    if !blob.exists() {
        eprintln!("making {}", blob.display());
        let mut w = BufWriter::new(File::create(&blob).unwrap());
        let mut rng = XorShift(0x9e3779b97f4a7c15);
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            rng.fill(&mut buf);
            w.write_all(&buf).unwrap();
        }
        w.flush().unwrap();
    }
    // Warm the page cache so both sides read from memory.
    io::copy(&mut File::open(&blob).unwrap(), &mut io::sink()).unwrap();
    eprintln!("digest: molde sha256 vs openssl dgst -sha256 of 1 GiB ({pairs} pairs)");
    let b = blob.to_str().unwrap();
    let (ratios, molde, peers, rss) = interleave(
        pairs,
        || run_child(&["digest", b]),
        || run_peer(Command::new("openssl").args(["dgst", "-sha256", b])),
    );
    Figure {
        name: "digest",
        peer: "openssl dgst -sha256",
        goal: 1.05,
        ratios,
        molde,
        peers,
        rss_kib: rss,
        molde_cmd: "molde_layerfs::Digest::of_reader(<1 GiB file>)".into(),
        peer_cmd: "openssl dgst -sha256 <1 GiB file>".into(),
        note: "file in the page cache".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

fn fixtures_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-fixtures");
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture_path(i: usize) -> PathBuf {
    PathBuf::from(format!("d{:03}/f{:05}.dat", i / PER_DIR, i))
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A 20,000-file, ~500 MB layer (sizes spread from a few bytes to ~110 KB, half-compressible
/// content), its gzip blob, and an OCI layout holding it for umoci.
fn layer_fixture(dir: &Path) -> LayerFixture {
    let tar_path = dir.join("layer.tar");
    let gz_path = dir.join("layer.tar.gz");
    let layout = dir.join("layout");
    if !tar_path.exists() {
        eprintln!("making {}", tar_path.display());
        let tmp = dir.join("layer.tar.tmp");
        let mut b = tar::Builder::new(BufWriter::new(File::create(&tmp).unwrap()));
        let mut rng = XorShift(42);
        let mut data = vec![0u8; 128 * 1024];
        for d in 0..FILES / PER_DIR {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_mtime(1_700_000_000);
            b.append_data(&mut h, format!("d{d:03}/"), io::empty())
                .unwrap();
        }
        for i in 0..FILES {
            // Mean ~27 KB: 546 MB over 20,000 files, like the issue's reference layer.
            let size = (rng.next() % 54_600) as usize + 1;
            // Half random, half repeated: gzip has something to do.
            rng.fill(&mut data[..size / 2]);
            for (j, byte) in data.iter_mut().enumerate().take(size).skip(size / 2) {
                *byte = b"molde layer content "[j % 20];
            }
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(size as u64);
            h.set_mtime(1_700_000_000);
            b.append_data(&mut h, fixture_path(i), &data[..size])
                .unwrap();
        }
        b.into_inner().unwrap().flush().unwrap();
        fs::rename(&tmp, &tar_path).unwrap();
    }
    if !gz_path.exists() || !layout.join("index.json").exists() {
        eprintln!("making {}", gz_path.display());
        let tmp = dir.join("layer.tar.gz.tmp");
        let mut enc = flate2::write::GzEncoder::new(
            BufWriter::new(File::create(&tmp).unwrap()),
            flate2::Compression::new(6),
        );
        io::copy(&mut File::open(&tar_path).unwrap(), &mut enc).unwrap();
        enc.finish().unwrap().flush().unwrap();
        fs::rename(&tmp, &gz_path).unwrap();
        write_layout(&layout, &tar_path, &gz_path);
    }
    LayerFixture {
        bytes: fs::metadata(&tar_path).unwrap().len(),
        tar: tar_path,
        gz: gz_path,
        layout,
    }
}

/// A minimal OCI image layout with one image (tag `bench`) whose one layer is `gz`.
fn write_layout(layout: &Path, tar: &Path, gz: &Path) {
    let _ = fs::remove_dir_all(layout);
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let (diff_id, _) = Digest::of_reader(File::open(tar).unwrap()).unwrap();
    let (gz_digest, gz_size) = Digest::of_reader(File::open(gz).unwrap()).unwrap();
    fs::copy(gz, blobs.join(gz_digest.hex())).unwrap();
    let put = |bytes: &[u8]| -> (Digest, usize) {
        let d = Digest::of(bytes);
        fs::write(blobs.join(d.hex()), bytes).unwrap();
        (d, bytes.len())
    };
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}},"history":[{{"created_by":"molde bench fixture"}}]}}"#
    );
    let (cd, cs) = put(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cs}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{gz_digest}","size":{gz_size}}}]}}"#
    );
    let (md, ms) = put(manifest.as_bytes());
    fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{ms},"annotations":{{"org.opencontainers.image.ref.name":"bench"}}}}]}}"#
        ),
    )
    .unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// docs/benchmarks.md

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024 / 1024);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {mem} GiB RAM, Linux {}",
        kernel.trim()
    )
}

fn tool_version(cmd: &str, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .ok()
        .map(|o| {
            let mut s = String::new();
            o.stdout.as_slice().read_to_string(&mut s).ok();
            s.lines().next().unwrap_or("").trim().to_owned()
        })
        .unwrap_or_default()
}

fn report(figures: &[Figure], failed: &[(String, String)], pairs: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Made by `cargo xtask bench` (which runs `cargo bench --package molde --bench peers`), \
         as root. Each figure is the median of {pairs} interleaved pairs (molde, peer, molde, \
         peer...; the first of each pair alternates) of the ratio molde/peer; lower is better. \
         molde runs as a Rust program calling the library (the bench binary re-executed in a \
         child mode), the peers as their command lines; every extraction goes into a fresh \
         tmpfs, and the start figures' store (image, unpacked layers, writable layers) is on a \
         fresh ext4 (journal, no `discard`) on a loop device. RSS is molde's peak resident \
         memory over the runs.\n"
    );
    let _ = writeln!(s, "Machine: {}  ", machine());
    let _ = writeln!(
        s,
        "Peers: {}; {}; {}\n",
        tool_version("tar", "--version"),
        tool_version("umoci", "--version"),
        tool_version("openssl", "version")
    );
    let _ = writeln!(
        s,
        "| figure | ratio | goal | status | molde median | peer median | molde peak RSS |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for f in figures {
        let _ = writeln!(
            s,
            "| {} | {:.3} | {} | {} | {} | {} ({}) | {} MiB |",
            f.name,
            f.ratio(),
            f.goal_text().replace("<=", "<= "),
            f.status(),
            fmt_d(median_d(&f.molde)),
            fmt_d(median_d(&f.peers)),
            f.peer,
            f.rss_kib / 1024
        );
    }
    for (group, why) in failed {
        let _ = writeln!(
            s,
            "| {group} (every figure of the group) | - | - | FAILED: {why} | - | - | - |"
        );
    }
    let _ = writeln!(s, "\n## Commands\n");
    for f in figures {
        let _ = writeln!(
            s,
            "- **{}** ({}): molde `{}` against `{}`.",
            f.name, f.note, f.molde_cmd, f.peer_cmd
        );
    }
    let _ = writeln!(s, "\n## Output\n\n```");
    for f in figures {
        let _ = writeln!(s, "{}", f.line());
    }
    let _ = writeln!(s, "```");
    // The analysis of missed goals (profiles, what would close them) is written by hand and
    // kept beside the generated figures.
    let notes = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks-analysis.md");
    if let Ok(text) = fs::read_to_string(&notes) {
        let _ = writeln!(s, "\n{}", text.trim_end());
    }
    s
}
