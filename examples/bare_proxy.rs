//! A bare hyper reverse proxy with no policy, no audit and no metrics: the
//! floor that `bench/load.sh` measures Airlock against, to show what the
//! policy layer costs on top of the HTTP plumbing.
//!
//!     cargo run --release --example bare_proxy -- 127.0.0.1:8081 http://127.0.0.1:9000

use std::net::SocketAddr;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

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
