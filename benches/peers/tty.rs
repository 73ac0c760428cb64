//! `start-tty`: what a terminal costs a start. create + start + the first byte of the
//! program's output read on the host, with a terminal (`.tty(true)`: a pseudo-terminal opened
//! in the container's devpts, `/dev/console` bound, the master sent over the error channel)
//! against the same with a pipe for stdout, in one run.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use molde::container::{Container, Stdio};
use molde::image::{Image, Store, base};

use super::{Figure, interleave, peak_rss_kib};

/// One start of `/bin/echo x`, timed to its first byte; waited for and removed after.
fn first_byte(store: &Store, image: &Image, tty: bool) -> (Duration, u64) {
    let start = Instant::now();
    let builder = Container::builder(store, image)
        .command("/bin/echo")
        .arg("x")
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    let mut byte = [0u8; 1];
    let (mut c, took) = if tty {
        let mut c = builder.tty(true).start().expect("start with a terminal");
        let mut terminal = c.take_terminal().expect("a terminal");
        terminal.read_exact(&mut byte).expect("read the terminal");
        (c, start.elapsed())
    } else {
        let mut child = builder.stdout(Stdio::piped()).spawn().expect("spawn");
        let mut out = child.stdout.take().expect("piped stdout");
        out.read_exact(&mut byte).expect("read the pipe");
        (child.into_container(), start.elapsed())
    };
    assert_eq!(&byte, b"x");
    c.wait().expect("wait");
    c.remove().expect("remove");
    (took, peak_rss_kib())
}

/// The terminal figures wanted (by name), the store on `fixtures` (a fresh ext4).
pub fn figures(fixtures: &Path, pairs: usize, wanted: &dyn Fn(&str) -> bool) -> Vec<Figure> {
    if !wanted("start-tty") {
        return Vec::new();
    }
    let dir = tempfile::Builder::new()
        .prefix("tty-")
        .tempdir_in(fixtures)
        .expect("tempdir");
    let store = Store::open(dir.path().join("store")).expect("store");
    let image = base::from_host(&store, &[Path::new("/bin/echo")]).expect("image");
    for _ in 0..3 {
        first_byte(&store, &image, true);
        first_byte(&store, &image, false);
    }
    eprintln!("start-tty: molde with a terminal vs molde with pipes ({pairs} pairs)");
    let (ratios, m, p, rss) = interleave(
        pairs,
        || first_byte(&store, &image, true),
        || first_byte(&store, &image, false).0,
    );
    vec![Figure {
        name: "start-tty",
        peer: "molde pipes",
        goal: 1.1,
        ratios,
        molde: m,
        peers: p,
        rss_kib: rss,
        molde_cmd: "Container::builder(&store, &image).command(\"/bin/echo\").arg(\"x\").tty(true)\
                    .start(); take_terminal().read_exact(1 byte)"
            .into(),
        peer_cmd: "the same with .stdout(Stdio::piped()).spawn(), 1 byte read from the pipe".into(),
        note: "image from host binaries (/bin/echo); store and writable layer on a fresh ext4; \
               timed to the first byte read, the wait and removal after"
            .into(),
    }]
}
