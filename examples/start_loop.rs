//! Profiling aid: create + start + wait + remove of /bin/true containers in a loop.
//! `cargo run --release --example start_loop -- [N] [ephemeral] [hostnet] [layers500]`
use std::path::Path;
use std::time::Instant;

use molde::container::{Container, Network, Stdio};
use molde::image::{ImageBuilder, Store, base};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(200);
    let ephemeral = args.iter().any(|a| a == "ephemeral");
    let hostnet = args.iter().any(|a| a == "hostnet");
    let dir = std::env::var("START_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let tmp = tempfile::Builder::new()
        .prefix("start-loop-")
        .tempdir_in(dir)
        .unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let mut image =
        base::from_host(&store, &[Path::new("/bin/true"), Path::new("/bin/sleep")]).unwrap();
    if args.iter().any(|a| a == "layers500") {
        let mut builder = ImageBuilder::from_image(&image);
        for i in 1..500 {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(8);
            h.set_mtime(0);
            b.append_data(
                &mut h,
                format!("etc/layer-{i:03}"),
                format!("{i:08}").as_bytes(),
            )
            .unwrap();
            let layer = store.add_layer(&b.into_inner().unwrap()[..]).unwrap().layer;
            builder = builder.layer(layer, format!("layer {i}"));
        }
        image = store.commit(builder).unwrap();
    }
    let phases = std::cell::RefCell::new([0f64; 4]);
    let run = || {
        let t0 = Instant::now();
        let mut c = Container::builder(&store, &image)
            .command("/bin/true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .ephemeral(ephemeral)
            .network(if hostnet {
                Network::Host
            } else {
                Network::Isolated
            })
            .create()
            .unwrap();
        let t1 = Instant::now();
        c.start().unwrap();
        let t2 = Instant::now();
        c.wait().unwrap();
        let t3 = Instant::now();
        c.remove().unwrap();
        let t4 = Instant::now();
        let mut p = phases.borrow_mut();
        for (i, (a, b)) in [(t0, t1), (t1, t2), (t2, t3), (t3, t4)]
            .into_iter()
            .enumerate()
        {
            p[i] += (b - a).as_secs_f64() * 1000.0;
        }
    };
    for _ in 0..3 {
        run();
    }
    *phases.borrow_mut() = [0.0; 4];
    let mut times = Vec::new();
    let all = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        run();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let total = all.elapsed().as_secs_f64() * 1000.0;
    times.sort_by(f64::total_cmp);
    println!(
        "n={n} median={:.3}ms p10={:.3}ms p90={:.3}ms mean={:.3}ms",
        times[n / 2],
        times[n / 10],
        times[n * 9 / 10],
        total / n as f64
    );
    let p = phases.borrow();
    println!(
        "mean create={:.3} start={:.3} wait={:.3} remove={:.3} ms",
        p[0] / n as f64,
        p[1] / n as f64,
        p[2] / n as f64,
        p[3] / n as f64
    );
}
