//! One filter as BPF: a balanced decision tree over system call numbers.
//!
//! seccompiler emits a filter as one linear chain, a `jeq` (and three more instructions) per
//! system call: moby's allow list becomes ~1550 instructions, and every cost of a filter is
//! linear in that chain: the kernel's JIT when the filter is attached, its action cache
//! (since Linux 5.11 it emulates the filter for every system call number of each
//! architecture, once, when the filter is attached) and the evaluation of each call the cache
//! does not settle. So the number dispatch is ours, as libseccomp's binary-tree optimisation
//! emits it for Docker and crun:
//! - the numbers are cut into runs of equal outcome covering all 2^32 values: allowed
//!   (matched without conditions), not listed (the mismatch action), and one run per call
//!   with argument conditions;
//! - the runs are searched by halves (`jge` on the run where the upper half starts), so a
//!   call meets ~log2(runs) jumps (~8 for moby's list) and the whole program is ~3 instructions
//!   per run: ~400 for moby's list on x86_64;
//! - the few calls with argument conditions (`clone`, `personality`, `socket`...) end in
//!   seccompiler's own rule chains (`BpfProgram::from(SeccompRule)`), each rule followed by
//!   the match action and the chain by the mismatch action, exactly as seccompiler lays them
//!   out after its `jeq`: the argument checks are seccompiler's, only the dispatch changed.
//!
//! The architecture check is seccompiler's too: another architecture's calls kill the process.
//! `seccomp::equivalence` (a test) runs this program and seccompiler's flat one in a BPF
//! interpreter over every number and the arguments each condition turns on, and requires the
//! same action from both.

use seccompiler::{BackendError, BpfProgram, SeccompAction, TargetArch, sock_filter};

use super::SeccompError;
use super::compile::Chains;

/// `AUDIT_ARCH_X86_64` (`EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`).
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// `AUDIT_ARCH_AARCH64` (`EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`).
const AUDIT_ARCH_AARCH64: u32 = 183 | 0x8000_0000 | 0x4000_0000;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

/// The audit architecture value of `arch` (what `seccomp_data.arch` holds).
pub(crate) fn audit_arch(arch: TargetArch) -> u32 {
    match arch {
        TargetArch::x86_64 => AUDIT_ARCH_X86_64,
        TargetArch::aarch64 => AUDIT_ARCH_AARCH64,
        TargetArch::riscv64 => 243 | 0x8000_0000 | 0x4000_0000,
    }
}

/// What the numbers of one run get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome<'c> {
    /// Not listed: the mismatch action.
    Mismatch,
    /// Listed without conditions: the match action.
    Match,
    /// One call with argument conditions: its rules' chain.
    Rules(&'c [seccompiler::SeccompRule]),
}

