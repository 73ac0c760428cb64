//! The molde tour: images and containers, told with a real store, real layers and real
//! containers.
//!
//! `cargo run --example tour` — as root, or as an unprivileged user (containers then run in user
//! namespaces of their own, as a rootless runtime's do).
//!
//! The story is the one the seed documents tell: an image is a static, immutable mould made of
//! read-only layers; a container is an image in execution, with one writable layer of its own on
//! top, joined by a union filesystem with copy-on-write.

use std::error::Error;
use std::path::Path;
use std::time::Duration;

use molde::container::build::{Build, Copy};
use molde::container::network::Network;
use molde::container::{Container, Status, Stdio};
use molde::image::{Image, Store, StoreError, base};

type Res<T> = Result<T, Box<dyn Error>>;

fn main() -> Res<()> {
    // A fresh throwaway store. A lasting one is opened with `molde::open_store(root)`, which
    // also clears what a killed process left (containers recorded running).
    let store = Store::temporary()?;
    println!("molde tour — store at {}", store.root().display());
    if !molde::layerfs::privilege::is_privileged() {
        println!("(unprivileged: each container gets a user namespace of its own)");
    }
    let image = build_image(&store)?;
    let mut containers = start_three(&store, &image)?;
    copy_on_write(&store, &image, &containers)?;
    stop_and_restart(&mut containers[1])?;
    removal_refused(&store)?;
    commit(&store, &image, &containers[0])?;
    networks(&store)?;
    remove_and_prune(&store, containers)?;
    println!("\nDone: every step above ran for real.");
    Ok(())
}

/// Chapter 1: an image built from host binaries by a recipe, its layers and history.
fn build_image(store: &Store) -> Res<Image> {
    chapter("1. An image is a mould: read-only layers plus a config");
    say("We build an image from nothing downloaded. The base holds this host's /bin/sh, a few");
    say("tools and the shared libraries they need, found the way ld.so finds them. Then a");
    say("recipe, the Rust twin of a Dockerfile, adds to it step by step:");
    say(
        "  FROM <host binaries> / ENV / WORKDIR /app / COPY hello.sh /app/ / RUN ... / EXPOSE / CMD",
    );
    let tools: Vec<&Path> = [
        "/bin/sh",
        "/bin/ls",
        "/bin/cat",
        "/bin/echo",
        "/bin/sleep",
        "/bin/rm",
        "/bin/hostname",
    ]
    .iter()
    .map(Path::new)
    .filter(|p| p.exists())
    .collect();
    let base_image = base::from_host(store, &tools)?;
    let context = tempfile::tempdir()?;
    let script = context.path().join("hello.sh");
    std::fs::write(&script, "echo \"$GREETING desde $(hostname)\"\n")?;
    let recipe = Build::from_image(&base_image)
        .env("GREETING", "hola")
        .workdir("/app")
        .copy(Copy::new(&script, "/app/").chmod(0o755))
        .run("echo 'una imagen es un molde' > /etc/motd")
        .expose(8080)
        .cmd(["/bin/sh", "/app/hello.sh"])
        // A fixed source-date epoch: the same recipe always gives the same image, byte for byte.
        .source_date_epoch(1_700_000_000);
    let built = recipe.build(store, "tour/app:1")?;
    let image = built.image.clone();
    for step in &built.steps {
        say(&format!(
            "  step {}: {:<45} {}",
            step.index,
            step.instruction,
            if step.layer.is_some() {
                "-> a new layer"
            } else {
                "(config only)"
            }
        ));
    }
    say(&format!(
        "built tour/app:1 in {:?}, image id {}",
        built.duration,
        short(&image.id().to_string())
    ));
    for (i, layer) in image.layers().iter().enumerate() {
        say(&format!(
            "  layer {i}: {}  {} bytes",
            short(&layer.digest.to_string()),
            layer.size
        ));
    }
    say("Its history, like `docker history`: one entry per step; config steps add no layer.");
    for line in image.history_table().lines() {
        say(&format!("  {line}"));
    }
    let again = recipe.build(store, "tour/app:1")?;
    say(&format!(
        "Building the same recipe again reuses every layer from the cache: {} RUN steps ran, \
         {:?}, and it is the same image (reproducible): {}",
        again.runs_executed(),
        again.duration,
        again.image.id() == image.id()
    ));
    Ok(image)
}

