//! The same Dockerfiles built by molde and by `buildah bud` (Debian's buildah, vfs storage,
//! chroot isolation) on the same base (a busybox-static image molde exports as an
//! oci-archive and buildah pulls) give the same file tree (union views compared entry by
//! entry: type, mode, owner, content, link target) and the same config fields.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use molde_container::build::dockerfile::Dockerfile;
use molde_container::build::{Build, Copy};
use molde_image::{Image, Store};
use molde_layerfs::Digest;

const APPLETS: &[&str] = &["sed", "chmod", "mkdir", "cp", "test", "touch", "rm", "ln"];

/// buildah on its own storage under `dir`.
struct Buildah {
    root: tempfile::TempDir,
}

impl Buildah {
    fn cmd(&self) -> Command {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(self.root.path().join("root"))
            .arg("--runroot")
            .arg(self.root.path().join("run"))
            .arg("--storage-driver")
            .arg("vfs");
        c
    }
    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("running buildah");
        assert!(
            out.status.success(),
            "buildah {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Buildah {
    fn drop(&mut self) {
        // vfs layers are plain directories; buildah leaves nothing mounted after bud/push.
        let _ = self.cmd().args(["rmi", "--all", "--force"]).output();
    }
}

/// Every entry of an image's union: path -> type, mode, owner, content digest / link target.
fn tree(store: &Store, image: &Image) -> BTreeMap<String, String> {
    let unpacked = molde_image::unpack::unpack(store, image).unwrap();
    let lowers = unpacked.into_iter().rev().map(|u| u.path).collect();
    let view = molde_layerfs::view::UnionView::new(
        lowers,
        None,
        molde_layerfs::OverlayXattr::for_current_process(),
    );
    let mut out = BTreeMap::new();
    view.walk(|rel, e| {
        use std::os::unix::fs::MetadataExt;
        let m = &e.metadata;
        let abs = Path::new("/").join(rel);
        let what = if m.is_file() {
            format!("file {}", Digest::of(&view.read(&abs)?))
        } else if m.file_type().is_symlink() {
            format!("link {}", view.read_link(&abs)?.display())
        } else if m.is_dir() {
            "dir".to_owned()
        } else {
            format!("other {:o}", m.mode() & 0o170000)
        };
        out.insert(
            rel.display().to_string(),
            format!(
                "{what} mode {:o} owner {}:{}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            ),
        );
        Ok(())
    })
    .unwrap();
    out
}

/// The config fields both builders write (buildah's own label left out; an empty string or
/// list, as buildah writes them, is the field's absence).
fn config(image: &Image) -> String {
    let set = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(str::to_owned);
    let field = |k: &str| {
        image
            .docker_field(k)
            .filter(|v| v.as_array().is_none_or(|a| !a.is_empty()))
            .cloned()
    };
    let mut labels = image.labels();
    labels.remove("io.buildah.version");
    let labels: BTreeMap<_, _> = labels.into_iter().collect();
    format!(
        "env {:?}\ncmd {:?}\nentrypoint {:?}\nworkdir {:?}\nuser {:?}\nports {:?}\nvolumes {:?}\nlabels {labels:?}\nstop {:?}\nhealth {:?}\nonbuild {:?}",
        image.env(),
        image.cmd(),
        image.entrypoint(),
        set(image.working_dir()),
        set(image.user()),
        image.exposed_ports(),
        image.volumes(),
        image.stop_signal(),
        field("Healthcheck"),
        field("OnBuild"),
    )
}

const CASES: &[(&str, &str)] = &[
    (
        "multi-stage",
        r#"FROM busybox:test AS builder
WORKDIR /src
COPY hello.sh.in .
RUN sed 's/@NAME@/molde/' hello.sh.in > hello.sh && chmod 755 hello.sh
FROM busybox:test AS assets
COPY assets/ /assets/
RUN ln -s /assets/a.txt /assets/link && mkdir -p /assets/empty
FROM busybox:test
COPY --from=builder /src/hello.sh /usr/local/bin/hello
COPY --from=assets /assets /srv/assets
COPY --chmod=600 assets/a.txt /etc/a.txt
ENTRYPOINT ["/usr/local/bin/hello"]
"#,
    ),
    (
        "config",
        r#"FROM busybox:test
ARG VERSION=1.2
ENV APP=/app MODE=prod
WORKDIR $APP
LABEL version=$VERSION org.example.name="the app"
EXPOSE 8080 53/udp
VOLUME ["/data"]
USER 1000:1000
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --timeout=2s --retries=3 CMD ["/bin/true"]
ONBUILD RUN echo child
CMD ["run", "--fast"]
"#,
    ),
];

#[test]
fn molde_and_buildah_build_the_same_images() {
    if !common::require(common::privileged(), "needs root to run build containers")
        || !common::require(
            common::have_tool("buildah"),
            "needs buildah (apt-get install buildah)",
        )
    {
        return;
    }
    let Some(root) = common::busybox::ready(APPLETS) else {
        return;
    };
    let store = Store::temporary().unwrap();
    Build::scratch()
        .copy(Copy::new(root.path(), "/"))
        .env("PATH", "/usr/local/bin:/bin")
        .source_date_epoch(1_700_000_000)
        .build(&store, "busybox:test")
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let base_tar = work.path().join("base.tar");
    let mut f = fs::File::create(&base_tar).unwrap();
    molde_image::archive::oci::export_archive(&store, &["busybox:test"], &mut f).unwrap();
    drop(f);
    let buildah = Buildah {
        root: tempfile::tempdir().unwrap(),
    };
    let id = buildah.run(&["pull", "-q", &format!("oci-archive:{}", base_tar.display())]);
    buildah.run(&["tag", id.trim(), "localhost/busybox:test"]);

    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("hello.sh.in"),
        "#!/bin/sh\necho hello @NAME@\n",
    )
    .unwrap();
    fs::create_dir(ctx.path().join("assets")).unwrap();
    fs::write(ctx.path().join("assets/a.txt"), "a\n").unwrap();
    fs::write(ctx.path().join("assets/b.txt"), "b\n").unwrap();
    for (name, text) in CASES {
        fs::write(ctx.path().join("Dockerfile"), text).unwrap();
        let ours = Dockerfile::parse(text, ctx.path(), &[])
            .unwrap()
            .into_build(&store)
            .unwrap()
            .build(&store, &format!("molde-{name}:1"))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .image;
        let tag = format!("localhost/buildah-{name}:1");
        buildah.run(&[
            "bud",
            "-q",
            "--format",
            "docker",
            "--isolation",
            "chroot",
            "-t",
            &tag,
            &ctx.path().display().to_string(),
        ]);
        let out_tar = work.path().join(format!("{name}.tar"));
        buildah.run(&[
            "push",
            "-q",
            &tag,
            &format!("docker-archive:{}", out_tar.display()),
        ]);
        let theirs = molde_image::archive::import(
            &store,
            fs::File::open(&out_tar).unwrap(),
            &Default::default(),
        )
        .unwrap()
        .images
        .remove(0)
        .image;
        let (a, b) = (tree(&store, &ours), tree(&store, &theirs));
        let diff: Vec<String> = a
            .keys()
            .chain(b.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| format!("{k}: molde {:?} buildah {:?}", a.get(k), b.get(k)))
            .collect();
        assert!(
            diff.is_empty(),
            "{name}: the trees differ:\n{}",
            diff.join("\n")
        );
        assert_eq!(config(&ours), config(&theirs), "{name}: the configs differ");
    }
}
