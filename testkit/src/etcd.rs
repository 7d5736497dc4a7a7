//! A real etcd for tests that need the coordination service: Debian's `etcd-server` (the
//! `etcd` binary), started on two loopback ports of its own with its data in a temporary
//! directory, and killed when dropped. Where no `etcd` is installed the tests that need one
//! say so and skip, except under CI (`CI` set), where `.ci/run` installs it and its absence
//! is a failure.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct EtcdServer {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl EtcdServer {
    /// A fresh single-member etcd, serving when this returns; `None` (after saying why on
    /// stderr) when no `etcd` binary is installed outside CI.
    pub fn start() -> Option<EtcdServer> {
        let binary = std::env::var("CAIRN_TEST_ETCD").unwrap_or_else(|_| "etcd".into());
        if Command::new(&binary)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "no `{binary}` to run: install Debian's etcd-server (.ci/run does)"
            );
            eprintln!("skipped: no `{binary}` installed (apt-get install etcd-server)");
            return None;
        }
        // Ports taken from the kernel and given back for etcd to bind; a collision in
        // between makes the start fail, and it is tried again on other ports.
        for _ in 0..5 {
            if let Some(s) = Self::try_start(&binary) {
                return Some(s);
            }
        }
        panic!("etcd did not start on loopback after five tries");
    }

    fn try_start(binary: &str) -> Option<EtcdServer> {
        let free = || {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port()
        };
        let (client, peer) = (free(), free());
        let dir = tempfile::tempdir().expect("a temporary directory");
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        // Short heartbeats let etcd grant (and expire) leases of a second.
        let child = Command::new(binary)
            .args(["--name", "test", "--data-dir"])
            .arg(dir.path())
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .args(["--log-level", "error", "--logger", "zap"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run etcd");
        let mut server = EtcdServer {
            child,
            endpoint,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = server.child.try_wait() {
                return None;
            }
            if healthy(client) {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// `http://127.0.0.1:port`, for clients.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }
}

/// Whether etcd on `port` answers its health check as healthy (it has a leader).
fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
