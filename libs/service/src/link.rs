//! A TCP link to a backing server that can be cut and restored, for injecting the fault "the
//! server went away" without stopping the server itself (other users of it carry on).
//!
//! [`CuttableLink`] listens on a free loopback port and forwards every connection to an
//! upstream `host:port`. [`CuttableLink::cut`] closes every open connection and makes new ones
//! close as soon as they are accepted, which is what a client sees when a server dies;
//! [`CuttableLink::restore`] forwards new connections again.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A forwarding TCP link whose connections can be cut.
#[derive(Debug)]
pub struct CuttableLink {
    address: SocketAddr,
    open: watch::Sender<bool>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl CuttableLink {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: impl Into<String>) -> std::io::Result<Self> {
        let upstream = upstream.into();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let open = watch::Sender::new(true);
        let stop = CancellationToken::new();
        let task = tokio::spawn(forward(listener, upstream, open.clone(), stop.clone()));
        Ok(Self {
            address,
            open,
            stop,
            task: Some(task),
        })
    }

    /// The loopback address to connect to instead of the upstream.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes every connection and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.open.send_replace(true);
    }

    /// Stops listening and closes every connection.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Dropping the link stops it too, without waiting.
impl Drop for CuttableLink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn forward(
    listener: TcpListener,
    upstream: String,
    open: watch::Sender<bool>,
    stop: CancellationToken,
) {
    loop {
        let mut inbound = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => continue,
            },
        };
        if !*open.borrow() {
            drop(inbound);
            continue;
        }
        let (upstream, mut closed, stop) = (upstream.clone(), open.subscribe(), stop.clone());
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                return;
            };
            tokio::select! {
                () = stop.cancelled() => {}
                _ = closed.wait_for(|open| !*open) => {}
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
            }
        });
    }
}

/// `host:port` of a URL such as `http://host:port/path`, `redis://host:port` or
/// `bolt://host:port`; a bare `host:port` is returned as it is.
pub fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split('/').next().unwrap_or(rest);
    rest.rsplit_once('@')
        .map_or(rest, |(_, host)| host)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An upstream that echoes every byte back.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        address
    }

    async fn round_trip(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        stream.write_all(b"ping").await?;
        let mut buffer = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buffer))
            .await
            .map_err(|_| std::io::Error::other("no answer"))??;
        Ok(buffer.to_vec())
    }

    #[tokio::test]
    async fn forwards_until_cut_then_again_after_restore() {
        let link = CuttableLink::start(echo().await.to_string()).await.unwrap();
        let mut before = TcpStream::connect(link.address()).await.unwrap();
        assert_eq!(round_trip(&mut before).await.unwrap(), b"ping");

        link.cut();
        let mut buffer = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(5), before.read(&mut buffer))
            .await
            .expect("the open connection is closed by the cut");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        let mut during = TcpStream::connect(link.address()).await.unwrap();
        assert!(
            round_trip(&mut during).await.is_err(),
            "new connections close"
        );

        link.restore();
        let mut after = TcpStream::connect(link.address()).await.unwrap();
        assert_eq!(round_trip(&mut after).await.unwrap(), b"ping");
        link.stop().await;
    }

    #[test]
    fn authority_strips_scheme_path_and_credentials() {
        assert_eq!(authority("http://127.0.0.1:9200/x"), "127.0.0.1:9200");
        assert_eq!(authority("redis://:secret@db:6379/0"), "db:6379");
        assert_eq!(authority("bolt://neo4j:7687"), "neo4j:7687");
        assert_eq!(authority("127.0.0.1:1"), "127.0.0.1:1");
    }
}
