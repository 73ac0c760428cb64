//! The decision-tree filters (`tree`) against seccompiler's flat ones (`compile::flat`, what
//! molde installed before), both run in `bpf_run`: for the default profile under several
//! capability sets and for a profile using every operator and action, on x86_64's numbers and
//! aarch64's, every filter must give the same action for every system call number up to past
//! the last one (x32's numbers and the top of the range too), another architecture, and
//! arguments on and around each condition's values.

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use caps::Capability;
use oci_spec::runtime::LinuxSeccompOperator;
use proptest::prelude::*;
use seccompiler::{BpfProgram, TargetArch};

use super::bpf_run::{Data, run};
use super::compile::{self, Arch, Emit};
use super::profile::{Profile, Target};
use super::tree;

/// aarch64's system call numbers (the kernel's generic table) from linux-libc-dev's header.
fn aarch64_numbers() -> HashMap<String, i64> {
    let path = "/usr/include/asm-generic/unistd.h";
    let header = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path} (apt-get install linux-libc-dev): {e}"));
    let mut numbers = HashMap::new();
    for line in header.lines() {
        let Some(rest) = line.strip_prefix("#define __NR") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(Ok(nr))) = (words.next(), words.next().map(str::parse::<i64>)) else {
            continue;
        };
        let name = name
            .strip_prefix("3264_")
            .or_else(|| name.strip_prefix('_'))
            .unwrap_or(name);
        let name = if name == "fstatat" {
            "newfstatat"
        } else {
            name
        };
        numbers.insert(name.to_string(), nr);
    }
    assert!(numbers.len() > 250, "{path} lists {} calls", numbers.len());
    assert_eq!(numbers["clone3"], 435);
    numbers
}

/// The values worth giving argument `index` of a call under `profile`: each condition's value,
/// its neighbours, its mask's bits, with and without a high word.
fn candidates(profile: &Profile) -> BTreeSet<(usize, u64)> {
    let mut out = BTreeSet::new();
    for arg in profile
        .syscalls
        .iter()
        .flat_map(|r| r.syscall.args().iter().flatten())
    {
        let (v, two) = (arg.value(), arg.value_two().unwrap_or(0));
        for x in [v, two, v & two, v | two, !v] {
            for y in [
                x,
                x.wrapping_sub(1),
                x.wrapping_add(1),
                x ^ 1 << 32,
                x ^ 1 << 63,
            ] {
                out.insert((arg.index(), y));
            }
        }
        if arg.op() == LinuxSeccompOperator::ScmpCmpMaskedEq {
            for bit in 0..64 {
                out.insert((arg.index(), two ^ 1 << bit));
            }
        }
    }
    out
}

/// Argument vectors for a call with conditions: all zero, all ones, each rule's conditions
/// met at once, and each of those with one argument changed to each candidate.
fn argument_sets(profile: &Profile) -> Vec<[u64; 6]> {
    let mut bases = BTreeSet::from([[0u64; 6], [u64::MAX; 6]]);
    for rule in &profile.syscalls {
        let mut met = [0u64; 6];
        for arg in rule.syscall.args().iter().flatten() {
            met[arg.index().min(5)] = match arg.op() {
                LinuxSeccompOperator::ScmpCmpMaskedEq => arg.value_two().unwrap_or(0),
                LinuxSeccompOperator::ScmpCmpNe
                | LinuxSeccompOperator::ScmpCmpLt
                | LinuxSeccompOperator::ScmpCmpGt => arg.value() ^ 1,
                _ => arg.value(),
            };
        }
        bases.insert(met);
    }
    let mut sets = bases.clone();
    for base in &bases {
        for &(index, value) in &candidates(profile) {
            let mut args = *base;
            args[index.min(5)] = value;
            sets.insert(args);
        }
    }
    sets.into_iter().collect()
}

/// The numbers of the calls `profile` puts conditions on, on `arch`.
fn conditioned(profile: &Profile, arch: Arch<'_>) -> BTreeSet<u32> {
    let rules = profile.syscalls.iter().map(|r| &r.syscall);
    rules
        .filter(|s| s.args().as_ref().is_some_and(|a| !a.is_empty()))
        .flat_map(|s| s.names().iter().filter_map(|n| (arch.number)(n)))
        .map(|nr| nr as u32)
        .collect()
}

