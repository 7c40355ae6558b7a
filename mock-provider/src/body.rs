//! Response body: one buffer with a content-length, one buffer sent chunked, or frames fed
//! through a channel (for `x-mock-chunk-*`).

use hyper::body::{Body, Bytes, Frame, SizeHint};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

pub enum MockBody {
    /// Whole body, sent with `content-length`.
    Full(Option<Bytes>),
    /// Whole body in one frame, length not announced (`transfer-encoding: chunked`).
    Chunked(Option<Bytes>),
    /// Frames produced by a task (chunked transfer encoding).
    Channel(mpsc::Receiver<Bytes>),
}

impl MockBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        MockBody::Full(Some(b.into()))
    }

    /// Sends `frames` one by one, waiting `delay` between two frames. Empty frames are skipped.
    pub fn frames(frames: Vec<Bytes>, delay: Duration) -> Self {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let mut first = true;
            for f in frames.into_iter().filter(|f| !f.is_empty()) {
                if !first {
                    if delay.is_zero() {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(delay).await;
                    }
                }
                first = false;
                if tx.send(f).await.is_err() {
                    return; // client went away
                }
            }
        });
        MockBody::Channel(rx)
    }
}

/// Cuts `body` into frames of `size` bytes.
pub fn split_every(body: &Bytes, size: usize) -> Vec<Bytes> {
    let size = size.max(1);
    (0..body.len())
        .step_by(size)
        .map(|start| body.slice(start..(start + size).min(body.len())))
        .collect()
}

/// Cuts `body` into `[0, offset)` and `[offset, end)`.
pub fn split_at(body: &Bytes, offset: usize) -> Vec<Bytes> {
    let k = offset.min(body.len());
    vec![body.slice(..k), body.slice(k..)]
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            MockBody::Full(b) | MockBody::Chunked(b) => {
                Poll::Ready(b.take().map(|b| Ok(Frame::data(b))))
            }
            MockBody::Channel(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(b) => b.as_ref().is_none_or(|b| b.is_empty()),
            MockBody::Chunked(b) => b.is_none(),
            MockBody::Channel(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting() {
        let b = Bytes::from_static(b"abcdefg");
        let parts = split_every(&b, 3);
        assert_eq!(
            parts,
            vec![
                Bytes::from_static(b"abc"),
                Bytes::from_static(b"def"),
                Bytes::from_static(b"g")
            ]
        );
        assert_eq!(
            split_at(&b, 2),
            vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cdefg")]
        );
        assert_eq!(split_at(&b, 99)[1].len(), 0);
    }
}
