//! A real `docker-registry` with htpasswd auth behind TLS from a CA the test makes: the CA
//! and credentials given as options, found in an auth file (`$REGISTRY_AUTH_FILE`) and
//! through a credential helper (`docker-credential-*` on `PATH`); missing or wrong
//! credentials and an untrusted certificate are typed errors.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use molde_registry::{Credentials, Pull, Push, RegistryError, RegistryOptions};

const USER: &str = "molde";
const PASSWORD: &str = "s3cret pass";
/// Set in the re-executed test binary: which check to run, with what.
const CHILD_ENV: &str = "MOLDE_TEST_AUTH_CHILD";

fn secured() -> Registry {
    Registry::start_with(RegistryConfig {
        user: Some((USER.into(), PASSWORD.into())),
        tls: true,
    })
}

fn options(reg: &Registry) -> RegistryOptions {
    RegistryOptions::default()
        .ca_pem(reg.tls.as_ref().unwrap().ca_pem.clone())
        .certs_dirs(Vec::new())
}

fn basic(password: &str) -> Credentials {
    Credentials::Basic {
        username: USER.into(),
        password: password.into(),
    }
}

fn tools_or_skip() -> bool {
    registry_or_skip()
        && require(
            have("htpasswd"),
            "htpasswd is not installed (apache2-utils)",
        )
        && require(have("openssl"), "openssl is not installed")
}

#[test]
fn basic_auth_over_tls_with_an_extra_ca() {
    if std::env::var_os(CHILD_ENV).is_some() || !tools_or_skip() {
        return;
    }
    let reg = secured();
    let a = tmp_store();
    let image = image_of(&a, &[noise(5, 40_000)], "sec:v1");
    let target = reg.reference("private/app:v1");

    // No credentials: 401, naming the registry.
    let e = Push::new(&a, "sec:v1", &target)
        .options(options(&reg).credentials(Credentials::Anonymous))
        .run()
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::Status { status: 401, .. }),
        "{e}"
    );
    assert!(e.to_string().contains(&reg.addr), "{e}");
    // Wrong password: 401 too.
    let e = Pull::new(&tmp_store(), &target)
        .options(options(&reg).credentials(basic("wrong")))
        .run()
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::Status { status: 401, .. }),
        "{e}"
    );

    let pushed = Push::new(&a, "sec:v1", &target)
        .options(options(&reg).credentials(basic(PASSWORD)))
        .run()
        .unwrap();
    assert_eq!(pushed.digest, image.manifest_digest());
    let b = tmp_store();
    let pulled = Pull::new(&b, &target)
        .options(options(&reg).credentials(basic(PASSWORD)))
        .run()
        .unwrap();
    assert_eq!(pulled.image.manifest_digest(), image.manifest_digest());
    // Declared plain HTTP: no HTTPS attempt, so this registry (TLS only) refuses the
    // request that worked above.
    let e = Pull::new(&tmp_store(), &target)
        .options(
            options(&reg)
                .credentials(Credentials::Anonymous)
                .plain_http(reg.addr.clone()),
        )
        .run()
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::Status { status: 400, .. }),
        "{e}"
    );

    // Without the CA the certificate is not trusted: a connection error, no fallback to
    // plain HTTP that would send the password in clear (the registry speaks TLS).
    let e = Pull::new(&tmp_store(), &target)
        .options(
            RegistryOptions::default()
                .certs_dirs(Vec::new())
                .credentials(basic(PASSWORD)),
        )
        .run()
        .unwrap_err();
    assert!(
        matches!(
            e,
            RegistryError::Connection { .. } | RegistryError::Status { .. }
        ),
        "{e}"
    );
}

/// Run this test binary again with `env`, to check what a pull with default options finds
/// in the environment.
fn child(check: &str, env: &[(&str, &Path)], reg: &Registry, target: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &reg.tls.as_ref().unwrap().ca_pem).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_pull", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, check)
        .env("MOLDE_TEST_CA", &ca)
        .env("MOLDE_TEST_TARGET", target)
        .env_remove("XDG_RUNTIME_DIR")
        .env("HOME", dir.path())
        .envs(env.iter().map(|(k, v)| (k, v.as_os_str())))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{check}: {text}");
    assert!(text.contains("CHILD PULLED"), "{check}: {text}");
}

/// The re-executed side of [`credentials_come_from_auth_files_and_helpers`].
#[test]
fn child_pull() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let ca = std::env::var_os("MOLDE_TEST_CA").unwrap();
    let target = std::env::var("MOLDE_TEST_TARGET").unwrap();
    let options = RegistryOptions::default()
        .certs_dirs(Vec::new())
        .ca_file(Path::new(&ca))
        .unwrap();
    let report = Pull::new(&tmp_store(), &target)
        .options(options)
        .run()
        .unwrap();
    println!("CHILD PULLED {}", report.digest);
}

#[test]
fn credentials_come_from_auth_files_and_helpers() {
    if std::env::var_os(CHILD_ENV).is_some() || !tools_or_skip() {
        return;
    }
    let reg = secured();
    let a = tmp_store();
    image_of(&a, &[noise(6, 1000)], "c:v1");
    let target = reg.reference("c/app:v1");
    Push::new(&a, "c:v1", &target)
        .options(options(&reg).credentials(basic(PASSWORD)))
        .run()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    // $REGISTRY_AUTH_FILE, docker's "auth" (base64 of user:password).
    let auth_file = dir.path().join("auth.json");
    let b64 = base64_encode(&format!("{USER}:{PASSWORD}"));
    std::fs::write(
        &auth_file,
        format!(r#"{{"auths": {{"{}": {{"auth": "{b64}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    child(
        "auth file",
        &[("REGISTRY_AUTH_FILE", &auth_file)],
        &reg,
        &target,
    );

    // ~/.docker/config.json naming a credential helper on PATH.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let helper = bin.join("docker-credential-moldetest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n[ \"$server\" = \"{}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n",
            reg.addr
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let docker = dir.path().join("docker");
    std::fs::create_dir(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"credHelpers": {{"{}": "moldetest"}}}}"#, reg.addr),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    child(
        "credential helper",
        &[("DOCKER_CONFIG", &docker), ("PATH", Path::new(&path))],
        &reg,
        &target,
    );
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
