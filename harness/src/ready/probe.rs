//! The probes of readiness: one attempt each, cheap, never blocking for long.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use molde_container::Container;

use super::ReadyError;

/// How long one attempt may take.
const ATTEMPT: Duration = Duration::from_millis(500);

/// Whether a TCP connect to `addr` succeeds now.
pub(super) fn tcp(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, ATTEMPT).is_ok()
}

/// Whether a connect to the unix socket `path` succeeds now.
pub(super) fn unix(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

/// Whether `GET path` at `addr` answers 2xx now (HTTP/1.1, `Connection: close`).
pub(super) fn http(addr: SocketAddr, path: &str) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, ATTEMPT)?;
        s.set_read_timeout(Some(ATTEMPT))?;
        s.set_write_timeout(Some(ATTEMPT))?;
        // One write: a server that reads one segment and closes would otherwise reset the
        // connection before the answer is read.
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: molde-harness\r\n\r\n"
        );
        s.write_all(request.as_bytes())?;
        // The status line: "HTTP/1.1 200 OK".
        let mut head = [0u8; 32];
        let mut got = 0;
        while got < 12 {
            match s.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                // A reset after the status line came still tells the status.
                Err(_) if got >= 12 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(status_is_success(&head[..got]))
    };
    attempt().unwrap_or(false)
}

/// Whether an HTTP status line (its first 12 bytes or more) says 2xx.
fn status_is_success(head: &[u8]) -> bool {
    head.starts_with(b"HTTP/1.") && head.len() >= 12 && head[8] == b' ' && head[9] == b'2'
}

/// Whether `argv` exec'd in the container exits 0 now.
pub(super) fn exec(c: &mut Container, argv: &[String]) -> Result<bool, ReadyError> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(true);
    };
    match c.exec(program).args(args).output() {
        Ok(out) => Ok(out.success()),
        // The container ended between the check and the exec: the caller sees it next.
        Err(molde_container::ContainerError::State { .. })
        | Err(molde_container::ContainerError::ProcessGone { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The command of the image's HEALTHCHECK (Docker's `config.Healthcheck.Test`, which the OCI
/// config does not define: read from the config blob as stored).
pub(crate) fn healthcheck(c: &Container) -> Result<Vec<String>, ReadyError> {
    let image = c.image();
    let none = |reason: &str| ReadyError::NoHealthcheck {
        image: image.id().to_string(),
        reason: reason.to_owned(),
    };
    let blob = c
        .store()
        .open_blob(&image.id())
        .map_err(|e| none(&e.to_string()))?;
    let config: serde_json::Value =
        serde_json::from_reader(std::io::BufReader::new(blob)).map_err(|e| none(&e.to_string()))?;
    let test = config
        .pointer("/config/Healthcheck/Test")
        .and_then(|t| t.as_array())
        .ok_or_else(|| none("no config.Healthcheck.Test"))?;
    let words: Vec<String> = test
        .iter()
        .map(|w| w.as_str().map(str::to_owned))
        .collect::<Option<_>>()
        .ok_or_else(|| none("a word of Healthcheck.Test is not a string"))?;
    match words.split_first() {
        Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => Ok(rest.to_vec()),
        Some((kind, [cmd])) if kind == "CMD-SHELL" => {
            Ok(vec!["/bin/sh".into(), "-c".into(), cmd.clone()])
        }
        Some((kind, _)) if kind == "NONE" => Err(none("HEALTHCHECK NONE")),
        _ => Err(none("Healthcheck.Test is neither CMD nor CMD-SHELL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert!(status_is_success(b"HTTP/1.1 200 OK\r\n"));
        assert!(status_is_success(b"HTTP/1.0 204 No Content"));
        assert!(!status_is_success(b"HTTP/1.1 301 Moved"));
        assert!(!status_is_success(b"HTTP/1.1 500 Oops"));
        assert!(!status_is_success(b"SSH-2.0-OpenSSH"));
        assert!(!status_is_success(b"HTTP/1.1 2"));
    }
}
