//! `molde::open_store`: a store a SIGKILLed host used comes back clean (its container marked
//! exited, its cgroup removed), without calling `recover` by hand.

use std::path::{Path, PathBuf};
use std::time::Duration;

use molde::container::{Container, Status};

/// When set, the test is the host to be killed: it starts a container in the store at this
/// path, prints `CONTAINER <id> <pid>` and waits.
const HOST_ENV: &str = "MOLDE_TEST_OPEN_STORE_HOST";

fn molde_cgroups() -> Vec<String> {
    molde::container::cgroup::Parent::default()
        .list()
        .unwrap_or_default()
}

#[test]
fn open_store_clears_what_a_sigkilled_host_left() {
    if let Some(root) = std::env::var_os(HOST_ENV) {
        let store = molde::open_store(PathBuf::from(root)).unwrap();
        let image = store.resolve("host:latest").unwrap();
        let c = Container::builder(&store, &image)
            .command("/bin/sleep")
            .arg("600")
            .pids(64)
            .init(true)
            .start()
            .unwrap();
        println!("CONTAINER {} {}", c.id(), c.pid().unwrap());
        std::thread::sleep(Duration::from_secs(600));
        return;
    }
    if !molde::layerfs::privilege::is_privileged() {
        assert!(
            std::env::var_os("MOLDE_REQUIRE_ALL").is_none_or(|v| v != "1"),
            "MOLDE_REQUIRE_ALL=1 and this test cannot run: needs root for cgroups"
        );
        eprintln!("skipping: needs root for cgroups");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    {
        let store = molde::open_store(&root).unwrap();
        let bins: Vec<&Path> = ["/bin/sleep", "/bin/sh"].iter().map(Path::new).collect();
        let image = molde::image::base::from_host(&store, &bins).unwrap();
        store.tag(&image, "host:latest").unwrap();
    }
    let mut host = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "open_store_clears_what_a_sigkilled_host_left",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOST_ENV, &root)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(host.stdout.take().unwrap());
    let mut line = String::new();
    let (id, pid) = loop {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut reader, &mut line).unwrap() > 0,
            "host ended"
        );
        if let Some(at) = line.find("CONTAINER ") {
            let rest = line[at + "CONTAINER ".len()..].trim();
            let (id, pid) = rest.split_once(' ').unwrap();
            break (id.to_owned(), pid.parse::<u32>().unwrap());
        }
    };
    assert!(molde_cgroups().contains(&id), "the container's cgroup");
    host.kill().unwrap();
    host.wait().unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if molde::container::record::pid_info(pid).is_none_or(|(_, zombie)| zombie) {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gone, "container process {pid} outlived its host");
    // The record still says running: nothing has looked at it yet.
    let paths = molde::container::record::ContainerPaths::new(
        &molde::image::Store::open(&root).unwrap(),
        &id,
    );
    assert_eq!(
        molde::container::record::Record::read(&paths)
            .unwrap()
            .state,
        molde::container::record::State::Running
    );
    // Opening through the facade clears it: exited, cgroup gone.
    let store = molde::open_store(&root).unwrap();
    let record = molde::container::record::Record::read(&paths).unwrap();
    assert_eq!(record.state, molde::container::record::State::Exited);
    assert_eq!((record.pid, record.program_pid), (None, None));
    assert!(!molde_cgroups().contains(&id), "cgroup left");
    let list = Container::list(&store).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0].status,
        Status::Exited {
            code: None,
            signal: None
        }
    );
    Container::open(&store, &id).unwrap().remove().unwrap();
    assert!(store.holds().unwrap().is_empty());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&*root.to_string_lossy()), "mounts left");
}
