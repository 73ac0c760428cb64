//! Images the real tools make import into molde and run, with the DiffIDs the tools report:
//! an OCI layout from `umoci` (`init`, `new`, `unpack`, `repack`, `config`); what `skopeo copy`
//! makes of it (oci-archive, docker-archive, an OCI layout with zstd layers, and one with
//! zstd:chunked layers, whose skippable frames and annotations molde reads past); and an image
//! `buildah` builds from scratch (`from scratch`, `copy`, `config`, `commit`) and pushes as an
//! oci-archive and a docker-archive. Each goes into a store of its own (a layer found by
//! content in a shared store would not be read again), and its image runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use molde::container::Container;
use molde::image::archive::{self, ImportOptions, oci};
use molde::image::{Image, Store, base};

fn require(ok: bool, why: &str) -> bool {
    if !ok && std::env::var_os("MOLDE_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("MOLDE_REQUIRE_ALL=1 and this test cannot run: {why}");
    }
    if !ok {
        eprintln!("skipping: {why}");
    }
    ok
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

fn tools_or_skip(tools: &[&str]) -> bool {
    tools
        .iter()
        .all(|t| require(have(t), &format!("{t} is not installed")))
        && require(
            base::static_busybox().is_some(),
            "busybox-static is not installed",
        )
}

/// Run a tool; its stdout, or a panic with its stderr.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The DiffIDs skopeo reads in the config of `image` (a transport:reference).
fn skopeo_diff_ids(image: &str) -> Vec<String> {
    let config: serde_json::Value =
        serde_json::from_str(&run("skopeo", &["inspect", "--config", image])).unwrap();
    config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect()
}

fn diff_ids(image: &Image) -> Vec<String> {
    image.diff_ids().iter().map(|d| d.to_string()).collect()
}

/// The image's own command, run in a container: its stdout.
fn run_image(store: &Store, image: &Image) -> String {
    let out = Container::builder(store, image).output().unwrap();
    assert!(out.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An OCI layout `<work>/umoci` with the image `base`: static busybox as `/bin/busybox` and
/// `/bin/sh`, `FOO=bar`, cmd `sh -c 'echo "umoci image $FOO"'`, made by umoci alone.
fn umoci_layout(work: &Path) -> PathBuf {
    let layout = work.join("umoci");
    let bundle = work.join("umoci-bundle");
    let image = format!("{}:base", layout.display());
    run("umoci", &["init", "--layout", path(&layout)]);
    run("umoci", &["new", "--image", &image]);
    let mut unpack = vec!["unpack", "--image", &image, path(&bundle)];
    if !molde::layerfs::privilege::is_privileged() {
        unpack.insert(1, "--rootless");
    }
    run("umoci", &unpack);
    let bin = bundle.join("rootfs/bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(base::static_busybox().unwrap(), bin.join("busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", bin.join("sh")).unwrap();
    run("umoci", &["repack", "--image", &image, path(&bundle)]);
    run(
        "umoci",
        &[
            "config",
            "--image",
            &image,
            "--config.env",
            "FOO=bar",
            "--config.cmd",
            "/bin/sh",
            "--config.cmd",
            "-c",
            "--config.cmd",
            "echo \"umoci image $FOO\"",
        ],
    );
    layout
}

fn import_dir(dir: &Path, repository: &str) -> (Store, Image) {
    let store = Store::temporary().unwrap();
    let options = ImportOptions {
        repository: Some(repository.into()),
    };
    let report = oci::import_dir(&store, dir, &options).unwrap();
    let image = report.images[0].image.clone();
    (store, image)
}

fn import_archive(file: &Path) -> (Store, Image) {
    let store = Store::temporary().unwrap();
    let report = archive::import(
        &store,
        fs::File::open(file).unwrap(),
        &ImportOptions::default(),
    )
    .unwrap();
    let image = report.images[0].image.clone();
    (store, image)
}

#[test]
fn umoci_and_skopeo_images_import_and_run() {
    if !tools_or_skip(&["umoci", "skopeo"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let layout = umoci_layout(work.path());
    let src = format!("oci:{}:base", layout.display());
    let expected = skopeo_diff_ids(&src);
    assert_eq!(expected.len(), 1);

    let (store, image) = import_dir(&layout, "umoci");
    assert_eq!(diff_ids(&image), expected);
    assert_eq!(store.resolve("umoci:base").unwrap().id(), image.id());
    let runs = molde::containers_supported_or_skip();
    if runs {
        assert_eq!(run_image(&store, &image), "umoci image bar\n");
    }

    // What skopeo makes of it, each in a store of its own.
    let archive_dest = |name: &str| work.path().join(name);
    let dir_dest = |name: &str| work.path().join(name);
    let cases: Vec<(&str, Vec<&str>, String, PathBuf)> = vec![
        (
            "oci-archive",
            vec![],
            format!("oci-archive:{}:skopeo:oa", archive_dest("a.tar").display()),
            archive_dest("a.tar"),
        ),
        (
            "docker-archive",
            vec![],
            format!(
                "docker-archive:{}:skopeo:da",
                archive_dest("d.tar").display()
            ),
            archive_dest("d.tar"),
        ),
        (
            "zstd",
            vec!["--dest-compress-format", "zstd"],
            format!("oci:{}:zst", dir_dest("zstd").display()),
            dir_dest("zstd"),
        ),
        (
            "zstd:chunked",
            vec!["--dest-compress-format", "zstd:chunked"],
            format!("oci:{}:chunked", dir_dest("chunked").display()),
            dir_dest("chunked"),
        ),
        (
            "uncompressed",
            vec!["--dest-oci-accept-uncompressed-layers"],
            format!("oci:{}:plain", dir_dest("plain").display()),
            dir_dest("plain"),
        ),
    ];
    for (what, options, dest, file) in cases {
        let mut args = vec!["--insecure-policy", "copy", "--quiet"];
        args.extend(options);
        args.extend([src.as_str(), dest.as_str()]);
        run("skopeo", &args);
        assert_eq!(skopeo_diff_ids(&dest), expected, "{what}");
        let (store, image) = if file.is_dir() {
            import_dir(&file, "skopeo")
        } else {
            import_archive(&file)
        };
        assert_eq!(diff_ids(&image), expected, "{what}");
        if what.starts_with("zstd") {
            let media = image.layers()[0].media_type;
            assert_eq!(media, molde::image::LayerMediaType::Zstd, "{what}");
        }
        if runs {
            assert_eq!(run_image(&store, &image), "umoci image bar\n", "{what}");
        }
    }
}

/// buildah on its own storage under a temp dir (vfs: plain directories, nothing mounted).
struct Buildah {
    dir: tempfile::TempDir,
}

impl Buildah {
    fn cmd(&self) -> Command {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(["--storage-driver", "vfs"]);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "buildah {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Buildah {
    fn drop(&mut self) {
        // vfs: plain directories, which the temp dir takes with it once buildah forgot them.
        let _ = self.cmd().args(["rm", "--all"]).output();
        let _ = self.cmd().args(["rmi", "--all", "--force"]).output();
    }
}

#[test]
fn a_buildah_image_from_scratch_imports_and_runs() {
    if !tools_or_skip(&["buildah"])
        || !require(
            molde::layerfs::privilege::is_privileged(),
            "buildah on private storage runs as root here (rootless, it needs a user \
             namespace of its own set up)",
        )
    {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let buildah = Buildah {
        dir: tempfile::tempdir().unwrap(),
    };
    let bb = base::static_busybox().unwrap();
    let c = buildah.run(&["from", "scratch"]);
    buildah.run(&["copy", &c, path(&bb), "/bin/busybox"]);
    buildah.run(&[
        "config",
        "--env",
        "FOO=baz",
        "--workingdir",
        "/bin",
        "--cmd",
        r#"["/bin/busybox", "sh", "-c", "echo \"buildah image $FOO in $(/bin/busybox pwd)\""]"#,
        &c,
    ]);
    buildah.run(&["commit", "--quiet", &c, "molde-test-scratch"]);
    let reported = buildah.run(&[
        "inspect",
        "--format",
        "{{range .OCIv1.RootFS.DiffIDs}}{{.}} {{end}}",
        "molde-test-scratch",
    ]);
    let expected: Vec<String> = reported.split_whitespace().map(str::to_owned).collect();
    assert_eq!(expected.len(), 1, "{reported}");
    let runs = molde::containers_supported_or_skip();
    for transport in ["oci-archive", "docker-archive"] {
        let file = work.path().join(format!("{transport}.tar"));
        buildah.run(&[
            "push",
            "--quiet",
            "molde-test-scratch",
            &format!("{transport}:{}:scratch:1", file.display()),
        ]);
        let (store, image) = import_archive(&file);
        assert_eq!(diff_ids(&image), expected, "{transport}");
        if runs {
            assert_eq!(
                run_image(&store, &image),
                "buildah image baz in /bin\n",
                "{transport}"
            );
        }
    }
}
