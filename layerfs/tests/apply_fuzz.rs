//! Fuzzing apply with proptest: random entry sequences with nasty names, symlinks, hardlinks and
//! whiteouts, and byte-level mutations of valid tars. Whatever the layer, apply must not panic
//! and must not change anything outside the target (see `canary/mod.rs`).
//!
//! The number of cases per property comes from `PROPTEST_CASES` (default 64):
//! `PROPTEST_CASES=5000 cargo test -p molde-layerfs --release --test apply_fuzz`.

mod canary;
mod common;
mod rawtar;

use std::io::Write;

use canary::Fixture;
use molde_layerfs::apply::{ApplyOptions, apply_in};
use molde_layerfs::secure::Root;
use molde_layerfs::{Format, OverlayXattr};
use proptest::prelude::*;
use rawtar::{Entry, RawTar};

/// Name components. `@OUT` becomes the canary directory's absolute path (without its leading
/// slash), `@TOKEN` the fixture's token.
const PLAIN: &[&str] = &[
    "a",
    "b",
    "d",
    ".",
    "",
    "escape",
    "escape_file",
    "up",
    "lower",
    "keep",
    "@OUT",
    "@TOKEN",
    "tmp",
    "canary",
    "dir",
];

/// Last components only: whiteouts and opaque markers.
const WHITEOUTS: &[&str] = &[".wh.a", ".wh.b", ".wh.escape", ".wh.lower", ".wh..wh..opq"];

/// Components that get an entry refused (or skipped); rare, so that most layers run long.
const NASTY: &[&str] = &[
    "..",
    ".wh.",
    ".wh..",
    ".wh...",
    ".wh..wh.plnk",
    "x\0y",
    ".wh.x/..",
];

/// Link targets (symlinks and hardlinks); the first ones resolve, the last ones are refused.
const TARGETS: &[&str] = &[
    "a",
    "b/a",
    "d",
    "/",
    "/@OUT",
    "/@OUT/canary",
    "/@OUT/dir",
    "escape/canary",
    "escape",
    "escape_file",
    "up/outside/canary",
    "up/@OUT/canary",
    "lower/keep",
    "lower",
    "/tmp/@TOKEN",
    "..",
    "../..",
    "../../..",
    "",
    "x\0y",
    "d/../../..",
    "a/../../../@OUT",
];

fn component(choices: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(choices).prop_map(str::to_string)
}

/// An entry name: mostly plain components, sometimes a whiteout last, rarely a nasty one.
fn name() -> impl Strategy<Value = String> {
    named(true)
}

/// A directory name for whiteouts and opaque markers to go in.
fn dir_name() -> impl Strategy<Value = String> {
    named(false)
}

fn named(whiteout_last: bool) -> impl Strategy<Value = String> {
    let w = if whiteout_last { 1 } else { 0 };
    (
        prop::sample::select(&["", "/", "./", "//"][..]),
        prop::collection::vec(component(PLAIN), 0..3),
        prop_oneof![4 => component(PLAIN), w => component(WHITEOUTS)],
        prop::option::weighted(0.04, (component(NASTY), any::<prop::sample::Index>())),
        prop::bool::weighted(0.01),
    )
        .prop_map(|(prefix, mut comps, last, nasty, long)| {
            comps.push(last);
            if let Some((bad, at)) = nasty {
                let i = at.index(comps.len());
                comps[i] = bad;
            }
            if long {
                comps.push("n".repeat(256));
            }
            format!("{prefix}{}", comps.join("/"))
        })
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => prop::sample::select(&TARGETS[..15]).prop_map(str::to_string),
        1 => prop::sample::select(&TARGETS[15..]).prop_map(str::to_string),
        2 => name(),
    ]
}

/// One entry of a generated layer.
#[derive(Debug, Clone)]
enum Op {
    Dir(String, u32),
    File(String, usize, u32),
    Symlink(String, String),
    Hardlink(String, String),
    Fifo(String),
    Char(String),
    Whiteout(String, String),
    Opaque(String),
}

fn op() -> impl Strategy<Value = Op> {
    let mode = prop::sample::select(&[0o755u32, 0o4755, 0o000, 0o1777, 0o555][..]);
    prop_oneof![
        3 => (name(), mode.clone()).prop_map(|(n, m)| Op::Dir(n, m)),
        4 => (name(), 0..1500usize, mode).prop_map(|(n, s, m)| Op::File(n, s, m)),
        3 => (name(), target()).prop_map(|(n, t)| Op::Symlink(n, t)),
        2 => (name(), target()).prop_map(|(n, t)| Op::Hardlink(n, t)),
        1 => name().prop_map(Op::Fifo),
        1 => name().prop_map(Op::Char),
        2 => (dir_name(), component(PLAIN)).prop_map(|(d, c)| Op::Whiteout(d, c)),
        1 => dir_name().prop_map(Op::Opaque),
    ]
}

