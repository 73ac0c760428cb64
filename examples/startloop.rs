use molde::container::{Container, Stdio};
use molde::image::{Store, base};
use std::path::Path;
use std::time::Instant;
fn main() {
    let dir = tempfile::tempdir_in("/work").unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let image = base::from_host(&store, &[Path::new("/bin/true")]).unwrap();
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(50);
    let eph = std::env::args().nth(2).is_some();
    for _ in 0..3 {
        run(&store, &image, eph);
    }
    let t = Instant::now();
    for _ in 0..n {
        run(&store, &image, eph);
    }
    eprintln!("avg {:?}", t.elapsed() / n as u32);
}
fn run(store: &Store, image: &molde::image::Image, eph: bool) {
    let mut c = Container::builder(store, image)
        .command("/bin/true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .ephemeral(eph)
        .create()
        .unwrap();
    c.start().unwrap();
    c.wait().unwrap();
    c.remove().unwrap();
}
