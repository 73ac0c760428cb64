//! Property: the in-process [`UnionView`] agrees with a real kernel overlay mount of the same
//! random stack of layers (1 to 5 layers of random files, directories, symlinks, whiteouts and
//! opaque directories in overlay format, the topmost sometimes an upper directory).
//!
//! For every path of the mounted union: the type, size, mode and owner, a regular file's
//! contents, a directory's entry names and a symlink's target must be what the view says; and
//! the view must have no path that the mount does not show.
//!
//! Cases: `PROPTEST_CASES` (default 32).

mod common;
mod mount_support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, lchown};
use std::path::{Path, PathBuf};

use molde_layerfs::OverlayXattr;
use molde_layerfs::mount::{Mount, OverlayMount, overlay_supported};
use molde_layerfs::view::UnionView;
use mount_support::{LayerDir, MountGuard};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const NAMES: [&str; 3] = ["a", "b", "c"];

/// What one entry of a layer is.
#[derive(Debug, Clone)]
enum Kind {
    File { data: Vec<u8>, mode: u32, uid: u32 },
    Dir { mode: u32 },
    Symlink(String),
    Whiteout,
    Opaque,
}

/// An entry: a path of 1 to 3 components over a tiny alphabet (so layers collide), and a kind.
#[derive(Debug, Clone)]
struct Entry {
    path: Vec<usize>,
    kind: Kind,
}

impl Entry {
    fn rel(&self) -> String {
        self.path
            .iter()
            .map(|&i| NAMES[i])
            .collect::<Vec<_>>()
            .join("/")
    }
}

#[derive(Debug, Clone)]
struct Stack {
    /// Layers, topmost first.
    layers: Vec<Vec<Entry>>,
    /// Whether the topmost layer is mounted as the upper directory.
    with_upper: bool,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => (
            proptest::collection::vec(any::<u8>(), 0..48),
            prop::sample::select(vec![0o644u32, 0o600, 0o755, 0o4755, 0o2711]),
            prop::sample::select(vec![0u32, 1000]),
        )
            .prop_map(|(data, mode, uid)| Kind::File { data, mode, uid }),
        3 => prop::sample::select(vec![0o755u32, 0o700, 0o1777]).prop_map(|mode| Kind::Dir { mode }),
        2 => prop::sample::select(vec!["a", "../b", "/a/b", "c/a", "nowhere", "."])
            .prop_map(|t| Kind::Symlink(t.to_string())),
        2 => Just(Kind::Whiteout),
        2 => Just(Kind::Opaque),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (proptest::collection::vec(0..NAMES.len(), 1..=3), kind())
        .prop_map(|(path, kind)| Entry { path, kind })
}

fn stack() -> impl Strategy<Value = Stack> {
    (
        proptest::collection::vec(proptest::collection::vec(entry(), 0..10), 1..=5),
        any::<bool>(),
    )
        .prop_map(|(layers, with_upper)| Stack { layers, with_upper })
}

/// Lay `entries` down in a layer directory, skipping any that cannot coexist with what the
/// layer already has (a path taken, a parent that is not a directory).
fn build_layer(root: &Path, entries: &[Entry]) {
    let layer = LayerDir::new(root, OverlayXattr::Trusted);
    'entries: for entry in entries {
        let rel = entry.rel();
        let path = root.join(&rel);
        // Parents must be (or become) directories of this layer.
        let mut parent = root.to_path_buf();
        for &i in &entry.path[..entry.path.len() - 1] {
            parent.push(NAMES[i]);
            match fs::symlink_metadata(&parent) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => continue 'entries,
                Err(_) => fs::create_dir(&parent).unwrap(),
            }
        }
        if fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        match &entry.kind {
            Kind::File { data, mode, uid } => {
                layer.file(&rel, data, *mode);
                lchown(&path, Some(*uid), Some(*uid)).unwrap();
                // chown clears setuid/setgid: set the mode again.
                fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
            }
            Kind::Dir { mode } => {
                layer.dir(&rel);
                fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
            }
            Kind::Symlink(target) => {
                layer.symlink(&rel, target);
            }
            Kind::Whiteout => {
                layer.whiteout(&rel);
            }
            Kind::Opaque => {
                layer.opaque(&rel);
            }
        }
    }
}

