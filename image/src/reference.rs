//! Image references (`name:tag`, `name@sha256:...`), parsed with oci-spec's implementation of
//! the distribution grammar and written in docker's familiar form (`busybox:latest` for
//! `docker.io/library/busybox:latest`). The familiar form is what the store keeps as the
//! `org.opencontainers.image.ref.name` annotation of `index.json`.

mod grammar;

use std::fmt;
use std::str::FromStr;

use molde_layerfs::Digest;
use oci_spec::distribution::Reference as OciReference;

/// Why a string is not a valid reference.
#[derive(Debug, thiserror::Error)]
#[error("invalid reference {input:?}: {source}")]
pub struct ReferenceError {
    /// The string given.
    pub input: String,
    /// Why it is refused.
    #[source]
    pub source: ReferenceErrorKind,
}

/// The reason a reference is refused.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceErrorKind {
    /// The distribution grammar refuses it.
    #[error(transparent)]
    Grammar(#[from] oci_spec::distribution::ParseError),
    /// Its digest is not a sha256 digest molde can look up.
    #[error(transparent)]
    Digest(#[from] molde_layerfs::digest::ParseDigestError),
}

/// A parsed, normalised image reference: a repository with a tag, a digest or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    inner: OciReference,
    digest: Option<Digest>,
}

impl Reference {
    /// Parse `s`; a bare name gets the tag `latest`.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let err = |source: ReferenceErrorKind| ReferenceError {
            input: s.to_owned(),
            source,
        };
        let inner: OciReference = match grammar::parse_ascii(s) {
            Some(r) => r,
            None => s.parse().map_err(|e| err(ReferenceErrorKind::Grammar(e)))?,
        };
        let digest = match inner.digest() {
            Some(d) => Some(
                d.parse::<Digest>()
                    .map_err(|e| err(ReferenceErrorKind::Digest(e)))?,
            ),
            None => None,
        };
        Ok(Reference { inner, digest })
    }

    /// The registry (`docker.io` when none is given).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }
    /// The repository (`library/busybox`).
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }
    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }
    /// The digest, if any.
    pub fn digest(&self) -> Option<Digest> {
        self.digest
    }

    /// The familiar repository name: `busybox`, `user/app`, `example.com:5000/app`.
    pub fn familiar_name(&self) -> String {
        let repo = self.repository();
        if self.registry() == "docker.io" {
            repo.strip_prefix("library/")
                .filter(|r| !r.contains('/'))
                .unwrap_or(repo)
                .to_owned()
        } else {
            format!("{}/{}", self.registry(), repo)
        }
    }

    /// The reference as the distribution grammar parsed it (what registry clients take).
    pub fn distribution(&self) -> &OciReference {
        &self.inner
    }

    /// The full normalised form (`docker.io/library/busybox:latest`).
    pub fn whole(&self) -> String {
        self.inner.whole()
    }
}

impl fmt::Display for Reference {
    /// The familiar form: `busybox:latest`, `app@sha256:...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.familiar_name())?;
        if let Some(t) = self.tag() {
            write!(f, ":{t}")?;
        }
        if let Some(d) = self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn familiar_forms() {
        let cases = [
            ("busybox", "busybox:latest"),
            ("busybox:1.36", "busybox:1.36"),
            ("docker.io/library/alpine:3", "alpine:3"),
            ("user/app:v1", "user/app:v1"),
            (
                "example.com:5000/team/app:v2",
                "example.com:5000/team/app:v2",
            ),
            ("localhost/app", "localhost/app:latest"),
        ];
        for (input, familiar) in cases {
            let r = Reference::parse(input).unwrap();
            assert_eq!(r.to_string(), familiar, "{input}");
            assert_eq!(Reference::parse(familiar).unwrap(), r, "{input} round trip");
        }
        let d = Digest::of(b"x");
        let r = Reference::parse(&format!("app@{d}")).unwrap();
        assert_eq!(r.digest(), Some(d));
        assert_eq!(r.tag(), None);
        assert_eq!(r.to_string(), format!("app@{d}"));
    }

    #[test]
    fn invalid_references_are_typed_errors() {
        for bad in [
            "",
            "UPPER",
            ":tag",
            "a b",
            "app@sha256:abc",
            "app@sha512:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        ] {
            let e = Reference::parse(bad).unwrap_err();
            assert_eq!(e.input, bad);
            assert!(e.to_string().contains("invalid reference"), "{e}");
        }
    }
}