/// How to apply a generated layer.
#[derive(Debug, Clone, Copy)]
struct How {
    overlay: bool,
    walk: bool,
    gzip: bool,
}

fn how() -> impl Strategy<Value = How> {
    (any::<bool>(), any::<bool>(), prop::bool::weighted(0.2)).prop_map(|(overlay, walk, gzip)| {
        How {
            overlay,
            walk,
            gzip,
        }
    })
}

/// Write `ops` as a tar for `fx`.
fn build(fx: &Fixture, ops: &[Op]) -> Vec<u8> {
    let out = fx.outside.to_string_lossy();
    let out = out.trim_start_matches('/');
    let fill = |s: &str| -> Vec<u8> {
        s.replace("@OUT", out)
            .replace("@TOKEN", &fx.token)
            .into_bytes()
    };
    let mut tar = RawTar::new();
    for op in ops {
        match op {
            Op::Dir(n, m) => {
                let mut e = Entry::new(rawtar::DIR, fill(n));
                e.mode = *m;
                tar.entry(&e);
            }
            Op::File(n, size, m) => {
                let mut e = Entry::new(rawtar::FILE, fill(n));
                e.mode = *m;
                e.data = vec![b'p'; *size];
                tar.entry(&e);
            }
            Op::Symlink(n, t) => {
                tar.symlink(fill(n), fill(t));
            }
            Op::Hardlink(n, t) => {
                tar.hardlink(fill(n), fill(t));
            }
            Op::Fifo(n) => {
                tar.fifo(fill(n));
            }
            Op::Char(n) => {
                tar.char_dev(fill(n), 1, 3);
            }
            Op::Whiteout(d, c) => {
                tar.file(fill(&format!("{d}/.wh.{c}")), "");
            }
            Op::Opaque(d) => {
                tar.file(fill(&format!("{d}/.wh..wh..opq")), "");
            }
        }
    }
    tar.finish()
}

/// Apply `layer` onto the fixture's target as `how` says; any outcome but a panic is fine.
fn run(fx: &Fixture, layer: &[u8], how: How) {
    let format = if how.overlay {
        Format::Overlay(OverlayXattr::Trusted)
    } else {
        Format::Flat
    };
    let opts = ApplyOptions::for_current_process(format);
    let root = if how.walk {
        Root::open_walk_only(&fx.target).unwrap()
    } else {
        Root::open(&fx.target).unwrap()
    };
    let blob = if how.gzip {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(layer).unwrap();
        gz.finish().unwrap()
    } else {
        layer.to_vec()
    };
    let _ = apply_in(&blob[..], &root, &opts);
}

/// Offsets of the header blocks of a tar written by [`build`].
fn header_offsets(tar: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at..at + 512].iter().any(|&b| b != 0) {
        out.push(at);
        let size = std::str::from_utf8(&tar[at + 124..at + 135])
            .ok()
            .and_then(|s| u64::from_str_radix(s, 8).ok())
            .unwrap_or(0) as usize;
        at += 512 + size.div_ceil(512) * 512;
    }
    out
}

/// Recompute the checksum of the header at `at`, so that a mutated header gets parsed.
fn fix_checksum(tar: &mut [u8], at: usize) {
    let h = &mut tar[at..at + 512];
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_layers_never_write_outside(ops in prop::collection::vec(op(), 1..24), how in how()) {
        let fx = Fixture::new();
        let layer = build(&fx, &ops);
        run(&fx, &layer, how);
        fx.check();
    }

    #[test]
    fn mutated_layers_never_write_outside(
        ops in prop::collection::vec(op(), 1..12),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..12),
        cut in prop::option::weighted(0.3, any::<prop::sample::Index>()),
        fix in prop::bool::weighted(0.8),
        how in how(),
    ) {
        let fx = Fixture::new();
        let mut layer = build(&fx, &ops);
        let headers = header_offsets(&layer);
        for (at, byte) in flips {
            let i = at.index(layer.len());
            layer[i] = byte;
        }
        // Mostly keep the checksums right, so the mutations reach past the checksum test.
        if fix {
            for at in headers {
                fix_checksum(&mut layer, at);
            }
        }
        if let Some(cut) = cut {
            layer.truncate(cut.index(layer.len()));
        }
        run(&fx, &layer, how);
        fx.check();
    }
}
