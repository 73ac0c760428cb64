//! Credentials for a registry, found where docker, podman and skopeo keep them:
//! `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`, then
//! `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`). In each file, a
//! `credHelpers` entry for the registry wins, then `auths`, then `credsStore`; a helper is
//! the program `docker-credential-<name>` on `PATH`, asked with `get` and the server on its
//! standard input (docker's credential-helper protocol). The first file that knows the
//! registry answers; no file, or no entry, means anonymous access.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde::Deserialize;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials: anonymous access (bearer tokens are still fetched when the registry
    /// challenges for them).
    Anonymous,
    /// A user name and a password (or a personal access token).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// A registry token sent as is (`Authorization: Bearer ...`).
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

impl Credentials {
    pub(crate) fn to_oci(&self) -> oci_client::secrets::RegistryAuth {
        use oci_client::secrets::RegistryAuth;
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::Bearer(t) => RegistryAuth::Bearer(t.clone()),
        }
    }
}

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// An auth file exists but cannot be read or parsed.
    #[error("credentials file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A credential helper failed or answered nonsense.
    #[error("credential helper docker-credential-{helper} for {registry}: {reason}")]
    Helper {
        /// The helper's name.
        helper: String,
        /// The registry asked about.
        registry: String,
        /// What went wrong (its standard error, or why its answer is unusable).
        reason: String,
    },
}

#[derive(Debug, Default, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "registrytoken")]
    registry_token: Option<String>,
}

/// The auth files looked at, in order.
pub fn auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(Path::new(&p).join("containers/auth.json"));
    }
    match std::env::var_os("DOCKER_CONFIG") {
        Some(p) => files.push(Path::new(&p).join("config.json")),
        None => {
            if let Some(home) = std::env::var_os("HOME") {
                files.push(Path::new(&home).join(".docker/config.json"));
            }
        }
    }
    files
}

/// The credentials for `registry` (`host[:port]`; `docker.io` for Docker Hub) from the auth
/// files ([`auth_files`]); [`Credentials::Anonymous`] when none knows it.
pub fn credentials_for(registry: &str) -> Result<Credentials, CredentialsError> {
    for path in auth_files() {
        if let Some(c) = from_file(&path, registry)? {
            return Ok(c);
        }
    }
    Ok(Credentials::Anonymous)
}

/// The credentials one auth file holds for `registry`, if any.
pub fn from_file(path: &Path, registry: &str) -> Result<Option<Credentials>, CredentialsError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CredentialsError::File {
                path: path.to_owned(),
                reason: e.to_string(),
            });
        }
    };
    let file: AuthFile = serde_json::from_slice(&bytes).map_err(|e| CredentialsError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if let Some(helper) = lookup(&file.cred_helpers, registry) {
        return helper_get(helper, registry).map(Some);
    }
    if let Some(entry) = lookup(&file.auths, registry) {
        let c = entry_credentials(entry).map_err(|reason| CredentialsError::File {
            path: path.to_owned(),
            reason: format!("entry for {registry}: {reason}"),
        })?;
        if c.is_some() {
            return Ok(c);
        }
    }
    match &file.creds_store {
        Some(store) if !store.is_empty() => match helper_get(store, registry) {
            Ok(c) => Ok(Some(c)),
            // A store that does not know the registry: anonymous, as docker does.
            Err(CredentialsError::Helper { reason, .. })
                if reason.contains("credentials not found") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        },
        _ => Ok(None),
    }
}

/// The key of an auth file that names `registry`: `host`, `https://host`, `host/v1/`..., and
/// for Docker Hub also `https://index.docker.io/v1/`.
fn lookup<'a, T>(map: &'a std::collections::BTreeMap<String, T>, registry: &str) -> Option<&'a T> {
    let hub = is_docker_hub(registry);
    map.iter()
        .find(|(k, _)| {
            let host = k
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default();
            host == registry || (hub && is_docker_hub(host))
        })
        .map(|(_, v)| v)
}

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

