//! The distribution reference grammar, compiled once per process for ASCII input only.
//!
//! oci-spec's `Reference::try_from` matches one anchored regex whose tag part is
//! `[\w][\w.-]{0,127}` with Unicode `\w`: compiling it takes 50-300 ms on first use (it
//! needs a 20 MB size limit), the largest fixed cost of a pull in its own process (see
//! docs/benchmarks-analysis.md, registry third round). The same pattern compiled without
//! Unicode means the same for ASCII input (the grammar's `\w` is ASCII, as in Go) and takes
//! a fraction of it. This is only a fast path: anything it does not accept outright (non
//! ASCII, no match, a check failing) goes to oci-spec's parser, so errors stay oci-spec's
//! and a reference parsed here equals the one oci-spec would give (checked by the tests).

use std::sync::OnceLock;

use oci_spec::distribution::Reference as OciReference;
use regex::{Regex, RegexBuilder};

/// oci-spec 0.10's `REFERENCE_REGEXP`, verbatim.
const REFERENCE: &str = r"^((?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))+)?(?::[0-9]+)?/)?[a-z0-9]+(?:(?:(?:[._]|__|[-]*)[a-z0-9]+)+)?(?:(?:/[a-z0-9]+(?:(?:(?:[._]|__|[-]*)[a-z0-9]+)+)?)+)?)(?::([\w][\w.-]{0,127}))?(?:@([A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}))?$";

fn regex() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| RegexBuilder::new(REFERENCE).unicode(false).build().ok())
        .as_ref()
}

/// `s` parsed, when it is ASCII and passes every check oci-spec makes; `None` otherwise
/// (then oci-spec's parser decides).
pub(super) fn parse_ascii(s: &str) -> Option<OciReference> {
    if s.is_empty() || !s.is_ascii() {
        return None;
    }
    let caps = regex()?.captures(s)?;
    let name = caps.get(1)?.as_str();
    let tag = caps.get(2).map(|m| m.as_str().to_owned());
    let digest = caps.get(3).map(|m| m.as_str().to_owned());
    let (registry, repository) = split_domain(name);
    if repository.len() > 255 {
        return None;
    }
    if let Some(d) = &digest {
        let ok = match d.split_once(':') {
            Some(("sha256", hex)) => hex.len() == 64,
            Some(("sha384", hex)) => hex.len() == 96,
            Some(("sha512", hex)) => hex.len() == 128,
            _ => false,
        };
        if !ok {
            return None;
        }
    }
    Some(match (tag, digest) {
        (Some(t), Some(d)) => OciReference::with_tag_and_digest(registry, repository, t, d),
        (None, Some(d)) => OciReference::with_digest(registry, repository, d),
        (t, None) => OciReference::with_tag(registry, repository, t.unwrap_or("latest".into())),
    })
}

/// oci-spec's `split_domain`: Docker Hub's default registry and `library/` prefix.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut rest) = match name.split_once('/') {
        Some((left, right)) if left.contains('.') || left.contains(':') || left == "localhost" => {
            (left.to_owned(), right.to_owned())
        }
        _ => ("docker.io".to_owned(), name.to_owned()),
    };
    if domain == "index.docker.io" {
        domain = "docker.io".into();
    }
    if domain == "docker.io" && !rest.contains('/') {
        rest = format!("library/{rest}");
    }
    (domain, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_gives_what_oci_spec_gives() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let inputs = [
            "busybox".to_owned(),
            "busybox:1.36".into(),
            "docker.io/library/alpine:3".into(),
            "index.docker.io/alpine".into(),
            "user/app:v1".into(),
            "user/app_x-y.z:V_1.2-rc".into(),
            "example.com:5000/team/app:v2".into(),
            "127.0.0.1:5000/a/b/c:t".into(),
            "localhost/app".into(),
            "localhost:5000/app".into(),
            format!("app@{d}"),
            format!("ghcr.io/o/app:1@{d}"),
            format!("app@sha512:{}", "0".repeat(128)),
            "a__b/c--d:x".into(),
        ];
        for s in &inputs {
            let fast = parse_ascii(s).unwrap_or_else(|| panic!("{s} not parsed"));
            let spec: OciReference = s.parse().unwrap();
            assert_eq!(fast, spec, "{s}");
        }
        for bad in [
            "",
            "UPPER",
            ":tag",
            "a b",
            "app@sha256:abc",
            "app:tägg",
            "app@sha1:0123456789abcdef0123456789abcdef",
        ] {
            assert!(parse_ascii(bad).is_none(), "{bad}");
        }
    }
}
