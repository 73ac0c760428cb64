//! The frontend without running anything: what each instruction becomes.

use std::path::Path;

use molde_image::{ImageBuilder, Store};

use super::*;
use crate::build::{Base, CopyFrom, Port, RunCommand, RunMount, RunNetwork, Step};

fn stages_of(text: &str, args: &[(&str, &str)]) -> Result<Stages, DockerfileError> {
    let store = Store::temporary().unwrap();
    let base = store
        .commit(
            ImageBuilder::new()
                .env("PATH", "/usr/bin:/bin")
                .env("HOME", "/root"),
        )
        .unwrap();
    Dockerfile::parse(text, Path::new("/ctx"), args)?.into_stages(&mut |name: &str| {
        if name.starts_with("missing") {
            Err(ImageLookupError::NotFound {
                reference: name.into(),
                detail: "no such image".into(),
            })
        } else {
            Ok(base.clone())
        }
    })
}

fn steps(text: &str) -> Vec<Step> {
    let s = stages_of(text, &[]).unwrap();
    s.stages().last().unwrap().1.steps().to_vec()
}

fn err(text: &str) -> DockerfileError {
    match Dockerfile::parse(text, Path::new("/ctx"), &[]) {
        Err(e) => e,
        Ok(_) => stages_of(text, &[]).expect_err("an error"),
    }
}

