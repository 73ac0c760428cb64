//! Model-based property test of tags, holds, remove, prune and GC: nothing reachable from the
//! index is ever freed, and removing everything then collecting leaves an empty store.

use std::collections::{BTreeMap, BTreeSet};

use molde_image::layerfs::Digest;
use molde_image::unpack::unpack;
use molde_image::{Image, ImageBuilder, Layer, Removed, Store, StoreError};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Commit { layers: Vec<usize>, label: u8 },
    Tag { image: usize, tag: u8 },
    Untag { tag: u8 },
    Hold { image: usize, hold: u8 },
    Release { hold: u8 },
    Remove { image: usize },
    Unpack { image: usize },
    Prune,
    PruneAll,
    Gc,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (proptest::collection::vec(0..4usize, 0..4), 0..3u8)
            .prop_map(|(layers, label)| Op::Commit { layers, label }),
        2 => (any::<usize>(), 0..3u8).prop_map(|(image, tag)| Op::Tag { image, tag }),
        1 => (0..3u8).prop_map(|tag| Op::Untag { tag }),
        1 => (any::<usize>(), 0..2u8).prop_map(|(image, hold)| Op::Hold { image, hold }),
        1 => (0..2u8).prop_map(|hold| Op::Release { hold }),
        2 => any::<usize>().prop_map(|image| Op::Remove { image }),
        1 => any::<usize>().prop_map(|image| Op::Unpack { image }),
        1 => Just(Op::Prune),
        1 => Just(Op::PruneAll),
        2 => Just(Op::Gc),
    ]
}

fn layer_tar(i: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let content = vec![i as u8; 100 + i * 37];
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, format!("file{i}"), &content[..])
        .unwrap();
    b.into_inner().unwrap()
}

#[derive(Default)]
struct Model {
    images: BTreeMap<Digest, Image>,
    tags: BTreeMap<String, Digest>,
    holds: BTreeMap<String, Digest>,
    unpacked: BTreeSet<Digest>,
}

impl Model {
    fn nth(&self, n: usize) -> Option<Image> {
        if self.images.is_empty() {
            return None;
        }
        self.images.values().nth(n % self.images.len()).cloned()
    }
    fn held(&self, md: &Digest) -> bool {
        self.holds.values().any(|h| h == md)
    }
    fn drop_image(&mut self, md: &Digest) {
        self.images.remove(md);
        self.tags.retain(|_, m| m != md);
    }
}

fn check(store: &Store, model: &Model) {
    let listed: BTreeSet<Digest> = store
        .list()
        .unwrap()
        .iter()
        .map(|s| s.image.manifest_digest())
        .collect();
    assert_eq!(listed, model.images.keys().copied().collect());
    for (tag, md) in &model.tags {
        assert_eq!(store.resolve(tag).unwrap().manifest_digest(), *md, "{tag}");
    }
    // Nothing reachable was freed.
    for image in model.images.values() {
        let loaded = store.load(image.manifest_digest()).unwrap();
        assert_eq!(loaded.id(), image.id());
        for l in image.layers() {
            assert!(store.has_blob(&l.digest));
        }
        for c in image.chain_ids() {
            if model.unpacked.contains(&c) {
                assert!(store.layout().layer(&c).is_dir());
            }
        }
    }
}

fn run(ops: Vec<Op>) {
    let store = Store::temporary().unwrap();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Commit { layers, label } => {
                let mut b = ImageBuilder::new().created("2024-01-01T00:00:00Z");
                for i in layers {
                    let l: Layer = store.add_layer(&layer_tar(i)[..]).unwrap().layer;
                    b = b.layer(l, format!("layer {i}"));
                }
                let image = store.commit(b.label("l", label.to_string())).unwrap();
                model.images.insert(image.manifest_digest(), image);
            }
            Op::Tag { image, tag } => {
                if let Some(image) = model.nth(image) {
                    let r = store.tag(&image, &format!("t:{tag}")).unwrap();
                    model.tags.insert(r.to_string(), image.manifest_digest());
                }
            }
            Op::Untag { tag } => {
                let name = format!("t:{tag}");
                let result = store.untag(&name);
                assert_eq!(result.is_ok(), model.tags.remove(&name).is_some());
            }
            Op::Hold { image, hold } => {
                if let Some(image) = model.nth(image) {
                    store.hold(&image, &format!("h{hold}")).unwrap();
                    model
                        .holds
                        .insert(format!("h{hold}"), image.manifest_digest());
                }
            }
            Op::Release { hold } => {
                let name = format!("h{hold}");
                assert_eq!(
                    store.release(&name).unwrap(),
                    model.holds.remove(&name).is_some()
                );
            }
            Op::Remove { image } => {
                if let Some(image) = model.nth(image) {
                    let md = image.manifest_digest();
                    match store.remove(&md.to_string()) {
                        Err(StoreError::Held { .. }) => assert!(model.held(&md)),
                        Ok(Removed::Deleted(d)) => {
                            assert!(!model.held(&md));
                            assert_eq!(d, md);
                            model.drop_image(&md);
                        }
                        other => panic!("{other:?}"),
                    }
                }
            }
            Op::Unpack { image } => {
                if let Some(image) = model.nth(image) {
                    for u in unpack(&store, &image).unwrap() {
                        model.unpacked.insert(u.chain_id);
                    }
                }
            }
            Op::Prune => {
                let tagged: BTreeSet<Digest> = model.tags.values().copied().collect();
                let expected: Vec<Digest> = model
                    .images
                    .keys()
                    .filter(|md| !tagged.contains(md) && !model.held(md))
                    .copied()
                    .collect();
                assert_eq!(store.prune().unwrap(), expected);
                for md in expected {
                    model.drop_image(&md);
                }
            }
            Op::PruneAll => {
                let expected: Vec<Digest> = model
                    .images
                    .keys()
                    .filter(|md| !model.held(md))
                    .copied()
                    .collect();
                assert_eq!(store.prune_all().unwrap(), expected);
                for md in expected {
                    model.drop_image(&md);
                }
            }
            Op::Gc => {
                store.gc().unwrap();
                // GC frees unpacked layers no image reaches; a later image must unpack again.
                let reached: BTreeSet<Digest> =
                    model.images.values().flat_map(|i| i.chain_ids()).collect();
                model.unpacked.retain(|c| reached.contains(c));
            }
        }
        check(&store, &model);
    }
    // Remove everything, then collect: the store is empty.
    for h in model.holds.keys() {
        store.release(h).unwrap();
    }
    store.prune_all().unwrap();
    store.gc().unwrap();
    assert_eq!(store.counts().unwrap(), (0, 0));
    assert!(store.list().unwrap().is_empty());
    assert!(store.holds().unwrap().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn nothing_reachable_is_freed(ops in proptest::collection::vec(op(), 1..30)) {
        run(ops);
    }
}
