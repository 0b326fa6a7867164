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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().ok_or("listen address")?.parse()?;
    let upstream: hyper::Uri = args.next().ok_or("upstream URL")?.parse()?;
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    let listener = tokio::net::TcpListener::bind(listen).await?;
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