fn stmt(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: (libc::BPF_JMP | code | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

fn ret(k: u32) -> sock_filter {
    stmt(libc::BPF_RET | libc::BPF_K, k)
}

fn load(offset: u32) -> sock_filter {
    stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset)
}

/// The filter `chains` under `mismatch` / `on_match` for `arch` (see the module docs).
pub(crate) fn program(
    chains: &Chains,
    mismatch: SeccompAction,
    on_match: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram, SeccompError> {
    let runs = runs(chains)?;
    let actions = (u32::from(mismatch), u32::from(on_match));
    let mut out = vec![
        load(DATA_ARCH),
        jump(libc::BPF_JEQ, audit_arch(arch), 1, 0),
        ret(libc::SECCOMP_RET_KILL_PROCESS),
        load(DATA_NR),
    ];
    search(&runs, actions, &mut out);
    if out.len() >= libc::BPF_MAXINSNS as usize {
        return Err(SeccompError::Compile(BackendError::FilterTooLarge(
            out.len(),
        )));
    }
    Ok(out)
}

/// `chains` as runs `(first number, outcome)` in order, the first from 0, each up to the next.
fn runs(chains: &Chains) -> Result<Vec<(u32, Outcome<'_>)>, SeccompError> {
    let mut runs = vec![(0u32, Outcome::Mismatch)];
    for (&nr, chain) in chains {
        let nr = u32::try_from(nr).map_err(|_| SeccompError::Unsupported {
            what: format!("system call number {nr}"),
        })?;
        let outcome = match chain.as_deref() {
            None | Some([]) => Outcome::Match,
            Some(rules) => Outcome::Rules(rules),
        };
        // The last run is the gap of unlisted numbers after the previous call: empty if this
        // call follows it directly.
        if runs.last().is_some_and(|&(start, _)| start == nr) {
            runs.pop();
        }
        let extends =
            outcome == Outcome::Match && runs.last().is_some_and(|(_, o)| *o == Outcome::Match);
        if !extends {
            runs.push((nr, outcome));
        }
        if let Some(next) = nr.checked_add(1) {
            runs.push((next, Outcome::Mismatch));
        }
    }
    Ok(runs)
}

/// Append the search of `runs` (the accumulator holds the number): halves by `jge`, leaves
/// returning their action or running their rules.
fn search(runs: &[(u32, Outcome<'_>)], actions: (u32, u32), out: &mut Vec<sock_filter>) {
    let (mismatch, on_match) = actions;
    let [(_, outcome)] = runs else {
        let mid = runs.len() / 2;
        let mut lower = Vec::new();
        search(&runs[..mid], actions, &mut lower);
        let split = runs[mid].0;
        match u8::try_from(lower.len()) {
            Ok(skip) => out.push(jump(libc::BPF_JGE, split, skip, 0)),
            // Beyond a conditional jump's reach: through an unconditional one.
            Err(_) => {
                out.push(jump(libc::BPF_JGE, split, 0, 1));
                out.push(stmt(libc::BPF_JMP | libc::BPF_JA, lower.len() as u32));
            }
        }
        out.append(&mut lower);
        search(&runs[mid..], actions, out);
        return;
    };
    match outcome {
        Outcome::Mismatch => out.push(ret(mismatch)),
        Outcome::Match => out.push(ret(on_match)),
        Outcome::Rules(rules) => {
            for rule in rules.iter() {
                out.extend(BpfProgram::from(rule.clone()));
                out.push(ret(on_match));
            }
            out.push(ret(mismatch));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_neighbours_and_cover_every_number() {
        let cond = seccompiler::SeccompCondition::new(
            0,
            seccompiler::SeccompCmpArgLen::Qword,
            seccompiler::SeccompCmpOp::Eq,
            1,
        )
        .unwrap();
        let rule = seccompiler::SeccompRule::new(vec![cond]).unwrap();
        let chains: Chains = [
            (0, None),
            (1, None),
            (2, Some(vec![rule.clone()])),
            (3, None),
            (7, None),
            (8, Some(vec![])),
        ]
        .into_iter()
        .collect();
        let runs = runs(&chains).unwrap();
        let starts: Vec<u32> = runs.iter().map(|r| r.0).collect();
        assert_eq!(starts, [0, 2, 3, 4, 7, 9]);
        assert_eq!(runs[0].1, Outcome::Match);
        assert!(matches!(runs[1].1, Outcome::Rules(r) if r.len() == 1));
        assert_eq!(runs[3].1, Outcome::Mismatch);
        assert_eq!(runs[4].1, Outcome::Match);
        assert_eq!(runs[5].1, Outcome::Mismatch);
        let max: Chains = [(i64::from(u32::MAX), None)].into_iter().collect();
        assert_eq!(runs_of(&max), [0, u32::MAX]);
        let negative: Chains = [(-1, None)].into_iter().collect();
        assert!(matches!(
            super::runs(&negative),
            Err(SeccompError::Unsupported { .. })
        ));
    }

    fn runs_of(chains: &Chains) -> Vec<u32> {
        runs(chains).unwrap().iter().map(|r| r.0).collect()
    }

    #[test]
    fn far_halves_are_reached_through_an_unconditional_jump() {
        // 400 alternating runs: the root's lower half is longer than 255 instructions.
        let chains: Chains = (0..400).map(|n| (n * 2, None)).collect();
        let p = program(
            &chains,
            SeccompAction::Errno(1),
            SeccompAction::Allow,
            TargetArch::x86_64,
        )
        .unwrap();
        assert_eq!(p[5].code as u32, libc::BPF_JMP | libc::BPF_JA);
        assert!(p[5].k > 255);
    }
}
