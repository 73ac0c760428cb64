//! A Dockerfile whose `FROM` and `COPY --from` name images of a real `docker-registry` on
//! 127.0.0.1, built in a fresh store with `molde::RegistryResolver`: the images are pulled
//! (with progress), the build runs, its image runs; a second build finds them in the store;
//! an image the registry lacks is a typed error naming the reference.

#[path = "../registry/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use molde::RegistryResolver;
use molde::container::Container;
use molde::container::build::dockerfile::{Dockerfile, ImageLookupError};
use molde::image::{Store, base};
use molde::registry::{Progress, Push};

/// The registry, with `base:1` (a shell and a few host programs) and `tools:2` (one file,
/// `/l0`) pushed by molde from a store of their own.
fn registry_with_images() -> Registry {
    let reg = Registry::start();
    let a = Store::temporary().unwrap();
    let host: Vec<&Path> = ["/bin/sh", "/bin/cat", "/bin/echo"]
        .iter()
        .map(Path::new)
        .filter(|p| p.exists())
        .collect();
    let image = base::from_host(&a, &host).unwrap();
    a.tag(&image, "base:1").unwrap();
    Push::new(&a, "base:1", &reg.reference("base:1"))
        .run()
        .unwrap();
    image_of(&a, &[b"from the tools image\n".to_vec()], "tools:2");
    Push::new(&a, "tools:2", &reg.reference("tools:2"))
        .run()
        .unwrap();
    reg
}

fn can_build() -> bool {
    registry_or_skip()
        && require(
            molde::layerfs::privilege::is_privileged(),
            "needs root to run build containers",
        )
}

#[test]
fn from_and_copy_from_images_of_a_registry_are_pulled() {
    if !can_build() {
        return;
    }
    let reg = registry_with_images();
    let (base, tools) = (reg.reference("base:1"), reg.reference("tools:2"));
    let text = format!(
        "FROM {base} AS build\n\
         RUN echo built in a stage > /out.txt\n\
         FROM {base}\n\
         COPY --from=build /out.txt /from-stage.txt\n\
         COPY --from={tools} /l0 /from-image.txt\n\
         CMD [\"/bin/cat\", \"/from-stage.txt\", \"/from-image.txt\"]\n"
    );
    let ctx = tempfile::tempdir().unwrap();
    let store = Store::temporary().unwrap();
    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = events.clone();
    let resolver = RegistryResolver::new().progress(Arc::new(move |p: &Progress| {
        if let Progress::Resolving { reference } = p {
            seen.lock().unwrap().push(reference.clone());
        }
    }));
    let df = Dockerfile::parse(&text, ctx.path(), &[]).unwrap();
    let report = df
        .clone()
        .into_build_with(&store, &resolver)
        .unwrap()
        .build(&store, "pulled-app:1")
        .unwrap();
    // Each image pulled once (the two FROMs of base:1 share one lookup), progress reported.
    let pulled = events.lock().unwrap().clone();
    assert_eq!(pulled.len(), 2, "{pulled:?}");
    assert!(pulled[0].ends_with("base:1"), "{pulled:?}");
    assert!(pulled[1].ends_with("tools:2"), "{pulled:?}");
    assert!(store.resolve(&base).is_ok() && store.resolve(&tools).is_ok());

    let out = Container::builder(&store, &report.image).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "built in a stage\nfrom the tools image\n"
    );

    // Built again: both images are in the store now, nothing is pulled.
    events.lock().unwrap().clear();
    df.into_build_with(&store, &resolver)
        .unwrap()
        .build(&store, "pulled-app:2")
        .unwrap();
    assert!(events.lock().unwrap().is_empty());
}

#[test]
fn an_image_the_registry_lacks_is_a_typed_error_naming_it() {
    if !registry_or_skip() {
        return;
    }
    let reg = registry_with_images();
    let store = Store::temporary().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let missing = reg.reference("nope:1");
    let check = |text: String, line: usize, instruction: &str| {
        let e = Dockerfile::parse(&text, ctx.path(), &[])
            .unwrap()
            .into_build_with(&store, &RegistryResolver::new())
            .unwrap_err();
        assert_eq!((e.line, e.instruction.as_str()), (line, instruction), "{e}");
        assert!(e.to_string().contains(&missing), "{e}");
        match e.image.as_deref() {
            Some(ImageLookupError::NotFound { reference, .. }) => assert_eq!(reference, &missing),
            other => panic!("expected NotFound naming {missing}: {other:?} ({e})"),
        }
    };
    check(format!("FROM {missing}\nRUN true\n"), 1, "FROM");
    let base = reg.reference("base:1");
    check(
        format!("FROM {base}\nCOPY --from={missing} /x /x\n"),
        2,
        "COPY",
    );
    // A registry that is not there: not "not found", but a failure that says why.
    let gone = format!("127.0.0.1:{}/base:1", closed_port());
    let e = Dockerfile::parse(&format!("FROM {gone}\n"), ctx.path(), &[])
        .unwrap()
        .into_build_with(
            &store,
            &RegistryResolver::new().options(
                molde::registry::RegistryOptions::default()
                    .retries(1, std::time::Duration::from_millis(1)),
            ),
        )
        .unwrap_err();
    match e.image.as_deref() {
        Some(ImageLookupError::Failed { reference, .. }) => assert_eq!(reference, &gone),
        other => panic!("expected Failed for {gone}: {other:?} ({e})"),
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
