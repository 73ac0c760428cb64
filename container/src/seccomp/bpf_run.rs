//! A classic-BPF interpreter for seccomp filters, for tests: the instructions seccomp
//! accepts (`ld [k]`, `and #k`, `ja`, `jeq`/`jgt`/`jge`/`jset #k`, `ret #k`), run the way the
//! kernel does over a `struct seccomp_data`. Anything else, a jump past the end or a load
//! outside the data panics (the test fails) rather than guessing.

use seccompiler::sock_filter;

/// `struct seccomp_data`: what a filter sees of one system call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Data {
    /// The system call number (the kernel's `int`, as its 32 bits).
    pub nr: u32,
    /// The audit architecture value.
    pub arch: u32,
    /// The instruction pointer.
    pub ip: u64,
    /// The six arguments.
    pub args: [u64; 6],
}

impl Data {
    /// The 32-bit word at byte `offset` (little-endian, as x86_64 and aarch64 lay it out).
    fn word(&self, offset: u32) -> u32 {
        let mut bytes = [0u8; 64];
        bytes[0..4].copy_from_slice(&self.nr.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.arch.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.ip.to_le_bytes());
        for (i, arg) in self.args.iter().enumerate() {
            bytes[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_le_bytes());
        }
        let o = offset as usize;
        assert!(o % 4 == 0 && o + 4 <= 64, "a load at offset {offset}");
        u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap())
    }
}

/// The value `program` returns for `data`.
pub(crate) fn run(program: &[sock_filter], data: &Data) -> u32 {
    const JMP_K: u32 = libc::BPF_JMP | libc::BPF_K;
    let mut a: u32 = 0;
    let mut pc = 0usize;
    loop {
        let i = program
            .get(pc)
            .unwrap_or_else(|| panic!("ran past the end at {pc}"));
        pc += 1;
        let cond = |taken: bool| usize::from(if taken { i.jt } else { i.jf });
        match u32::from(i.code) {
            c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => a = data.word(i.k),
            c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => a &= i.k,
            c if c == libc::BPF_JMP | libc::BPF_JA => pc += i.k as usize,
            c if c == JMP_K | libc::BPF_JEQ => pc += cond(a == i.k),
            c if c == JMP_K | libc::BPF_JGT => pc += cond(a > i.k),
            c if c == JMP_K | libc::BPF_JGE => pc += cond(a >= i.k),
            c if c == JMP_K | libc::BPF_JSET => pc += cond(a & i.k != 0),
            c if c == libc::BPF_RET | libc::BPF_K => return i.k,
            c => panic!("instruction {c:#x} at {}", pc - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ins(code: u32, jt: u8, jf: u8, k: u32) -> sock_filter {
        sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        }
    }

    #[test]
    fn runs_loads_jumps_and_returns() {
        let jmp = libc::BPF_JMP | libc::BPF_K;
        // if arg0's low word & 0xf0 >= 0x20 { 7 } else if nr == 3 { 5 } else { 6 }
        let p = [
            ins(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 16),
            ins(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, 0, 0, 0xf0),
            ins(jmp | libc::BPF_JGE, 4, 0, 0x20),
            ins(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
            ins(jmp | libc::BPF_JEQ, 0, 1, 3),
            ins(libc::BPF_RET, 0, 0, 5),
            ins(libc::BPF_RET, 0, 0, 6),
            ins(libc::BPF_RET, 0, 0, 7),
        ];
        let data = |nr, arg| Data {
            nr,
            args: [arg, 0, 0, 0, 0, 0],
            ..Data::default()
        };
        assert_eq!(run(&p, &data(3, 0x1f)), 5);
        assert_eq!(run(&p, &data(4, 0x1f)), 6);
        assert_eq!(run(&p, &data(3, 0x2_0000_0020)), 7);
        // The high word of arg0; jset.
        let high = [
            ins(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 20),
            ins(jmp | libc::BPF_JSET, 0, 1, 2),
            p[5].clone(),
            p[6].clone(),
        ];
        assert_eq!(run(&high, &data(0, 0x2_0000_0000)), 5);
        assert_eq!(run(&high, &data(0, 0x1_0000_0002)), 6);
    }
}
