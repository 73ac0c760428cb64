//! Property tests against an in-memory model of a filesystem.
//!
//! Random file operations are applied both to the model and to a real directory, step by step;
//! each step is turned into a layer by the naive diff. Then:
//! - applying the layers in order (flat) gives a tree equal to the model;
//! - applying them as overlay lowerdirs and reading through a `UnionView` shows the model;
//! - applying a layer and diffing the result against the same base gives the same layer back.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use molde_layerfs::apply::{ApplyOptions, apply};
use molde_layerfs::diff::{DiffOptions, naive};
use molde_layerfs::view::UnionView;
use molde_layerfs::{Format, OverlayXattr};
use proptest::prelude::*;

/// A node of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir(u32),
    File(Vec<u8>, u32),
    Link(String),
}

type Model = BTreeMap<PathBuf, Node>;

/// One random operation on a small namespace (so operations collide often).
#[derive(Debug, Clone)]
enum Op {
    Write(String, Vec<u8>, u32),
    Mkdir(String),
    Remove(String),
    Symlink(String, String),
}

const NAMES: &[&str] = &["a", "b", "c", "a/x", "a/y", "b/x", "a/x/deep", "c/z"];

fn op() -> impl Strategy<Value = Op> {
    let name = prop::sample::select(NAMES).prop_map(str::to_owned);
    let mode = prop::sample::select(vec![0o644u32, 0o600, 0o755, 0o4755]);
    prop_oneof![
        4 => (name.clone(), prop::collection::vec(any::<u8>(), 0..64), mode)
            .prop_map(|(n, c, m)| Op::Write(n, c, m)),
        2 => name.clone().prop_map(Op::Mkdir),
        2 => name.clone().prop_map(Op::Remove),
        1 => (name, prop::sample::select(vec!["a", "../etc", "/b/x", "nowhere"]))
            .prop_map(|(n, t)| Op::Symlink(n, t.to_owned())),
    ]
}

fn parent_is_dir(model: &Model, path: &Path) -> bool {
    match path.parent() {
        Some(p) if p != Path::new("") => matches!(model.get(p), Some(Node::Dir(_))),
        _ => true,
    }
}

/// Apply `op` to the model and the real tree; ops that would fail on a real fs are skipped.
fn perform(model: &mut Model, root: &Path, op: &Op) {
    match op {
        Op::Write(n, content, mode) => {
            let p = PathBuf::from(n);
            if !parent_is_dir(model, &p) || matches!(model.get(&p), Some(Node::Dir(_))) {
                return;
            }
            let real = root.join(&p);
            if matches!(model.get(&p), Some(Node::Link(_))) {
                fs::remove_file(&real).unwrap();
            }
            fs::write(&real, content).unwrap();
            fs::set_permissions(&real, fs::Permissions::from_mode(*mode)).unwrap();
            model.insert(p, Node::File(content.clone(), *mode));
        }
        Op::Mkdir(n) => {
            let p = PathBuf::from(n);
            if !parent_is_dir(model, &p) || model.contains_key(&p) {
                return;
            }
            fs::create_dir(root.join(&p)).unwrap();
            fs::set_permissions(root.join(&p), fs::Permissions::from_mode(0o755)).unwrap();
            model.insert(p, Node::Dir(0o755));
        }
        Op::Remove(n) => {
            let p = PathBuf::from(n);
            match model.get(&p) {
                None => {}
                Some(Node::Dir(_)) => {
                    fs::remove_dir_all(root.join(&p)).unwrap();
                    model.retain(|k, _| !k.starts_with(&p));
                }
                Some(_) => {
                    fs::remove_file(root.join(&p)).unwrap();
                    model.remove(&p);
                }
            }
        }
        Op::Symlink(n, target) => {
            let p = PathBuf::from(n);
            if !parent_is_dir(model, &p) || model.contains_key(&p) {
                return;
            }
            symlink(target, root.join(&p)).unwrap();
            model.insert(p, Node::Link(target.clone()));
        }
    }
}