fn compile(profile: &Profile, target: &Target, arch: Arch<'_>, emit: Emit) -> Vec<BpfProgram> {
    let default = (profile.default_action, profile.default_errno_ret);
    compile::compile_for(arch, default, profile.rules_for(target), emit).unwrap()
}

/// What the comparison met, to show it was not vacuous.
#[derive(Default)]
struct Seen {
    actions: BTreeSet<u32>,
    /// Per conditioned call, the actions its argument sets got.
    by_arguments: HashMap<u32, BTreeSet<u32>>,
    inputs: usize,
}

/// Compare the tree and flat programs of `profile` for a container with `caps` on `arch`.
fn compare(profile: &Profile, caps: u64, arch: Arch<'_>, seen: &mut Seen) {
    let target = Target {
        arch: if arch.target == TargetArch::aarch64 {
            "arm64"
        } else {
            "amd64"
        },
        ..Target::here(caps)
    };
    let tree = compile(profile, &target, arch, tree::program);
    let flat = compile(profile, &target, arch, compile::flat);
    assert_eq!(tree.len(), flat.len());
    let audit = tree::audit_arch(arch.target);
    let conditioned = conditioned(profile, arch);
    let arguments = argument_sets(profile);
    let plain = [[0u64; 6], [u64::MAX; 6], [1, 2, 3, 4, 5, 6]];
    let numbers = (0..=1100u32)
        .chain(0x4000_0000..0x4000_0000 + 600)
        .chain(u32::MAX - 4..=u32::MAX);
    for (t, f) in tree.iter().zip(&flat) {
        assert!(t.len() <= f.len() + 8, "{} vs {}", t.len(), f.len());
        for nr in numbers.clone() {
            let args: &[[u64; 6]] = if conditioned.contains(&nr) {
                &arguments
            } else {
                &plain
            };
            for arch in [audit, 0x4000_0003, audit ^ 0x81] {
                for args in args {
                    let data = Data {
                        nr,
                        arch,
                        ip: 0x7f00_1234,
                        args: *args,
                    };
                    let action = run(t, &data);
                    assert_eq!(action, run(f, &data), "{data:x?}");
                    seen.actions.insert(action);
                    seen.inputs += 1;
                    if conditioned.contains(&nr) && arch == audit {
                        seen.by_arguments.entry(nr).or_default().insert(action);
                    }
                }
            }
        }
    }
}

fn cap_sets() -> [u64; 4] {
    let default = crate::launch::default_capabilities()
        .iter()
        .fold(0u64, |m, c| m | 1 << c.index());
    let admin = default | 1 << Capability::CAP_SYS_ADMIN.index();
    [0, default, admin, (1 << 41) - 1]
}

