//! A profile's rules for one container, compiled to BPF with `seccompiler`.
//!
//! A seccompiler filter has one action on match and one on mismatch, while a profile gives each
//! rule its own action. So a profile becomes a stack of filters, which the kernel runs all of,
//! keeping the result of highest precedence (KILL > TRAP > ERRNO > TRACE > LOG > ALLOW; among
//! equals, that of the filter installed last):
//! - the base filter: the profile's default action on mismatch, ALLOW for every rule's calls
//!   (with the rule's argument filters), whatever the rule's action;
//! - one filter per other action (installed after the base, in the order first met): that
//!   action for its rules' calls, ALLOW otherwise.
//!
//! A call a rule matches is thus allowed by the base and given its rule's action by the other
//! filters; a call no rule matches gets the default action from the base.
//!
//! The argument conditions are seccompiler's (`SeccompRule`); each filter's dispatch on the
//! system call number is a decision tree of ours (`tree`), where seccompiler would emit a
//! linear chain.

use std::collections::BTreeMap;

use oci_spec::runtime::{LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator, LinuxSyscall};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule,
    TargetArch,
};

use super::SeccompError;
use super::{table, tree};

/// Each call's rules, by number: `None` matches unconditionally; else any of the rules (each
/// all of its conditions).
pub(crate) type Chains = BTreeMap<i64, Option<Vec<SeccompRule>>>;

/// How one filter's chains become BPF: `(chains, mismatch, match, architecture)`.
pub(crate) type Emit =
    fn(&Chains, SeccompAction, SeccompAction, TargetArch) -> Result<BpfProgram, SeccompError>;

/// An architecture to compile for: seccompiler's name of it and its system call numbers.
#[derive(Clone, Copy)]
pub(crate) struct Arch<'t> {
    /// The architecture.
    pub target: TargetArch,
    /// The number of a system call by name, if the architecture has it.
    pub number: &'t dyn Fn(&str) -> Option<i64>,
}

impl Arch<'static> {
    /// This build's architecture.
    pub(crate) fn here() -> Arch<'static> {
        Arch {
            target: if cfg!(target_arch = "aarch64") {
                TargetArch::aarch64
            } else {
                TargetArch::x86_64
            },
            number: &table::number,
        }
    }
}

/// The seccompiler action of a profile's action (`errno` for `SCMP_ACT_ERRNO`, default EPERM).
fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<SeccompAction, SeccompError> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => {
            SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32))
        }
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(0)),
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Unsupported {
                what: "SCMP_ACT_NOTIFY (no seccomp agent)".into(),
            });
        }
    })
}

/// One argument filter (64-bit comparisons, as libseccomp's).
fn condition(arg: &LinuxSeccompArg) -> Result<SeccompCondition, SeccompError> {
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
        // libseccomp's: (arg & value) == valueTwo.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            SeccompCmpOp::MaskedEq(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    let index = u8::try_from(arg.index()).map_err(|_| SeccompError::Unsupported {
        what: format!("argument index {}", arg.index()),
    })?;
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value).map_err(SeccompError::Compile)
}

/// Add `rule`'s calls (known on `arch`) to `chains`.
fn add(chains: &mut Chains, rule: &LinuxSyscall, arch: Arch<'_>) -> Result<(), SeccompError> {
    let conditions = rule
        .args()
        .iter()
        .flatten()
        .map(condition)
        .collect::<Result<Vec<_>, _>>()?;
    for name in rule.names() {
        let Some(nr) = (arch.number)(name) else {
            // As runc: a call this architecture lacks cannot be made, so nothing to filter.
            continue;
        };
        let chain = chains.entry(nr).or_insert_with(|| Some(Vec::new()));
        match (chain, conditions.is_empty()) {
            (slot, true) => *slot = None,
            (Some(rules), false) => {
                rules.push(SeccompRule::new(conditions.clone()).map_err(SeccompError::Compile)?)
            }
            (None, false) => {}
        }
    }
    Ok(())
}

/// seccompiler's own program for one filter: a linear chain, a `jeq` per call (what molde
/// installed before `tree`; kept as the reference `tree` is tested against).
#[cfg(test)]
pub(crate) fn flat(
    chains: &Chains,
    mismatch: SeccompAction,
    on_match: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram, SeccompError> {
    let rules = chains
        .iter()
        .map(|(nr, chain)| (*nr, chain.clone().unwrap_or_default()))
        .collect();
    let filter = seccompiler::SeccompFilter::new(rules, mismatch, on_match, arch)
        .map_err(SeccompError::Compile)?;
    BpfProgram::try_from(filter).map_err(SeccompError::Compile)
}

/// The filters for `rules` under `default` on this architecture, base first (see the module
/// docs).
pub(crate) fn compile<'a>(
    default: (LinuxSeccompAction, Option<u32>),
    rules: impl Iterator<Item = &'a LinuxSyscall>,
) -> Result<Vec<BpfProgram>, SeccompError> {
    compile_for(Arch::here(), default, rules, tree::program)
}

/// The filters for `rules` under `default` on `arch`, each made by `emit`.
pub(crate) fn compile_for<'a>(
    arch: Arch<'_>,
    default: (LinuxSeccompAction, Option<u32>),
    rules: impl Iterator<Item = &'a LinuxSyscall>,
    emit: Emit,
) -> Result<Vec<BpfProgram>, SeccompError> {
    let default = action(default.0, default.1)?;
    let mut base = Chains::new();
    let mut others: Vec<(SeccompAction, Chains)> = Vec::new();
    for rule in rules {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        add(&mut base, rule, arch)?;
        if act != SeccompAction::Allow {
            let i = match others.iter().position(|(a, _)| *a == act) {
                Some(i) => i,
                None => {
                    others.push((act.clone(), Chains::new()));
                    others.len() - 1
                }
            };
            add(&mut others[i].1, rule, arch)?;
        }
    }
    let mut programs = Vec::with_capacity(1 + others.len());
    if default != SeccompAction::Allow {
        programs.push(emit(&base, default, SeccompAction::Allow, arch.target)?);
    }
    for (act, chains) in others {
        programs.push(emit(&chains, SeccompAction::Allow, act, arch.target)?);
    }
    Ok(programs)
}