/// Read a real tree into a model (the root itself excluded).
fn read_tree(root: &Path) -> Model {
    fn walk(root: &Path, rel: &Path, out: &mut Model) {
        for entry in fs::read_dir(root.join(rel)).unwrap() {
            let entry = entry.unwrap();
            let rel = rel.join(entry.file_name());
            let meta = fs::symlink_metadata(root.join(&rel)).unwrap();
            let mode = meta.mode() & 0o7777;
            if meta.is_dir() {
                out.insert(rel.clone(), Node::Dir(mode));
                walk(root, &rel, out);
            } else if meta.file_type().is_symlink() {
                let t = fs::read_link(root.join(&rel)).unwrap();
                out.insert(rel, Node::Link(t.to_string_lossy().into_owned()));
            } else {
                out.insert(
                    rel.clone(),
                    Node::File(fs::read(root.join(&rel)).unwrap(), mode),
                );
            }
        }
    }
    let mut out = Model::new();
    walk(root, Path::new(""), &mut out);
    out
}

/// Read a union view into a model.
fn read_view(view: &UnionView) -> Model {
    fn walk(view: &UnionView, rel: &Path, out: &mut Model) {
        for entry in view.read_dir(&Path::new("/").join(rel)).unwrap() {
            let rel = rel.join(&entry.name);
            let abs = Path::new("/").join(&rel);
            let meta = view.metadata(&abs).unwrap();
            let mode = meta.mode() & 0o7777;
            if meta.is_dir() {
                out.insert(rel.clone(), Node::Dir(mode));
                walk(view, &rel, out);
            } else if meta.file_type().is_symlink() {
                let t = view.read_link(&abs).unwrap();
                out.insert(rel, Node::Link(t.to_string_lossy().into_owned()));
            } else {
                out.insert(rel.clone(), Node::File(view.read(&abs).unwrap(), mode));
            }
        }
    }
    let mut out = Model::new();
    walk(view, Path::new(""), &mut out);
    out
}

fn opts() -> DiffOptions {
    DiffOptions {
        mtime_clamp: Some(1_000_000),
        xattr: OverlayXattr::User,
        owners: None,
    }
}

fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .args(["-a", "--no-target-directory"])
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    /// ops -> layers -> apply (flat, and overlay + union view) == model.
    #[test]
    fn layers_reproduce_the_model(steps in prop::collection::vec(prop::collection::vec(op(), 1..12), 1..4)) {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        let flat = tmp.path().join("flat");
        fs::create_dir_all(&work).unwrap();
        fs::create_dir_all(&flat).unwrap();
        let mut model = Model::new();
        let mut overlay_dirs: Vec<PathBuf> = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let before = tmp.path().join(format!("before{i}"));
            copy_tree(&work, &before);
            for op in step {
                perform(&mut model, &work, op);
            }
            let mut layer = Vec::new();
            naive(&UnionView::new(vec![before], None, OverlayXattr::User), &work, &mut layer, &opts()).unwrap();

            apply(&layer[..], &flat, &ApplyOptions::for_current_process(Format::Flat)).unwrap();
            prop_assert_eq!(&read_tree(&flat), &model, "flat apply after step {}", i);

            let dir = tmp.path().join(format!("layer{i}"));
            fs::create_dir(&dir).unwrap();
            apply(&layer[..], &dir, &ApplyOptions::for_current_process(Format::Overlay(OverlayXattr::User))).unwrap();
            overlay_dirs.insert(0, dir);
            let view = UnionView::new(overlay_dirs.clone(), None, OverlayXattr::User);
            prop_assert_eq!(&read_view(&view), &model, "union view after step {}", i);
        }
    }

    /// apply a layer, diff the result against the same base: the same layer, byte for byte.
    #[test]
    fn apply_then_diff_gives_the_same_layer(base_ops in prop::collection::vec(op(), 0..8), ops in prop::collection::vec(op(), 1..12)) {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        fs::create_dir_all(&base).unwrap();
        let mut model = Model::new();
        for op in &base_ops {
            perform(&mut model, &base, op);
        }
        let next = tmp.path().join("next");
        copy_tree(&base, &next);
        for op in &ops {
            perform(&mut model, &next, op);
        }
        let base_view = UnionView::new(vec![base.clone()], None, OverlayXattr::User);
        let mut layer = Vec::new();
        naive(&base_view, &next, &mut layer, &opts()).unwrap();

        let target = tmp.path().join("target");
        copy_tree(&base, &target);
        apply(&layer[..], &target, &ApplyOptions::for_current_process(Format::Flat)).unwrap();
        let mut again = Vec::new();
        naive(&base_view, &target, &mut again, &opts()).unwrap();
        prop_assert!(layer == again, "the layer changed through apply + diff");
    }
}