/// A profile with every operator, several rules per call, several actions and errnos.
fn every_operator() -> Profile {
    serde_json::from_str(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":13,"syscalls":[
        {"names":["read","write","openat","close","mmap"],"action":"SCMP_ACT_ALLOW"},
        {"names":["ioctl"],"action":"SCMP_ACT_ALLOW","args":[
            {"index":1,"value":21505,"op":"SCMP_CMP_EQ"}]},
        {"names":["ioctl"],"action":"SCMP_ACT_ALLOW","args":[
            {"index":1,"value":4294967296,"op":"SCMP_CMP_GE"},
            {"index":2,"value":100,"op":"SCMP_CMP_LT"}]},
        {"names":["fcntl"],"action":"SCMP_ACT_ALLOW","args":[
            {"index":0,"value":3,"op":"SCMP_CMP_LE"},{"index":1,"value":9,"op":"SCMP_CMP_GT"},
            {"index":5,"value":7,"op":"SCMP_CMP_NE"}]},
        {"names":["socket"],"action":"SCMP_ACT_ERRNO","errnoRet":97,"args":[
            {"index":0,"value":18446744069414584320,"valueTwo":8589934592,"op":"SCMP_CMP_MASKED_EQ"}]},
        {"names":["kill"],"action":"SCMP_ACT_TRAP"},
        {"names":["tkill"],"action":"SCMP_ACT_KILL_PROCESS","args":[
            {"index":1,"value":9,"op":"SCMP_CMP_EQ"}]},
        {"names":["getpid","gettid"],"action":"SCMP_ACT_LOG"},
        {"names":["exit_group"],"action":"SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap()
}

#[test]
fn the_tree_filters_act_as_seccompilers_flat_ones_for_every_call() {
    let aarch64 = aarch64_numbers();
    let aarch64_number = |name: &str| aarch64.get(name).copied();
    let arches = [
        Arch::here(),
        Arch {
            target: TargetArch::aarch64,
            number: &aarch64_number,
        },
    ];
    let default = super::Seccomp::default_profile();
    let mut seen = Seen::default();
    for arch in arches {
        for caps in cap_sets() {
            compare(&default, caps, arch, &mut seen);
        }
        compare(&every_operator(), 0, arch, &mut seen);
    }
    // Not vacuous: allowed, refused (EPERM, ENOSYS, EACCES...), killed, trapped, logged calls.
    let errno = |e: u32| libc::SECCOMP_RET_ERRNO | e;
    for action in [
        libc::SECCOMP_RET_ALLOW,
        errno(1),
        errno(38),
        errno(13),
        errno(97),
        libc::SECCOMP_RET_KILL_PROCESS,
        libc::SECCOMP_RET_TRAP,
        libc::SECCOMP_RET_LOG,
    ] {
        assert!(seen.actions.contains(&action), "{action:#x} never met");
    }
    // Each argument filter decided both ways somewhere (personality, clone, socket...).
    let both = seen.by_arguments.values().filter(|a| a.len() > 1).count();
    assert!(both >= 4, "{:?}", seen.by_arguments);
    assert!(seen.inputs > 200_000, "{}", seen.inputs);
}

#[test]
fn the_default_allow_list_is_a_short_tree() {
    let caps = cap_sets()[1];
    let target = Target::here(caps);
    let default = super::Seccomp::default_profile();
    let tree = compile(&default, &target, Arch::here(), tree::program);
    let flat = compile(&default, &target, Arch::here(), compile::flat);
    assert!(tree[0].len() < 600, "{} instructions", tree[0].len());
    assert!(flat[0].len() > 3 * tree[0].len());
    // A well-known call, refused ones, another architecture.
    let data = |nr: i64, arch| Data {
        nr: nr as u32,
        arch,
        ..Data::default()
    };
    let audit = tree::audit_arch(Arch::here().target);
    assert_eq!(run(&tree[0], &data(libc::SYS_read, audit)), 0x7fff_0000);
    let eperm = libc::SECCOMP_RET_ERRNO | 1;
    assert_eq!(run(&tree[0], &data(libc::SYS_keyctl, audit)), eperm);
    assert_eq!(run(&tree[0], &data(libc::SYS_bpf, audit)), eperm);
    let other = run(&tree[0], &data(libc::SYS_read, 0x4000_0003));
    assert_eq!(other, libc::SECCOMP_RET_KILL_PROCESS);
}

/// The default profile's tree and flat programs for the default capabilities, and the
/// argument values worth trying, made once.
/// Tree programs, flat programs, argument values.
type Made = (Vec<BpfProgram>, Vec<BpfProgram>, Vec<(usize, u64)>);

static DEFAULT: LazyLock<Made> = LazyLock::new(|| {
    let default = super::Seccomp::default_profile();
    let target = Target::here(cap_sets()[1]);
    let tree = compile(&default, &target, Arch::here(), tree::program);
    let flat = compile(&default, &target, Arch::here(), compile::flat);
    (tree, flat, candidates(&default).into_iter().collect())
});

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    /// Random calls and arguments (mostly near the conditions' values) on the default profile
    /// with the default capabilities.
    #[test]
    fn random_calls_get_the_same_action(
        nr in prop_oneof![0u32..500, any::<u32>()],
        picks in proptest::collection::vec((0usize..6, any::<u64>(), any::<prop::sample::Index>()), 0..4),
        native in any::<bool>(),
    ) {
        let (tree, flat, pool) = &*DEFAULT;
        let mut args = [0u64; 6];
        for (index, random, pick) in picks {
            let (i, v) = pool[pick.index(pool.len())];
            if random % 2 == 0 { args[i] = v } else { args[index] = random }
        }
        let audit = tree::audit_arch(Arch::here().target);
        let data = Data { nr, arch: if native { audit } else { 0x4000_0003 }, ip: 0, args };
        for (t, f) in tree.iter().zip(flat) {
            prop_assert_eq!(run(t, &data), run(f, &data));
        }
    }
}