#[test]
fn stages_and_targets() {
    let s = stages_of(
        "FROM a AS build\nRUN make\nFROM build AS test\nFROM scratch\nCOPY --from=build /out /\nCOPY --from=0 /x /\nCOPY --from=other:1 /y /\n",
        &[],
    )
    .unwrap();
    let names: Vec<&str> = s.stages().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["build", "test", ""]);
    assert!(matches!(s.stages()[1].1.base(), Base::Stage(n) if n == "build"));
    assert!(matches!(s.stages()[2].1.base(), Base::Scratch));
    let froms: Vec<_> = s.stages()[2]
        .1
        .steps()
        .iter()
        .map(|st| match st {
            Step::Copy(c) => c.from.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(froms[0], Some(CopyFrom::Stage("build".into())));
    assert_eq!(froms[1], Some(CopyFrom::Stage("build".into())));
    assert!(matches!(froms[2], Some(CopyFrom::Image(_))));
    assert_eq!(err("FROM a AS x\nFROM b AS X\n").line, 2);
    // A stage FROM a stage that stored ONBUILD triggers runs them first.
    let s = stages_of("FROM a AS p\nONBUILD ENV T=1\nFROM p\nLABEL t=$T\n", &[]).unwrap();
    assert_eq!(
        s.stages()[1].1.steps(),
        [
            Step::Env(vec![("T".into(), "1".into())]),
            Step::Label(vec![("t".into(), "1".into())])
        ]
    );
    assert_eq!(err("FROM a AS 1x\n").line, 1);
    let e = Dockerfile::parse("FROM scratch\n", Path::new("/c"), &[])
        .unwrap()
        .target("nope")
        .into_stages(&mut |n: &str| {
            Err(ImageLookupError::NotFound {
                reference: n.into(),
                detail: "x".into(),
            })
        })
        .unwrap_err();
    assert!(e.message.contains("nope"), "{e}");
    let e = stages_of("FROM a\nFROM missing:1\n", &[]).unwrap_err();
    assert_eq!((e.line, e.instruction.as_str()), (2, "FROM"));
    let image = e.image.as_ref().expect("the typed cause");
    assert_eq!(image.reference(), "missing:1");
    assert!(image.is_not_found());
    // COPY --from an image that cannot be had: the same typed cause, on the COPY's line.
    let e = stages_of("FROM a\nCOPY --from=missing:2 /x /\n", &[]).unwrap_err();
    assert_eq!((e.line, e.instruction.as_str()), (2, "COPY"));
    assert_eq!(
        e.image.map(|i| i.reference().to_owned()).as_deref(),
        Some("missing:2")
    );
}

#[test]
fn arg_scoping_as_docker() {
    // The reference's own example: a global ARG is only for FROM; a bare ARG brings it in.
    let text = "ARG VERSION=latest\nFROM busybox:$VERSION\nLABEL before=[$VERSION]\nARG VERSION\nLABEL after=[$VERSION]\n";
    assert_eq!(
        steps(text),
        vec![
            Step::Label(vec![("before".into(), "[]".into())]),
            Step::Arg("VERSION".into(), "latest".into()),
            Step::Label(vec![("after".into(), "[latest]".into())]),
        ]
    );
    let s = stages_of(text, &[("VERSION", "1.36")]).unwrap();
    assert_eq!(
        s.stages()[0].1.steps()[1],
        Step::Arg("VERSION".into(), "1.36".into())
    );
    // ENV wins over ARG; the base's ENV is visible; defaults and alternatives.
    let st = steps(
        "FROM a\nARG A=1 B\nENV A=2\nWORKDIR $HOME/${A}/${B:-none}/${A:+set}/${NOPE-x}\nARG TARGETARCH\nLABEL arch=$TARGETARCH os=$TARGETOS\n",
    );
    assert_eq!(st[0], Step::Arg("A".into(), "1".into()));
    assert_eq!(st[2], Step::Workdir("/root/2/none/set/x".into()));
    let Step::Label(l) = &st[4] else { panic!() };
    assert_eq!(l[0].1, super::convert::platform().2);
    assert_eq!(l[1].1, "", "TARGETOS was not declared in the stage");
    assert_eq!(err("FROM a\nRUN x\nWORKDIR ${A:?needs A}\n").line, 3);
    assert_eq!(err("RUN x\nFROM a\n").line, 1);
}

#[test]
fn instructions() {
    let st = steps(
        "FROM a\nENV A=1 B=\"two words\"\nLABEL x=1 y=\"$A z\"\nEXPOSE 80 53/udp 8000-8001\nVOLUME [\"/data\", \"/logs\"]\nUSER 1000:1000\nSTOPSIGNAL term\nSHELL [\"/bin/bash\", \"-c\"]\nCMD run it\nENTRYPOINT [\"/e\"]\nHEALTHCHECK --interval=5s --retries=3 CMD check || exit 1\nONBUILD RUN echo hi\nMAINTAINER me <me@x>\n",
    );
    assert_eq!(
        st[0],
        Step::Env(vec![
            ("A".into(), "1".into()),
            ("B".into(), "two words".into())
        ])
    );
    assert_eq!(
        st[1],
        Step::Label(vec![("x".into(), "1".into()), ("y".into(), "1 z".into())])
    );
    assert_eq!(
        st[2],
        Step::Expose(vec![
            Port::tcp(80),
            Port::udp(53),
            Port::tcp(8000),
            Port::tcp(8001)
        ])
    );
    assert_eq!(st[3], Step::Volume(vec!["/data".into(), "/logs".into()]));
    assert_eq!(st[5], Step::StopSignal(nix::sys::signal::Signal::SIGTERM));
    assert_eq!(
        st[7],
        Step::Cmd(vec!["/bin/bash".into(), "-c".into(), "run it".into()])
    );
    let Step::Healthcheck(Some(h)) = &st[9] else {
        panic!("{:?}", st[9])
    };
    assert_eq!(h.test, ["CMD-SHELL", "check || exit 1"]);
    assert_eq!((h.interval, h.retries), (5_000_000_000, 3));
    assert_eq!(st[10], Step::OnBuild("RUN echo hi".into()));
    assert_eq!(st[11], Step::Maintainer("me <me@x>".into()));
    assert_eq!(
        steps("FROM a\nHEALTHCHECK NONE\n"),
        vec![Step::Healthcheck(None)]
    );
    for (text, line) in [
        ("FROM a\nFOO bar\n", 2),
        ("FROM a\nSHELL /bin/bash\n", 2),
        ("FROM a\nENV --x=1 A=1\n", 2),
        ("FROM a\nONBUILD FROM b\n", 2),
        ("FROM a\n\nEXPOSE 80/sctp\n", 3),
        ("FROM a\nHEALTHCHECK --interval=5x CMD true\n", 2),
        ("FROM a\nCOPY ../x /\n", 2),
        ("FROM a\nADD --keep-git-dir https://x/y.git /\n", 2),
        ("FROM a\nRUN --security=insecure true\n", 2),
        ("FROM --platform=linux/s390x a\n", 1),
    ] {
        let e = err(text);
        assert_eq!(e.line, line, "{text}: {e}");
        assert!(
            e.to_string().starts_with(&format!("Dockerfile:{line}:1: ")),
            "{e}"
        );
    }
}

#[test]
fn copy_add_and_run_forms() {
    let st = steps(
        "FROM a\nCOPY --chown=app --chmod=750 --exclude=*.o --parents src/ lib /opt/\nCOPY <<EOF /etc/motd\nhello $HOME\nEOF\nADD --checksum=sha256:ab https://example.com/x.tgz /x/\nRUN --mount=type=cache,target=/root/.cache,sharing=locked --mount=type=secret,id=tok --network=none make\nRUN <<EOF\necho one\necho two\nEOF\nRUN [\"/bin/echo\", \"a b\"]\n",
    );
    let Step::Copy(c) = &st[0] else { panic!() };
    assert_eq!(c.sources, [Path::new("/ctx/src/"), Path::new("/ctx/lib")]);
    assert_eq!(
        (c.chown.as_deref(), c.chmod, c.parents),
        (Some("app"), Some(0o750), true)
    );
    assert_eq!(c.exclude, ["*.o"]);
    assert_eq!(
        st[0].instruction(),
        "COPY --chown=app --chmod=750 --exclude=*.o --parents src/ lib /opt/"
    );
    let Step::Copy(c) = &st[1] else { panic!() };
    assert_eq!(c.inline, [("EOF".to_owned(), b"hello /root\n".to_vec())]);
    assert!(
        matches!(&st[2], Step::AddUrl { url, checksum: Some(_), .. } if url == "https://example.com/x.tgz")
    );
    let Step::Run(r) = &st[3] else { panic!() };
    assert_eq!(r.network, RunNetwork::None);
    assert!(matches!(&r.mounts[0], RunMount::Cache { id, .. } if id == "/root/.cache"));
    assert!(
        matches!(&r.mounts[1], RunMount::Secret { target, .. } if target == "/run/secrets/tok")
    );
    assert_eq!(*r.command(), RunCommand::Shell("make".into()));
    let Step::Run(r) = &st[4] else { panic!() };
    assert_eq!(
        *r.command(),
        RunCommand::Shell("echo one\necho two\n".into())
    );
    let Step::Run(r) = &st[5] else { panic!() };
    assert_eq!(
        *r.command(),
        RunCommand::Exec(vec!["/bin/echo".into(), "a b".into()])
    );
    assert_eq!(err("FROM a\nRUN --mount=type=ssh true\n").line, 2);
    assert_eq!(
        err("FROM a\nRUN --mount=type=cache,nope=1,target=/x true\n").line,
        2
    );
}

#[test]
fn escape_directive_and_continuations() {
    let st = steps("# escape=`\nFROM a\nRUN echo a `\n  # comment inside\n  b\nWORKDIR C:\\x\n");
    assert_eq!(st[0], Step::Run(crate::build::Run::shell("echo a   b")));
    assert_eq!(st[1], Step::Workdir("C:\\x".into()));
}
