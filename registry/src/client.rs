//! [`RegistryOptions`] and the connection to one registry built from them: protocol
//! (HTTPS, or plain HTTP where allowed), TLS roots, credentials, and retries with backoff.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use futures_util::FutureExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;

use crate::auth::{self, Credentials};
use crate::error::{self, RegistryError};

/// How to reach registries: which may be spoken to over plain HTTP, extra TLS roots,
/// credentials, retries. The default trusts the system's roots, allows plain HTTP only for
/// loopback registries (`localhost`, `127.0.0.0/8`, `[::1]`), as Docker does, and reads
/// credentials from the usual auth files ([`crate::auth`]).
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    pub(crate) insecure: Vec<String>,
    pub(crate) plain: Vec<String>,
    pub(crate) extra_ca: Vec<(String, Vec<u8>)>,
    pub(crate) credentials: Option<Credentials>,
    pub(crate) attempts: u32,
    pub(crate) backoff: Duration,
    pub(crate) certs_dirs: Vec<PathBuf>,
    pub(crate) registries: Option<crate::mirrors::RegistriesConf>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: Vec::new(),
            plain: Vec::new(),
            extra_ca: Vec::new(),
            credentials: None,
            attempts: 4,
            backoff: Duration::from_millis(200),
            certs_dirs: vec![
                PathBuf::from("/etc/containers/certs.d"),
                PathBuf::from("/etc/docker/certs.d"),
            ],
            registries: None,
        }
    }
}

impl RegistryOptions {
    /// Allow plain HTTP to this registry (`host[:port]`). Loopback registries are allowed
    /// without it.
    pub fn insecure(mut self, registry: impl Into<String>) -> Self {
        self.insecure.push(registry.into());
        self
    }

    /// Speak plain HTTP to this registry (`host[:port]`) from the first request, without
    /// trying HTTPS first as [`RegistryOptions::insecure`] (and the loopback default) do:
    /// for a registry known to serve HTTP only, this saves a client and a TLS handshake
    /// per transfer.
    pub fn plain_http(mut self, registry: impl Into<String>) -> Self {
        self.plain.push(registry.into());
        self
    }

    /// Trust this CA certificate (PEM) besides the system's roots. Files named
    /// `<certs dir>/<host[:port]>/*.crt` are trusted for that registry too, as docker and
    /// podman do (dirs: `/etc/containers/certs.d`, `/etc/docker/certs.d`).
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        let pem = pem.into();
        self.extra_ca.push(("given".into(), pem));
        self
    }

    /// Read a CA certificate (PEM) from a file; see [`RegistryOptions::ca_pem`].
    pub fn ca_file(mut self, path: impl AsRef<Path>) -> Result<Self, RegistryError> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|e| RegistryError::Certificate {
            what: path.display().to_string(),
            reason: e.to_string(),
        })?;
        self.extra_ca.push((path.display().to_string(), pem));
        Ok(self)
    }

    /// Use these credentials instead of looking them up in the auth files.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// How many times to try a request that fails with 429, 5xx or a broken connection
    /// (default 4), waiting `backoff`, then twice as long each time (default 200 ms).
    pub fn retries(mut self, attempts: u32, backoff: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.backoff = backoff;
        self
    }

    /// Where to pull from: these `registries.conf` rules (mirrors, search registries for
    /// short names, blocked registries) instead of those of the files the containers tools
    /// read ([`RegistriesConf::load_default`](crate::RegistriesConf::load_default), read at
    /// each pull).
    pub fn registries_conf(mut self, conf: crate::mirrors::RegistriesConf) -> Self {
        self.registries = Some(conf);
        self
    }

    /// The `registries.conf` rules a pull follows.
    pub(crate) fn registries(&self) -> Result<crate::mirrors::RegistriesConf, RegistryError> {
        match &self.registries {
            Some(c) => Ok(c.clone()),
            None => crate::mirrors::RegistriesConf::load_default(),
        }
    }

    /// Look for per-registry CA files (`<host[:port]>/*.crt`) in these directories instead.
    pub fn certs_dirs(mut self, dirs: Vec<PathBuf>) -> Self {
        self.certs_dirs = dirs;
        self
    }
}

/// Whether a registry is on this machine (plain HTTP allowed by default).
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A connection to one registry for one reference.
pub(crate) struct Remote {
    pub client: oci_client::Client,
    pub auth: RegistryAuth,
    pub reference: oci_client::Reference,
    /// The reference as the user wrote it, normalised (for messages).
    pub name: String,
    pub registry: String,
    attempts: u32,
    backoff: Duration,
}

fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Only fails when another provider was installed first, which is as good. ring,
        // not aws-lc-rs: it builds with a C compiler alone, in a fraction of the time.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Remote {
    /// Connect to the registry of `reference`: HTTPS, or, where plain HTTP is allowed
    /// (loopback, or [`RegistryOptions::insecure`]), HTTPS if the registry speaks it and
    /// plain HTTP otherwise, as Docker does for insecure registries; plain HTTP straight
    /// away for a registry declared with [`RegistryOptions::plain_http`].
    pub async fn connect(
        reference: &molde_image::Reference,
        options: &RegistryOptions,
        operation: oci_client::RegistryOperation,
    ) -> Result<Remote, RegistryError> {
        install_crypto();
        let oci = reference.distribution().clone();
        let registry = oci.resolve_registry().to_owned();
        let declared = |list: &[String]| list.iter().any(|r| r == &registry || r == oci.registry());
        let plain_only = declared(&options.plain);
        let plain_allowed = is_loopback(&registry) || declared(&options.insecure);
        let mut certs = Vec::new();
        for (what, pem) in &options.extra_ca {
            certs.push(certificate(what, pem.clone())?);
        }
        for dir in &options.certs_dirs {
            certs.extend(certs_in(&dir.join(oci.registry()))?);
        }
        let credentials = match &options.credentials {
            Some(c) => c.clone(),
            None => auth::credentials_for(oci.registry())?,
        };
        let auth = credentials.to_oci();
        let plain = || ClientProtocol::HttpsExcept(vec![registry.clone()]);
        let first = if plain_only {
            plain()
        } else {
            ClientProtocol::Https
        };
        let mut client = build_client(&registry, first, certs.clone())?;
        if plain_allowed && !plain_only {
            // The first request of every transfer: asks /v2/ (and a token if challenged).
            if let Err(e) = client.auth(&oci, &auth, operation).await
                && matches!(&e, OciDistributionError::RequestError(r) if r.is_connect() || r.is_request())
            {
                tracing::debug!(%registry, error = %e, "no HTTPS; using plain HTTP");
                client = build_client(&registry, plain(), certs)?;
            }
        }
        Ok(Remote {
            client,
            auth,
            name: reference.to_string(),
            registry,
            reference: oci,
            attempts: options.attempts,
            backoff: options.backoff,
        })
    }

    /// The typed error of a transport failure.
    pub fn error(&self, e: OciDistributionError) -> RegistryError {
        error::from_transport(&self.name, &self.registry, e)
    }

    /// Run `op` until it succeeds, fails for good, or the attempts run out; 429, 5xx and
    /// broken connections are tried again after a growing pause.
    pub async fn retry<T, F, Fut>(&self, mut op: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, OciDistributionError>>,
    {
        let mut pause = self.backoff;
        let mut attempt = 1;
        loop {
            // oci-client panics on some answers (a token no header can carry: `parse().unwrap()`
            // in its request builder): a typed error here, not a panic in the caller's task.
            let answer = AssertUnwindSafe(op())
                .catch_unwind()
                .await
                .map_err(|panic| {
                    let what = panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("a panic");
                    RegistryError::Invalid {
                        reference: self.name.clone(),
                        what: format!("an answer of registry {}", self.registry),
                        reason: format!("the HTTP client cannot use it ({what})"),
                    }
                })?;
            match answer {
                Ok(v) => return Ok(v),
                Err(e) if attempt < self.attempts && error::retryable(&e) => {
                    tracing::debug!(error = %e, attempt, "retrying");
                    tokio::time::sleep(pause).await;
                    pause = pause.saturating_mul(2).min(Duration::from_secs(10));
                    attempt += 1;
                }
                Err(e) => return Err(self.error(e)),
            }
        }
    }

    /// The number of tries and the first pause, for downloads that resume themselves.
    pub fn policy(&self) -> (u32, Duration) {
        (self.attempts, self.backoff)
    }
}

fn build_client(
    registry: &str,
    protocol: ClientProtocol,
    certs: Vec<Certificate>,
) -> Result<oci_client::Client, RegistryError> {
    let config = ClientConfig {
        protocol,
        extra_root_certificates: certs,
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(60)),
        use_monolithic_push: true,
        user_agent: concat!("molde/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    };
    oci_client::Client::try_from(config).map_err(|e| RegistryError::Certificate {
        what: format!("client for {registry}"),
        reason: e.to_string(),
    })
}

fn certificate(what: &str, data: Vec<u8>) -> Result<Certificate, RegistryError> {
    if !data.starts_with(b"-----BEGIN") && !data.windows(10).any(|w| w == b"-----BEGIN") {
        return Err(RegistryError::Certificate {
            what: what.to_owned(),
            reason: "not a PEM certificate".into(),
        });
    }
    Ok(Certificate {
        encoding: CertificateEncoding::Pem,
        data,
    })
}

fn certs_in(dir: &Path) -> Result<Vec<Certificate>, RegistryError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "crt") {
            let pem = std::fs::read(&path).map_err(|e| RegistryError::Certificate {
                what: path.display().to_string(),
                reason: e.to_string(),
            })?;
            out.push(certificate(&path.display().to_string(), pem)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries() {
        for r in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:80",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "docker.io",
            "10.0.0.1:5000",
            "example.com:443",
            "localhost.example",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }
}
