//! A response body that a task writes into: Airlock's own event streams
//! (a held MCP tool call's progress, then its answer).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::mpsc;

/// Frames the writer may queue before the client reads them. A held call
/// writes one frame per progress interval, so a few are plenty.
const QUEUED_FRAMES: usize = 4;

/// The reading end, handed to hyper as the response body. Dropping it
/// (the client went away) closes the channel, which the writer sees.
pub struct EventBody {
    rx: mpsc::Receiver<Bytes>,
}

/// A writer and the body it feeds.
///
/// Why a bounded tokio channel rather than a `StreamBody` over a stream: the
/// writer is a task that must *notice* when nobody reads any more
/// (`Sender::closed`, `try_send` failing) so that an approved call is not
/// run for an agent that hung up; a stream polled by hyper would simply stop
/// being polled. Bounded, so that a client that stops reading makes the
/// writer skip progress frames instead of queueing them without limit. It
/// implements `Body` itself, since `StreamBody` would need a `Stream` adapter
/// crate for the receiver.
pub fn channel() -> (mpsc::Sender<Bytes>, EventBody) {
    let (tx, rx) = mpsc::channel(QUEUED_FRAMES);
    (tx, EventBody { rx })
}

impl Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}