/// Chapter 2: three containers of one image, each with its own hostname and layer.
fn start_three(store: &Store, image: &Image) -> Res<Vec<Container>> {
    chapter("2. A container is the image in execution, with a writable layer of its own");
    say("Three containers start from the same image, at once. Each has its own hostname, its");
    say("own process tree and network namespace, and its own writable layer.");
    let mut containers = Vec::new();
    for name in ["uno", "dos", "tres"] {
        let c = Container::builder(store, image)
            .hostname(name)
            // PID 1 of a container ignores signals it has no handler for: this one traps
            // `stop`'s SIGTERM and exits cleanly.
            .command("/bin/sh")
            .args(["-c", "trap 'exit 0' TERM; while :; do sleep 1; done"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .start()?;
        containers.push(c);
    }
    for c in &containers {
        let out = c.exec("/bin/sh").args(["/app/hello.sh"]).output()?;
        say(&format!(
            "  container {}: {}",
            short(c.id()),
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
    ps(store)?;
    Ok(containers)
}

/// Chapter 3: a write lands in the writer's layer only.
fn copy_on_write(store: &Store, image: &Image, containers: &[Container]) -> Res<()> {
    chapter("3. Copy-on-write: a write lands in the writer's layer only");
    run(
        &containers[0],
        "echo 'solo en uno' > /app/nota.txt; echo 'editado' >> /etc/motd",
    )?;
    for c in containers {
        let out = c
            .exec("/bin/sh")
            .args([
                "-c",
                "cat /app/nota.txt 2>/dev/null || echo '(no nota.txt here)'",
            ])
            .output()?;
        say(&format!(
            "  {} sees: {}",
            short(c.id()),
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
    let unchanged = image
        .layers()
        .iter()
        .all(|l| store.layout().blob(&l.digest).exists());
    say(&format!(
        "  the image gained nothing: its layers are the same blobs ({unchanged}), and a new \
         container from it reads /etc/motd as: {}",
        String::from_utf8_lossy(
            &Container::builder(store, image)
                .command("/bin/cat")
                .arg("/etc/motd")
                .output()?
                .stdout
        )
        .trim()
    ));
    say("  what container uno changed, like `docker diff`:");
    for change in containers[0].diff()? {
        say(&format!("    {change}"));
    }
    Ok(())
}

/// Chapter 4: the writable layer outlives a stop and a restart.
fn stop_and_restart(dos: &mut Container) -> Res<()> {
    chapter("4. Stop and restart: the writable layer lives until the container is removed");
    run(dos, "echo 'sigo aquí' > /app/persist.txt")?;
    dos.stop(Duration::from_secs(2))?;
    say(&format!("  dos is {}", dos.status()?));
    dos.restart(Duration::from_secs(2))?;
    say(&format!("  dos is {} again", dos.status()?));
    let out = dos.exec("/bin/cat").arg("/app/persist.txt").output()?;
    say(&format!(
        "  and still reads /app/persist.txt: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    ));
    Ok(())
}

/// Chapter 5: an image in use cannot be removed.
fn removal_refused(store: &Store) -> Res<()> {
    chapter("5. An image in use cannot be removed");
    match store.remove("tour/app:1") {
        Err(e @ StoreError::Held { .. }) => say(&format!("  refused, as it should be: {e}")),
        Err(e) => return Err(e.into()),
        Ok(_) => return Err("an image in use was removed".into()),
    }
    Ok(())
}

/// Chapter 6: a container's writable layer committed as a new image.
fn commit(store: &Store, image: &Image, uno: &Container) -> Res<()> {
    chapter("6. Commit: a container's writable layer becomes a new image");
    let committed = uno.commit("add nota.txt, edit motd")?;
    store.tag(&committed, "tour/app:2")?;
    let shared = committed
        .layers()
        .iter()
        .zip(image.layers())
        .take_while(|(a, b)| a.digest == b.digest)
        .count();
    say(&format!(
        "  tour/app:2 has {} layers; its first {shared} already exist (shared with tour/app:1, \
         stored once): only the new layer of {} bytes was written",
        committed.layers().len(),
        committed.layers().last().map_or(0, |l| l.size)
    ));
    for line in committed.history_table().lines().take(3) {
        say(&format!("  {line}"));
    }
    Ok(())
}

/// Chapter 8: containers removed, images pruned, space back.
fn remove_and_prune(store: &Store, containers: Vec<Container>) -> Res<()> {
    chapter("8. Remove the containers, then prune: space comes back");
    for c in containers {
        c.remove()?;
    }
    ps(store)?;
    store.remove("tour/app:2")?;
    store.untag("tour/app:1")?;
    let pruned = store.prune()?;
    let gc = store.gc()?;
    say(&format!(
        "  pruned {} dangling images; gc reclaimed {} bytes",
        pruned.len(),
        gc.bytes
    ));
    let (blobs, layers) = store.counts()?;
    say(&format!(
        "  the store now holds {blobs} blobs and {layers} unpacked layers"
    ));
    Ok(())
}

/// Chapter 7: two containers of one image, each with its own address, both serving 8080.
fn networks(store: &Store) -> Res<()> {
    chapter("7. Each container its own IP: two servers of one image, both on port 8080");
    let Some(busybox) = base::static_busybox() else {
        say("  (no static busybox here: install busybox-static to see this chapter)");
        return Ok(());
    };
    let image = base::from_host(store, &[busybox.as_path()])?;
    let root = molde::layerfs::privilege::is_privileged();
    let net = Network::create(store, "tour")?;
    say(&format!(
        "  network `tour`: subnet {}, bridge {} (gateway {})",
        net.subnet(),
        net.bridge(),
        net.gateway()
    ));
    if !root {
        say("  rootless: the bridge is in the store's own user and network namespace (kept by a");
        say("  small holder process), out of the host's reach; each container is reached from");
        say("  the host through pasta, at a port of its own, and from the other by name");
    }
    let serve = |name: &str| {
        Container::builder(store, &image)
            .command(&busybox)
            .args(["httpd", "-f", "-p", "8080", "-h", "/etc"])
            .hostname(name)
            .publish(8080)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .join(&net)
            .start()
    };
    let servers = match (serve("uno"), serve("dos")) {
        (Ok(a), Ok(b)) => [a, b],
        (a, b) => {
            let mut failure = None;
            for started in [a, b] {
                match started {
                    Ok(c) => c.remove()?,
                    Err(e) => failure = failure.or(Some(e)),
                }
            }
            net.remove(store)?;
            match failure {
                Some(e) if !root => {
                    say(&format!("  rootless networking is not usable here: {e}"));
                    return Ok(());
                }
                Some(e) => return Err(e.into()),
                None => return Ok(()),
            }
        }
    };
    for (name, c) in ["uno", "dos"].iter().zip(&servers) {
        let seen = c.exec(&busybox).args(["ip", "-o", "-4", "addr"]).output()?;
        let own = String::from_utf8_lossy(&seen.stdout)
            .lines()
            .filter(|l| !l.contains(" lo ") && !l.contains(" tap0 "))
            .filter_map(|l| l.split_whitespace().nth(3))
            .collect::<Vec<_>>()
            .join(", ");
        let port = c.host_addr(8080).ok_or("no published port")?;
        say(&format!("  {name}: address {own}"));
        let other = if *name == "uno" { "dos" } else { "uno" };
        if let (Some(ip), true) = (c.ip(), root) {
            let (status, _) = get_hosts(std::net::SocketAddr::new(ip.into(), 8080))?;
            say(&format!("       http://{ip}:8080/ answers {status}"));
        } else if let Some(ip) = c.ip() {
            // Rootless: the host has no route to the bridge; the other container has.
            let from = &servers[usize::from(*name == "uno")];
            let url = format!("http://{name}:8080/hosts");
            let got = from
                .exec(&busybox)
                .args(["wget", "-q", "-O", "-", &url])
                .output()?;
            let answered = if got.success() { "answers" } else { "fails" };
            say(&format!(
                "       http://{ip}:8080/ from {other}, as {url}: {answered}"
            ));
        }
        let (status, hosts) = get_hosts(port)?;
        say(&format!(
            "       published on http://{port}/, which answers {status}"
        ));
        // The container's own line of its /etc/hosts: its address and names.
        let names = |n: &str| {
            hosts
                .lines()
                .find(|l| l.split_whitespace().any(|w| w == n))
                .map(|l| l.replace('\t', " "))
        };
        if let Some(line) = names(name) {
            say(&format!("       its /etc/hosts: {line}"));
        }
        // On a bridge network the other container is a name away.
        if let Some(line) = names(other) {
            say(&format!("       and names {other}: {line}"));
        }
    }
    for c in servers {
        c.remove()?;
    }
    net.remove(store)?;
    Ok(())
}

/// GET /hosts at `addr`, retried while the server starts: the status line and the body.
fn get_hosts(addr: std::net::SocketAddr) -> Res<(String, String)> {
    use std::io::{Read, Write};
    for _ in 0..500 {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            // httpd serves the container's /etc: its /hosts is the container's hosts file.
            s.write_all(b"GET /hosts HTTP/1.0\r\n\r\n")?;
            let mut answer = String::new();
            s.read_to_string(&mut answer)?;
            let status = answer.lines().next().unwrap_or("").to_owned();
            if !status.contains(" 200 ") {
                return Err(format!("GET /hosts at {addr}: {status}").into());
            }
            let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            return Ok((status, body.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!("nothing answered on {addr}").into())
}

fn chapter(title: &str) {
    println!("\n{title}");
}

fn say(line: &str) {
    println!("{line}");
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

/// Run a shell command in a running container; fail the tour if it fails.
fn run(c: &Container, script: &str) -> Res<()> {
    let out = c.exec("/bin/sh").args(["-c", script]).output()?;
    if !matches!(out.status, Status::Exited { code: Some(0), .. }) {
        return Err(format!(
            "`{script}` failed in {}: {}",
            c.id(),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// Print the store's containers, like `docker ps -a`.
fn ps(store: &Store) -> Res<()> {
    say("  CONTAINER     IMAGE          STATUS");
    for c in Container::list(store)? {
        let image = store.resolve(&c.image)?;
        let name = store
            .tags_of(&image)?
            .into_iter()
            .next()
            .unwrap_or_else(|| short(&image.id().to_string()).to_owned());
        say(&format!(
            "  {:<12}  {:<13}  {}",
            short(&c.id),
            name,
            c.status
        ));
    }
    Ok(())
}