/// Every path under `root` (relative, not following symlinks), the root itself as "".
///
/// A name that readdir lists but lstat cannot find is a *ghost* and goes to `ghosts`: overlayfs
/// filters whiteouts out of the listing of merged directories only, so a whiteout in a
/// directory that exists in a single layer (it hides nothing) is listed but not found. The view
/// never shows whiteouts; [`compare`] checks every ghost is such a whiteout.
fn walk_mount(
    root: &Path,
    rel: &Path,
    out: &mut Vec<PathBuf>,
    ghosts: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let path = root.join(rel);
    let with_path =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("/{}: {e}", rel.display()));
    let meta = match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !rel.as_os_str().is_empty() => {
            ghosts.push(rel.to_path_buf());
            return Ok(());
        }
        other => other.map_err(with_path)?,
    };
    out.push(rel.to_path_buf());
    if meta.is_dir() {
        let mut names = Vec::new();
        for entry in fs::read_dir(&path).map_err(with_path)? {
            names.push(entry.map_err(with_path)?.file_name());
        }
        names.sort();
        for name in names {
            walk_mount(root, &rel.join(name), out, ghosts)?;
        }
    }
    Ok(())
}

fn kind_of(meta: &fs::Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else {
        "other"
    }
}

fn compare(view: &UnionView, merged: &Path) -> Result<(), TestCaseError> {
    let mut mounted = Vec::new();
    let mut ghosts = Vec::new();
    walk_mount(merged, Path::new(""), &mut mounted, &mut ghosts)
        .map_err(|e| TestCaseError::fail(format!("walking the mount: {e}")))?;
    for ghost in &ghosts {
        let is_whiteout = view.layers().iter().any(|layer| {
            fs::symlink_metadata(layer.join(ghost))
                .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
        });
        prop_assert!(
            is_whiteout,
            "/{} is listed, not found, and not a whiteout",
            ghost.display()
        );
    }
    for rel in &mounted {
        let real = merged.join(rel);
        let at = format!("/{}", rel.display());
        let kernel = fs::symlink_metadata(&real).unwrap();
        let ours = view
            .metadata(Path::new(&at))
            .map_err(|e| TestCaseError::fail(format!("view has no {at} ({e}), the mount does")))?;
        prop_assert_eq!(kind_of(&ours), kind_of(&kernel), "type of {}", at);
        prop_assert_eq!(
            ours.mode() & 0o7777,
            kernel.mode() & 0o7777,
            "mode of {}",
            at
        );
        prop_assert_eq!(
            (ours.uid(), ours.gid()),
            (kernel.uid(), kernel.gid()),
            "owner of {}",
            at
        );
        match kind_of(&kernel) {
            "file" => {
                prop_assert_eq!(ours.len(), kernel.len(), "size of {}", at);
                let data = view.read(Path::new(&at)).unwrap();
                prop_assert_eq!(data, fs::read(&real).unwrap(), "contents of {}", at);
            }
            "symlink" => {
                let target = view.read_link(Path::new(&at)).unwrap();
                prop_assert_eq!(target, fs::read_link(&real).unwrap(), "target of {}", at);
            }
            "dir" => {
                let ours: Vec<String> = view
                    .read_dir(Path::new(&at))
                    .unwrap()
                    .into_iter()
                    .map(|e| e.name.to_string_lossy().into_owned())
                    .collect();
                let mut kernel: Vec<String> = fs::read_dir(&real)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .filter(|name| !ghosts.contains(&rel.join(name)))
                    .map(|name| name.to_string_lossy().into_owned())
                    .collect();
                kernel.sort();
                prop_assert_eq!(ours, kernel, "entries of {}", at);
            }
            _ => {}
        }
    }
    // Nothing the view shows is missing from the mount.
    let mounted: BTreeSet<PathBuf> = mounted.into_iter().collect();
    let mut extra = Vec::new();
    view.walk(|rel, _| {
        if !mounted.contains(rel) {
            extra.push(rel.to_path_buf());
        }
        Ok(())
    })
    .unwrap();
    prop_assert!(
        extra.is_empty(),
        "the view shows paths the mount does not: {:?}",
        extra
    );
    Ok(())
}

