//! Pull an image from a registry, as `docker pull` does, then run a command in it.
//!
//! ```text
//! cargo run --example pull -- REF [CMD [ARGS...]]
//! ```
//!
//! REF is `alpine`, `alpine:3.19`, `127.0.0.1:5000/team/app:v1`, `app@sha256:...`. The image
//! goes into the store at `$MOLDE_ROOT` (else the default store); progress is drawn one line
//! per layer. Then a container of it runs CMD (else the image's own command) with this
//! terminal's standard streams, and its exit code becomes this program's. Plain HTTP is
//! used for loopback registries only; credentials come from the usual auth files
//! (`$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.docker/config.json`).
//! Pull the same REF again: each layer says `Already exists`. `MOLDE_PLATFORM=linux/arm64`
//! picks another image of a multi-platform index.

use std::process::ExitCode;
use std::sync::Arc;

use molde::container::{Container, Status, Stdio};
use molde::registry::{Platform, ProgressDisplay, Pull};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pull: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::from(125)
        }
    }
}

fn run() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let Some(reference) = args.next() else {
        eprintln!("usage: pull REF [CMD [ARGS...]]");
        return Ok(ExitCode::from(2));
    };
    let cmd: Vec<String> = args.collect();
    let store = molde::open_store(molde::image::layout::default_root())?;
    let display = Arc::new(ProgressDisplay::stdout());
    let mut pull = Pull::new(&store, &reference).progress(display.callback());
    if let Ok(p) = std::env::var("MOLDE_PLATFORM") {
        pull = pull.platform(p.parse::<Platform>()?);
    }
    let report = pull.run()?;
    println!(
        "{}",
        report
            .tag
            .as_ref()
            .map_or(reference.clone(), |t| t.to_string())
    );

    if !molde::containers_supported_or_skip() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut builder = Container::builder(&store, &report.image)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    if let Some((program, rest)) = cmd.split_first() {
        builder = builder.command(program).args(rest);
    }
    let status = builder.spawn()?.wait()?;
    Ok(match status {
        Status::Exited { code: Some(c), .. } => ExitCode::from(c as u8),
        Status::Exited {
            signal: Some(s), ..
        } => ExitCode::from(128u8.wrapping_add(s as u8)),
        _ => ExitCode::FAILURE,
    })
}