fn entry_credentials(e: &AuthEntry) -> Result<Option<Credentials>, String> {
    if let Some(t) = e.registry_token.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Some(Credentials::Bearer(t.clone())));
    }
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        return Ok(Some(Credentials::Basic {
            username: u.clone(),
            password: p.clone(),
        }));
    }
    let Some(auth) = e.auth.as_ref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|e| format!("\"auth\" is not base64: {e}"))?;
    let text = String::from_utf8(decoded).map_err(|_| "\"auth\" is not UTF-8".to_owned())?;
    let (u, p) = text
        .split_once(':')
        .ok_or_else(|| "\"auth\" is not user:password".to_owned())?;
    Ok(Some(Credentials::Basic {
        username: u.to_owned(),
        password: p.to_owned(),
    }))
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Ask `docker-credential-<helper> get` for `registry`'s credentials.
fn helper_get(helper: &str, registry: &str) -> Result<Credentials, CredentialsError> {
    let err = |reason: String| CredentialsError::Helper {
        helper: helper.to_owned(),
        registry: registry.to_owned(),
        reason,
    };
    let server = if is_docker_hub(registry) {
        "https://index.docker.io/v1/"
    } else {
        registry
    };
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .map_err(|e| err(format!("writing its input: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("waiting for it: {e}")))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout).trim().to_owned()
            + String::from_utf8_lossy(&out.stderr).trim();
        return Err(err(format!("{}: {said}", out.status)));
    }
    let answer: HelperAnswer =
        serde_json::from_slice(&out.stdout).map_err(|e| err(format!("its answer: {e}")))?;
    if answer.username == "<token>" {
        // An identity token (an OAuth refresh token): sent as the password of basic auth
        // in the token request, which registries that issue such tokens accept.
        return Ok(Credentials::Basic {
            username: "<token>".into(),
            password: answer.secret,
        });
    }
    Ok(Credentials::Basic {
        username: answer.username,
        password: answer.secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: &str) -> PathBuf {
        let p = dir.join("auth.json");
        std::fs::write(&p, json).unwrap();
        p
    }

    #[test]
    fn auths_entries_in_every_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("joe:s3cret:x");
        let p = write(
            dir.path(),
            &format!(
                r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{auth}"}},
                 "reg.example:5000": {{"username": "ann", "password": "pw"}},
                 "http://other.example/v2/": {{"registrytoken": "tok"}}}}}}"#
            ),
        );
        let basic = |u: &str, p: &str| {
            Some(Credentials::Basic {
                username: u.into(),
                password: p.into(),
            })
        };
        assert_eq!(
            from_file(&p, "docker.io").unwrap(),
            basic("joe", "s3cret:x")
        );
        assert_eq!(
            from_file(&p, "reg.example:5000").unwrap(),
            basic("ann", "pw")
        );
        assert_eq!(
            from_file(&p, "other.example").unwrap(),
            Some(Credentials::Bearer("tok".into()))
        );
        assert_eq!(from_file(&p, "reg.example").unwrap(), None);
        assert_eq!(from_file(&dir.path().join("none"), "x").unwrap(), None);
    }

    #[test]
    fn bad_files_and_helpers_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "{not json");
        let e = from_file(&p, "x").unwrap_err();
        assert!(matches!(e, CredentialsError::File { .. }), "{e}");
        let p = write(dir.path(), r#"{"auths": {"x": {"auth": "!!"}}}"#);
        assert!(
            from_file(&p, "x")
                .unwrap_err()
                .to_string()
                .contains("base64")
        );
        let p = write(
            dir.path(),
            r#"{"credHelpers": {"x": "molde-no-such-helper"}}"#,
        );
        let e = from_file(&p, "x").unwrap_err();
        assert!(
            e.to_string()
                .contains("docker-credential-molde-no-such-helper"),
            "{e}"
        );
    }
}
