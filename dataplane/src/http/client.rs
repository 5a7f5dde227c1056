//! The pooled upstream HTTP client. One client per connect timeout (endpoints share pools when
//! their connect timeouts agree), TCP_NODELAY on, keep-alive pooling, rustls with the webpki
//! roots. The connector stamps each new connection with when it was opened, so an attempt can
//! tell "connected just now, took N ms" from "reused a pooled connection" for the audit record.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioExecutor;

pub type UpstreamClient = Client<TimedConnector<HttpsConnector<HttpConnector>>, Full<Bytes>>;

/// When a connection was opened; found in a response's extensions.
#[derive(Clone, Copy, Debug)]
pub struct ConnectInfo {
    pub started: Instant,
    pub connected: Instant,
}

impl ConnectInfo {
    /// Connect time this attempt paid: zero on a pooled connection opened before it began.
    pub fn paid_since(&self, attempt_start: Instant) -> Duration {
        if self.started >= attempt_start {
            self.connected - self.started
        } else {
            Duration::ZERO
        }
    }
}

/// Clients by connect timeout, built once and shared across config reloads.
#[derive(Default)]
pub struct Clients(Mutex<HashMap<u64, UpstreamClient>>);

impl Clients {
    pub fn get(&self, connect_timeout_ms: u64) -> UpstreamClient {
        let mut map = match self.0.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.entry(connect_timeout_ms)
            .or_insert_with(|| build(Duration::from_millis(connect_timeout_ms)))
            .clone()
    }
}

fn build(connect_timeout: Duration) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(TimedConnector(https))
}

#[derive(Clone)]
pub struct TimedConnector<C>(C);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> tower::Service<Uri> for TimedConnector<C>
where
    C: tower::Service<Uri> + Send,
    C::Response: Read + Write + Connection + Unpin + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = TimedStream<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let started = Instant::now();
        let fut = self.0.call(uri);
        Box::pin(async move {
            let inner = fut.await?;
            Ok(TimedStream {
                inner,
                info: ConnectInfo {
                    started,
                    connected: Instant::now(),
                },
            })
        })
    }
}

pub struct TimedStream<S> {
    inner: S,
    info: ConnectInfo,
}

impl<S: Connection> Connection for TimedStream<S> {
    fn connected(&self) -> Connected {
        self.inner.connected().extra(self.info)
    }
}

impl<S: Read + Unpin> Read for TimedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: Write + Unpin> Write for TimedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
}