fn check(stack: &Stack) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let mut layers = Vec::new();
    for (i, entries) in stack.layers.iter().enumerate() {
        let root = tmp.path().join(format!("layer{i}"));
        build_layer(&root, entries);
        layers.push(root);
    }
    let merged = tmp.path().join("merged");
    fs::create_dir(&merged).unwrap();
    // An upper needs at least one lower under it.
    let with_upper = stack.with_upper && layers.len() > 1;
    let (view, overlay) = if with_upper {
        let work = tmp.path().join("work");
        fs::create_dir(&work).unwrap();
        (
            UnionView::new(
                layers[1..].to_vec(),
                Some(layers[0].clone()),
                OverlayXattr::Trusted,
            ),
            OverlayMount {
                lowerdirs: layers[1..].to_vec(),
                upperdir: Some(layers[0].clone()),
                workdir: Some(work),
                userxattr: false,
                volatile: false,
            },
        )
    } else {
        (
            UnionView::new(layers.clone(), None, OverlayXattr::Trusted),
            OverlayMount {
                lowerdirs: layers.clone(),
                upperdir: None,
                workdir: None,
                userxattr: false,
                volatile: false,
            },
        )
    };
    Mount::Overlay(overlay).mount_at(&merged).unwrap();
    let guard = MountGuard::new(&merged);
    let result = compare(&view, &merged);
    guard.unmount();
    result
}

#[test]
fn union_view_agrees_with_kernel_overlay() {
    if !common::require(common::privileged(), "needs root to mount")
        || !common::require(overlay_supported(), "needs kernel overlayfs")
    {
        return;
    }
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(e) = runner.run(&stack(), |stack| check(&stack)) {
        panic!("{e}");
    }
}

/// The generator is not vacuous: a fixed stack with every kind of entry gives a union with a
/// whiteout and an opaque directory at work, and the comparison sees them.
#[test]
fn fixed_stack_with_every_kind_agrees() {
    if !common::require(common::privileged(), "needs root to mount")
        || !common::require(overlay_supported(), "needs kernel overlayfs")
    {
        return;
    }
    let e = |path: &[usize], kind: Kind| Entry {
        path: path.to_vec(),
        kind,
    };
    let file = |data: &[u8]| Kind::File {
        data: data.to_vec(),
        mode: 0o644,
        uid: 0,
    };
    let stack = Stack {
        layers: vec![
            vec![
                e(&[0, 0], Kind::Whiteout),
                e(&[1], Kind::Opaque),
                e(&[1, 2], file(b"top")),
            ],
            vec![
                e(&[0, 0], file(b"hidden")),
                e(&[0, 1], file(b"kept")),
                e(&[1, 0], file(b"hidden by opaque")),
                e(&[2], Kind::Symlink("/a/b".into())),
            ],
        ],
        with_upper: false,
    };
    check(&stack).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (top, bottom) = (tmp.path().join("0"), tmp.path().join("1"));
    build_layer(&top, &stack.layers[0]);
    build_layer(&bottom, &stack.layers[1]);
    let view = UnionView::new(vec![top, bottom], None, OverlayXattr::Trusted);
    let names = |p: &str| -> Vec<String> {
        view.read_dir(Path::new(p))
            .unwrap()
            .into_iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names("/a"), ["b"]);
    assert_eq!(names("/b"), ["c"]);
}
