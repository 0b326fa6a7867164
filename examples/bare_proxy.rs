//! A bare hyper reverse proxy with no policy, no audit and no metrics: the
//! floor that `bench/load.sh` measures Airlock against, to show what the
//! policy layer costs on top of the HTTP plumbing.
//!
//!     cargo run --release --example bare_proxy -- 127.0.0.1:8081 http://127.0.0.1:9000
//!
//! `BARE_THREADS=N` runs N single-threaded runtimes (as `bench/load.sh`
//! does). `BARE_PAIRED=1` replaces hyper-util's pooled client with one
//! upstream connection per agent connection, as Airlock's lanes do; with
//! `BARE_PAIRED=0` a side-by-side run shows what the pool costs the
//! plumbing (docs/performance.md).

use std::net::SocketAddr;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

// The same allocator as Airlock's binary, so that the floor differs from it
// by the policy layer only.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().ok_or("listen address")?.parse()?;
    let upstream: hyper::Uri = args.next().ok_or("upstream URL")?.parse()?;
    // BARE_THREADS=N: N single-threaded runtimes sharing the port through
    // SO_REUSEPORT (nginx's model); unset: one multi-threaded runtime.
    match std::env::var("BARE_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(n) => {
            let mut handles = Vec::new();
            for _ in 0..n {
                let upstream = upstream.clone();
                handles.push(std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    rt.block_on(async move {
                        let sock = tokio::net::TcpSocket::new_v4()?;
                        sock.set_reuseport(true)?;
                        sock.set_reuseaddr(true)?;
                        sock.bind(listen)?;
                        run(sock.listen(1024)?, upstream).await
                    })
                    .map_err(|e| e.to_string())
                }));
            }
            for h in handles {
                let _ = h.join();
            }
            Ok(())
        }
        None => tokio::runtime::Runtime::new()?.block_on(async move {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            run(listener, upstream).await.map_err(Into::into)
        }),
    }
}

async fn run(listener: tokio::net::TcpListener, upstream: hyper::Uri) -> std::io::Result<()> {
    if std::env::var("BARE_PAIRED").is_ok_and(|v| v == "1") {
        return run_paired(listener, upstream).await;
    }
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let client = client.clone();
                let upstream = upstream.clone();
                async move {
                    let (mut parts, body) = req.into_parts();
                    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                    let uri = format!(
                        "{}://{}{}",
                        upstream.scheme_str().unwrap_or("http"),
                        upstream.authority().map_or("", |a| a.as_str()),
                        pq
                    );
                    parts.uri = uri.parse().unwrap_or_default();
                    parts.headers.remove(hyper::header::HOST);
                    let out = Request::from_parts(parts, body.boxed());
                    match client.request(out).await {
                        Ok(resp) => Ok::<_, hyper::Error>(resp.map(|b| b.boxed())),
                        Err(_) => Ok(Response::builder()
                            .status(502)
                            .body(http_body_util::Empty::new().map_err(|e| match e {}).boxed())
                            .unwrap_or_default()),
                    }
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// BARE_PAIRED=1: no pool. Each agent connection gets its own upstream
/// connection (hyper's low-level `client::conn::http1`), driven on the same
/// thread: what a pool-free data plane would cost.
async fn run_paired(
    listener: tokio::net::TcpListener,
    upstream: hyper::Uri,
) -> std::io::Result<()> {
    let authority = upstream
        .authority()
        .map_or(String::new(), |a| a.to_string());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let authority = authority.clone();
        tokio::spawn(async move {
            // One request at a time on an HTTP/1.1 connection: never contended.
            let sender: std::sync::Arc<
                tokio::sync::Mutex<Option<hyper::client::conn::http1::SendRequest<Body>>>,
            > = Default::default();
            let svc = service_fn(move |req: Request<Incoming>| {
                let sender = sender.clone();
                let authority = authority.clone();
                async move {
                    let mut guard = sender.lock().await;
                    if guard.as_ref().is_none_or(|s| s.is_closed()) {
                        let up = tokio::net::TcpStream::connect(authority.as_str()).await;
                        let Ok(up) = up else {
                            return Ok::<_, hyper::Error>(bad_gateway());
                        };
                        let _ = up.set_nodelay(true);
                        let (s, conn) =
                            hyper::client::conn::http1::handshake(TokioIo::new(up)).await?;
                        tokio::spawn(conn);
                        *guard = Some(s);
                    }
                    let Some(s) = guard.as_mut() else {
                        return Ok(bad_gateway());
                    };
                    let (mut parts, body) = req.into_parts();
                    parts.headers.remove(hyper::header::HOST);
                    if let Ok(v) = authority.parse() {
                        parts.headers.insert(hyper::header::HOST, v);
                    }
                    match s
                        .send_request(Request::from_parts(parts, body.boxed()))
                        .await
                    {
                        Ok(resp) => Ok(resp.map(|b| b.boxed())),
                        Err(_) => Ok(bad_gateway()),
                    }
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn bad_gateway() -> Response<Body> {
    Response::builder()
        .status(502)
        .body(http_body_util::Empty::new().map_err(|e| match e {}).boxed())
        .unwrap_or_default()
}
