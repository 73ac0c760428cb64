//! A raw tar writer for tests: writes any header the tests ask for, including the hostile ones
//! (`..`, NUL bytes, over-long names) that the `tar` crate refuses to write.
#![allow(dead_code)]

/// Type flags.
pub const FILE: u8 = b'0';
pub const HARDLINK: u8 = b'1';
pub const SYMLINK: u8 = b'2';
pub const CHAR: u8 = b'3';
pub const BLOCK: u8 = b'4';
pub const DIR: u8 = b'5';
pub const FIFO: u8 = b'6';

/// One header's fields.
#[derive(Debug, Clone)]
pub struct Entry {
    pub typeflag: u8,
    pub name: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub dev: (u64, u64),
    pub data: Vec<u8>,
    /// Extra PAX records written before the header (besides `path`/`linkpath` for long names).
    pub pax: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    pub fn new(typeflag: u8, name: impl AsRef<[u8]>) -> Entry {
        Entry {
            typeflag,
            name: name.as_ref().to_vec(),
            link: Vec::new(),
            mode: if typeflag == DIR { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            dev: (0, 0),
            data: Vec::new(),
            pax: Vec::new(),
        }
    }
}

/// A tar being written.
#[derive(Debug, Default, Clone)]
pub struct RawTar {
    pub bytes: Vec<u8>,
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}", v, width = field.len() - 1);
    let s = s.as_bytes();
    let s = &s[s.len() - (field.len() - 1)..];
    field[..s.len()].copy_from_slice(s);
    field[field.len() - 1] = 0;
}

/// A PAX record `LEN KEY=VALUE\n`.
pub fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 2; // '=' and '\n'
    let mut len = body + 1;
    loop {
        let total = body + 1 + len.to_string().len();
        if total == len {
            break;
        }
        len = total;
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

impl RawTar {
    pub fn new() -> RawTar {
        RawTar::default()
    }

    /// Write one raw header block (names cut to their fields) and the data, padded.
    pub fn raw(&mut self, e: &Entry) -> &mut Self {
        let mut h = [0u8; 512];
        let name = &e.name[..e.name.len().min(100)];
        h[..name.len()].copy_from_slice(name);
        octal(&mut h[100..108], u64::from(e.mode));
        octal(&mut h[108..116], e.uid);
        octal(&mut h[116..124], e.gid);
        octal(&mut h[124..136], e.data.len() as u64);
        octal(&mut h[136..148], e.mtime);
        h[156] = e.typeflag;
        let link = &e.link[..e.link.len().min(100)];
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        octal(&mut h[329..337], e.dev.0);
        octal(&mut h[337..345], e.dev.1);
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        octal(&mut h[148..155], sum);
        h[155] = b' ';
        self.bytes.extend_from_slice(&h);
        self.data(&e.data);
        self
    }

    /// Append data padded to a block.
    pub fn data(&mut self, data: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// A PAX extended header with these records.
    pub fn pax(&mut self, records: &[(&[u8], &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            data.extend(pax_record(k, v));
        }
        let mut x = Entry::new(b'x', "././@PaxHeader");
        x.data = data;
        self.raw(&x)
    }

    /// A GNU long name (`L`) header for the next entry.
    pub fn gnu_long_name(&mut self, name: &[u8]) -> &mut Self {
        let mut l = Entry::new(b'L', "././@LongLink");
        l.data = name.to_vec();
        l.data.push(0);
        self.raw(&l)
    }

    /// An entry, with PAX `path`/`linkpath` records when its names do not fit the header (or
    /// hold a NUL byte), and its extra PAX records.
    pub fn entry(&mut self, e: &Entry) -> &mut Self {
        let mut records: Vec<(Vec<u8>, Vec<u8>)> = e.pax.clone();
        if e.name.len() > 100 || e.name.contains(&0) {
            records.push((b"path".to_vec(), e.name.clone()));
        }
        if e.link.len() > 100 || e.link.contains(&0) {
            records.push((b"linkpath".to_vec(), e.link.clone()));
        }
        if !records.is_empty() {
            let refs: Vec<(&[u8], &[u8])> = records
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .collect();
            self.pax(&refs);
        }
        let mut e = e.clone();
        if e.name.contains(&0) {
            e.name = b"nul-name-placeholder".to_vec();
        }
        self.raw(&e)
    }

    pub fn file(&mut self, name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> &mut Self {
        let mut e = Entry::new(FILE, name);
        e.data = data.as_ref().to_vec();
        self.entry(&e)
    }

    pub fn dir(&mut self, name: impl AsRef<[u8]>) -> &mut Self {
        self.entry(&Entry::new(DIR, name))
    }

    pub fn symlink(&mut self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Self {
        let mut e = Entry::new(SYMLINK, name);
        e.link = target.as_ref().to_vec();
        e.mode = 0o777;
        self.entry(&e)
    }

    pub fn hardlink(&mut self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Self {
        let mut e = Entry::new(HARDLINK, name);
        e.link = target.as_ref().to_vec();
        self.entry(&e)
    }

    pub fn fifo(&mut self, name: impl AsRef<[u8]>) -> &mut Self {
        self.entry(&Entry::new(FIFO, name))
    }

    pub fn char_dev(&mut self, name: impl AsRef<[u8]>, major: u64, minor: u64) -> &mut Self {
        let mut e = Entry::new(CHAR, name);
        e.dev = (major, minor);
        self.entry(&e)
    }

    /// The end-of-archive blocks, and the bytes.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.bytes);
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }
}
