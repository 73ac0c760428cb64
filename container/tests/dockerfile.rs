//! Building a Dockerfile end to end: a base from host binaries, the result run and inspected.

mod common;

use std::fs;
use std::path::Path;

use molde_container::Container;
use molde_container::build::dockerfile::Dockerfile;
use molde_image::Store;

#[test]
fn dockerfile_builds_runs_and_caches() {
    // Root, or rootless with subordinate ids (the unprivileged pass).
    if !common::containers_or_skip() {
        return;
    }
    let store = Store::temporary().unwrap();
    let host: Vec<&Path> = ["/bin/sh", "/bin/cat", "/bin/ls", "/bin/mkdir", "/bin/echo"]
        .iter()
        .map(Path::new)
        .filter(|p| p.exists())
        .collect();
    let base = molde_image::base::from_host(&store, &host).unwrap();
    store.tag(&base, "hostbase:1").unwrap();
    let ctx = tempfile::tempdir().unwrap();
    fs::create_dir(ctx.path().join("www")).unwrap();
    fs::write(ctx.path().join("www/index.html"), "<p>hello</p>\n").unwrap();
    let text = r#"# A small site image
ARG BASE=nothing
FROM ${BASE}
ARG GREETING=hi
ENV APP_HOME=/srv/app \
    MODE=prod
WORKDIR $APP_HOME
COPY --chown=33:33 www/ ./www/
RUN echo "$GREETING from $MODE" > greeting.txt \
 && mkdir -p /var/log/app
RUN ["/bin/ls", "/srv/app/www"]
EXPOSE 8080
VOLUME /var/log/app
LABEL org.opencontainers.image.title="site" version=$GREETING
USER 33
STOPSIGNAL SIGQUIT
ENTRYPOINT ["/bin/cat"]
CMD ["/srv/app/greeting.txt"]
"#;
    let df = Dockerfile::parse(
        text,
        ctx.path(),
        &[("BASE", "hostbase:1"), ("GREETING", "hello")],
    )
    .unwrap();
    let report = df
        .clone()
        .into_build(&store)
        .unwrap()
        .build(&store, "site:1")
        .unwrap();
    let img = &report.image;
    assert_eq!(img.layers().len(), 1 + 4, "{}", img.history_table());
    assert_eq!(img.env_var("MODE"), Some("prod"));
    assert_eq!(img.working_dir(), Some("/srv/app"));
    assert_eq!(img.user(), Some("33"));
    assert_eq!(img.exposed_ports(), vec!["8080/tcp"]);
    assert_eq!(img.volumes(), vec!["/var/log/app"]);
    assert_eq!(img.labels()["version"], "hello");
    assert_eq!(img.stop_signal(), Some("SIGQUIT"));
    let by: Vec<String> = img
        .history()
        .iter()
        .filter_map(|h| h.created_by.clone())
        .collect();
    assert!(
        by.iter()
            // The shell expanded the ARG from its environment; the history names it as
            // BuildKit does.
            .any(
                |b| b.starts_with("RUN |1 GREETING=hello /bin/sh -c echo \"$GREETING from $MODE\"")
            ),
        "{by:#?}"
    );
    let ls = report
        .steps
        .iter()
        .find(|s| s.instruction.contains("[\"/bin/ls\""))
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ls.output), "index.html\n");
    // One history entry per instruction, as Docker writes it; context paths, not host ones.
    assert!(
        by.contains(&"ENV APP_HOME=/srv/app MODE=prod".to_owned()),
        "{by:#?}"
    );
    assert!(
        by.contains(&"COPY --chown=33:33 www/ ./www/".to_owned()),
        "{by:#?}"
    );
    let out = Container::builder(&store, img).output().unwrap();
    assert!(out.success());
    assert_eq!(out.stdout, b"hello from prod\n");
    let out = Container::builder(&store, img)
        .entrypoint(["/bin/ls", "-ln", "/srv/app/www/index.html"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!((f[2], f[3]), ("33", "33"), "{line}");
    assert!(by.contains(&"ARG GREETING=hello".to_owned()), "{by:#?}");
    assert_eq!(
        img.env_var("GREETING"),
        None,
        "an ARG is not in the image's config"
    );
    // Another value for the build arg: the RUN that sees it runs again.
    let other = Dockerfile::parse(
        text,
        ctx.path(),
        &[("BASE", "hostbase:1"), ("GREETING", "hey")],
    )
    .unwrap()
    .into_build(&store)
    .unwrap()
    .build(&store, "site:other")
    .unwrap();
    assert_eq!(other.runs_executed(), 2);
    let out = Container::builder(&store, &other.image).output().unwrap();
    assert_eq!(out.stdout, b"hey from prod\n");
    // Rebuilt unchanged: no RUN runs.
    let again = df
        .into_build(&store)
        .unwrap()
        .build(&store, "site:2")
        .unwrap();
    assert_eq!(again.runs_executed(), 0);
    assert_eq!(again.image.layers(), img.layers());
    eprintln!(
        "first build {:?}, cached rebuild {:?}",
        report.duration, again.duration
    );
    // FROM naming a missing image: an error naming the FROM line.
    let err = Dockerfile::parse("\nFROM nope:1\nRUN true", ctx.path(), &[])
        .unwrap()
        .into_build(&store)
        .unwrap_err();
    assert_eq!(err.line, 2);
}
