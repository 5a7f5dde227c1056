//! `stream-bench --url URL --key KEY --body JSON -c N -d SECS`: a closed-loop load generator for
//! streaming chat completions, used by `bench/run.sh`.
//!
//! Opens `N` keep-alive HTTP/1.1 connections; each sends the same POST one after the other for
//! the duration (after a warm-up that is not recorded) and reads every response to its end.
//! Prints one JSON line: requests/s, time to first byte (the first body byte, i.e. the first
//! SSE event, not the response head) and total time per request, as p50/p99 in milliseconds.
//! A non-2xx status, a transport error or a stream that does not end with `data: [DONE]`
//! counts as an error; the process exits 1 when any request failed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;

#[derive(Parser)]
struct Args {
    /// Full URL, e.g. http://127.0.0.1:8080/v1/chat/completions (plain HTTP only).
    #[arg(long)]
    url: Uri,
    /// Sent as `Authorization: Bearer KEY`.
    #[arg(long)]
    key: String,
    /// The JSON request body.
    #[arg(long)]
    body: String,
    /// Concurrent keep-alive connections, one request in flight on each.
    #[arg(short = 'c', long, default_value_t = 16)]
    connections: usize,
    /// Measured duration in seconds.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Unrecorded warm-up in seconds, on the same connections.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Runtime worker threads of the load generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Default)]
struct Samples {
    ttfb_us: Vec<u64>,
    total_us: Vec<u64>,
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.url.scheme_str() != Some("http") {
        bail!("only http:// URLs are supported");
    }
    let authority = args.url.authority().context("URL without host")?.clone();
    let addr: SocketAddr = tokio::net::lookup_host(authority.as_str())
        .await?
        .next()
        .context("URL host does not resolve")?;
    let path = args
        .url
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let body = Bytes::from(args.body.clone());
    let auth = format!("Bearer {}", args.key);

    let start = Instant::now();
    let record_from = start + Duration::from_secs_f64(args.warmup.max(0.0));
    let end = record_from + Duration::from_secs_f64(args.duration.max(0.0));

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.connections.max(1) {
        let (body, auth, path, host) = (
            body.clone(),
            auth.clone(),
            path.clone(),
            authority.to_string(),
        );
        tasks
            .spawn(async move { connection(addr, host, path, auth, body, record_from, end).await });
    }
    let mut all = Samples::default();
    while let Some(r) = tasks.join_next().await {
        let s = r.context("connection task panicked")?;
        all.ttfb_us.extend(s.ttfb_us);
        all.total_us.extend(s.total_us);
        all.bytes += s.bytes;
        all.errors += s.errors;
        if all.first_error.is_none() {
            all.first_error = s.first_error;
        }
    }
    // Requests still in flight at the deadline finish after it and are recorded, so the rate
    // divides by the time until the last one ended.
    let elapsed = Instant::now()
        .saturating_duration_since(record_from)
        .as_secs_f64();
    let n = all.total_us.len() as u64;
    all.ttfb_us.sort_unstable();
    all.total_us.sort_unstable();
    let out = json!({
        "url": args.url.to_string(),
        "connections": args.connections,
        "duration_s": (elapsed * 1000.0).round() / 1000.0,
        "requests": n,
        "errors": all.errors,
        "first_error": all.first_error,
        "rps": if elapsed > 0.0 { (n as f64 / elapsed * 10.0).round() / 10.0 } else { 0.0 },
        "ttfb_p50_ms": pct_ms(&all.ttfb_us, 0.50),
        "ttfb_p99_ms": pct_ms(&all.ttfb_us, 0.99),
        "total_p50_ms": pct_ms(&all.total_us, 0.50),
        "total_p99_ms": pct_ms(&all.total_us, 0.99),
        "body_bytes_per_request": all.bytes.checked_div(n).unwrap_or(0),
    });
    println!("{out}");
    if all.errors > 0 || n == 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds with µs precision.
fn pct_ms(sorted: &[u64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1] as f64 / 1000.0)
}

async fn connection(
    addr: SocketAddr,
    host: String,
    path: String,
    auth: String,
    body: Bytes,
    record_from: Instant,
    end: Instant,
) -> Samples {
    let mut s = Samples::default();
    let mut sender = None;
    while Instant::now() < end {
        // (Re)connect when there is no usable connection: the first time, or after an error.
        let tx = match &mut sender {
            Some(tx) => tx,
            None => match connect(addr).await {
                Ok(tx) => sender.insert(tx),
                Err(e) => {
                    fail(&mut s, format!("connect: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let req = Request::post(path.as_str())
            .header(header::HOST, host.as_str())
            .header(header::AUTHORIZATION, auth.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "text/event-stream")
            .body(Full::new(body.clone()));
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                fail(&mut s, format!("request: {e}"));
                return s;
            }
        };
        // A server may close a keep-alive connection after a response (`Connection: close`,
        // nginx's keepalive_requests): that is no failure, open a new one.
        if tx.ready().await.is_err() {
            sender = None;
            continue;
        }
        let t0 = Instant::now();
        let recorded = t0 >= record_from;
        match one(tx, req, t0).await {
            Ok((ttfb, total, bytes)) => {
                if recorded {
                    s.ttfb_us.push(ttfb.as_micros() as u64);
                    s.total_us.push(total.as_micros() as u64);
                    s.bytes += bytes;
                }
            }
            Err(e) => {
                sender = None;
                if recorded {
                    fail(&mut s, format!("{e:#}"));
                }
            }
        }
    }
    s
}

fn fail(s: &mut Samples, e: String) {
    s.errors += 1;
    if s.first_error.is_none() {
        s.first_error = Some(e);
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(tx)
}

/// One request: (time to first body byte, total time, body bytes).
async fn one(
    tx: &mut Sender,
    req: Request<Full<Bytes>>,
    t0: Instant,
) -> anyhow::Result<(Duration, Duration, u64)> {
    let resp = tx.send_request(req).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut ttfb = None;
    let mut bytes = 0u64;
    // The last few bytes, to check that the stream ended with `data: [DONE]`.
    let mut tail: Vec<u8> = Vec::with_capacity(64);
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the body")?;
        if let Some(data) = frame.data_ref() {
            if data.is_empty() {
                continue;
            }
            ttfb.get_or_insert_with(|| t0.elapsed());
            bytes += data.len() as u64;
            tail.extend_from_slice(data);
            if tail.len() > 64 {
                tail.drain(..tail.len() - 64);
            }
        }
    }
    let total = t0.elapsed();
    if !status.is_success() {
        bail!("status {status}: {}", String::from_utf8_lossy(&tail));
    }
    let tail = String::from_utf8_lossy(&tail);
    if !tail.trim_end().ends_with("data: [DONE]") {
        bail!("stream did not end with data: [DONE] (ends with {tail:?})");
    }
    Ok((ttfb.unwrap_or(total), total, bytes))
}
