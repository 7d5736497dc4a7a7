//! `FreezableProxy`: a TCP proxy on 127.0.0.1 in front of a server that can be frozen. While
//! frozen it moves no bytes either way and keeps the connections open, as a process stopped
//! with SIGSTOP or a network partition would: calls neither fail nor get answers.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct FreezableProxy {
    pub addr: SocketAddr,
    frozen: Arc<watch::Sender<bool>>,
    accept: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    /// Starts forwarding to `target`. Must be called within a Tokio runtime.
    pub async fn start(target: SocketAddr) -> FreezableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let frozen = Arc::new(watch::channel(false).0);
        let f = frozen.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, f.subscribe()));
                tokio::spawn(pump(sr, cw, f.subscribe()));
            }
        });
        FreezableProxy {
            addr,
            frozen,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn freeze(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies one direction, holding each chunk while the proxy is frozen.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
