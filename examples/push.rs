//! Push an image of the store to a registry, as `docker push` does.
//!
//! ```text
//! cargo run --example push -- IMAGE TARGET
//! ```
//!
//! IMAGE is a tag, id or digest in the store at `$MOLDE_ROOT` (else the default store);
//! `busybox` is made first from the host's static busybox (Debian's `busybox-static`) when
//! the store has no such image, so that a local registry can be tried at once:
//!
//! ```text
//! docker-registry serve config.yml          # listening on 127.0.0.1:5000
//! cargo run --example push -- busybox 127.0.0.1:5000/tools/busybox:1
//! cargo run --example pull -- 127.0.0.1:5000/tools/busybox:1 busybox echo hello
//! ```

use std::process::ExitCode;
use std::sync::Arc;

use molde::image::base;
use molde::registry::{ProgressDisplay, Push};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [image, target] = args.as_slice() else {
        eprintln!("usage: push IMAGE TARGET");
        return ExitCode::from(2);
    };
    match run(image, target) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("push: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(image: &str, target: &str) -> Result<(), Box<dyn std::error::Error>> {
    let store = molde::open_store(molde::image::layout::default_root())?;
    if image == "busybox" && store.resolve("busybox").is_err() {
        let bb = base::static_busybox().ok_or("no static busybox on this host")?;
        let made = base::from_host(&store, &[bb.as_path()])?;
        store.tag(&made, "busybox:latest")?;
    }
    let display = Arc::new(ProgressDisplay::stdout());
    Push::new(&store, image, target)
        .progress(display.callback())
        .run()?;
    Ok(())
}
