//! A tiny stand-in HTTP registry for faults a real one cannot be made to show (wrong bytes,
//! truncation, 429/5xx, hostile documents, token servers): it serves one image of a store as
//! `test/app:v1`, unless the test's handler answers a request first.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use molde_image::{Image, Store};

pub struct Request {
    pub method: String,
    pub path: String,
    pub range: Option<u64>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

pub enum Reply {
    /// Status, content type, body.
    Send(u16, &'static str, Vec<u8>),
    /// Announce the whole body, send only the first `n` bytes, close.
    Cut(Vec<u8>, usize),
    /// Send the first `n` bytes of the body, wait until the gate opens, send the rest.
    Hold(Vec<u8>, usize, Gate),
    /// Status, headers (`Content-Type` among them, if wanted), body.
    With(u16, Vec<(String, String)>, Vec<u8>),
}

/// A gate a held reply waits at (for 60 s at most).
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    pub fn open(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }

    pub fn wait(&self) {
        let open = self.0.0.lock().unwrap();
        let _ = self
            .0
            .1
            .wait_timeout_while(open, Duration::from_secs(60), |open| !*open);
    }
}

/// (method, path, range start) of each request served.
pub type Log = Arc<Mutex<Vec<(String, String, Option<u64>)>>>;

pub type Handler = dyn Fn(&Request, usize) -> Option<Reply> + Send + Sync;

/// The stand-in: serves `image` (from `store`) as `test/app:v1`, unless `handler` answers
/// first (it gets the request and how many requests for that path came before).
pub struct Server {
    pub addr: String,
    stop: Arc<AtomicBool>,
    pub log: Log,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

pub fn serve(store: &Store, image: &Image, handler: Arc<Handler>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut blobs = HashMap::new();
    let md = image.manifest_digest();
    for d in image
        .layers()
        .iter()
        .map(|l| l.digest)
        .chain([image.id(), md])
    {
        blobs.insert(
            d.to_string(),
            std::fs::read(store.layout().blob(&d)).unwrap(),
        );
    }
    let manifest = blobs[&md.to_string()].clone();
    let (s, l) = (Arc::clone(&stop), Arc::clone(&log));
    let counts = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if s.load(Ordering::Relaxed) {
                break;
            }
            let Ok(conn) = conn else { continue };
            let Some(req) = read_request(&conn) else {
                continue;
            };
            l.lock()
                .unwrap()
                .push((req.method.clone(), req.path.clone(), req.range));
            let n = {
                let mut c = counts.lock().unwrap();
                let e = c.entry(format!("{} {}", req.method, req.path)).or_default();
                *e += 1;
                *e - 1
            };
            let reply = handler(&req, n).unwrap_or_else(|| default_reply(&req, &blobs, &manifest));
            write_reply(conn, &req, reply);
        }
    });
    Server { addr, stop, log }
}

fn read_request(conn: &TcpStream) -> Option<Request> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut range = None;
    let mut authorization = None;
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            range = v.split('-').next().and_then(|s| s.parse().ok());
        }
        if lower.starts_with("authorization: ") {
            authorization = Some(h["authorization: ".len()..].to_owned());
        }
        if let Some(v) = lower.strip_prefix("content-length: ") {
            length = v.parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        range,
        authorization,
    })
}

fn default_reply(req: &Request, blobs: &HashMap<String, Vec<u8>>, manifest: &[u8]) -> Reply {
    if req.path == "/v2/" {
        return Reply::Send(200, "application/json", b"{}".to_vec());
    }
    if req.path.starts_with("/v2/test/app/manifests/") {
        return Reply::Send(
            200,
            "application/vnd.oci.image.manifest.v1+json",
            manifest.to_vec(),
        );
    }
    if let Some(d) = req.path.strip_prefix("/v2/test/app/blobs/")
        && let Some(b) = blobs.get(d)
    {
        return Reply::Send(200, "application/octet-stream", b.clone());
    }
    not_found()
}

pub fn not_found() -> Reply {
    Reply::Send(
        404,
        "application/json",
        br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown to the stand-in"}]}"#
            .to_vec(),
    )
}

fn write_reply(mut conn: TcpStream, req: &Request, reply: Reply) {
    let (status, ctype, body, cut) = match reply {
        Reply::Send(s, c, b) => (s, c, b, None),
        Reply::With(status, headers, body) => {
            let mut head = format!("HTTP/1.1 {status} X\r\n");
            for (k, v) in headers {
                head += &format!("{k}: {v}\r\n");
            }
            head += &format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            if req.method != "HEAD" {
                let _ = conn.write_all(&body);
            }
            let _ = conn.flush();
            return;
        }
        Reply::Cut(b, n) => (200, "application/octet-stream", b, Some(n)),
        Reply::Hold(b, n, gate) => {
            let head = format!(
                "HTTP/1.1 200 X\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                b.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&b[..n]);
            let _ = conn.flush();
            gate.wait();
            let _ = conn.write_all(&b[n..]);
            return;
        }
    };
    // Ranges are honoured for whole blobs.
    let (status, body) = match req.range {
        Some(off) if status == 200 && req.path.contains("/blobs/") && cut.is_none() => {
            (206, body[(off as usize).min(body.len())..].to_vec())
        }
        _ => (status, body),
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    if req.method != "HEAD" {
        let n = cut.unwrap_or(body.len()).min(body.len());
        let _ = conn.write_all(&body[..n]);
    }
    let _ = conn.flush();
}
