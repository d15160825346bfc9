//! The write half of a link, in a task of its own.
//!
//! A link's loop must never wait on its socket. A partner that stops reading,
//! or a path that drops silently (an expired NAT mapping, a firewall, a pulled
//! cable), leaves a write pending until the kernel gives up, which by default
//! takes up to fifteen minutes of retransmissions; a loop that awaited that
//! write could run no timer, so it could never declare the link dead. The loop
//! therefore only queues frames here ([`Writer::send`] never waits); this task
//! writes them, and records when the socket last accepted bytes, which the
//! loop reads on every tick ([`Writer::stalled_for`]) to apply the dead-link
//! rule to writes as it does to reads.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::SinkExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::FramedWrite;

use tokio_util::codec::Encoder;

/// Most frames that may wait for the socket before the link is closed: far more
/// than a window of messages plus the control frames a live partner provokes,
/// so only a partner that keeps sending (pings, messages to acknowledge) while
/// it reads nothing reaches it.
pub const MAX_QUEUED_FRAMES: u64 = 65_536;

/// Why a frame could not be queued or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The socket failed (reset, broken pipe, TLS error).
    #[error("send failed: {0}")]
    Failed(String),
    /// Too many frames wait for a socket that accepts nothing.
    #[error("the partner is not reading: {0} frames wait to be sent")]
    Backlog(u64),
}

/// What the loop and the writing task share.
#[derive(Debug)]
struct Progress {
    /// Frames queued and not yet flushed to the socket.
    pending: u64,
    /// When the socket last accepted bytes, or when the writer last went from
    /// idle to busy: a stall is measured from the later of the two.
    since: Instant,
    /// Why the writing task stopped, once it has.
    failed: Option<String>,
}

fn lock(progress: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    progress.lock().unwrap_or_else(|p| p.into_inner())
}

/// The loop's handle to the writing task, for items of type `I` (link frames,
/// STOMP frames).
pub struct Writer<I> {
    /// None once closing.
    queue: Option<mpsc::UnboundedSender<I>>,
    progress: Arc<Mutex<Progress>>,
    failure: oneshot::Receiver<String>,
    /// None once closed; aborted if the handle is dropped without `close`.
    task: Option<JoinHandle<()>>,
}

impl<I: Send + 'static> Writer<I> {
    /// Starts writing items to `io` (the write half of the link's stream) with `codec`.
    pub fn spawn<W, C>(io: W, codec: C) -> Writer<I>
    where
        W: AsyncWrite + Send + Unpin + 'static,
        C: Encoder<I> + Send + 'static,
        C::Error: std::fmt::Display + From<std::io::Error> + Send,
    {
        let progress = Arc::new(Mutex::new(Progress {
            pending: 0,
            since: Instant::now(),
            failed: None,
        }));
        let (queue, frames) = mpsc::unbounded_channel();
        let (report, failure) = oneshot::channel();
        let sink = FramedWrite::new(
            Stamped {
                io,
                progress: progress.clone(),
            },
            codec,
        );
        let task = tokio::spawn(write_frames(sink, frames, progress.clone(), report));
        Writer {
            queue: Some(queue),
            progress,
            failure,
            task: Some(task),
        }
    }

    /// Queues a frame; never waits. Fails when the writing task has failed or
    /// when the socket has accepted nothing while [`MAX_QUEUED_FRAMES`] piled up.
    pub fn send(&self, frame: I) -> Result<(), WriteError> {
        {
            let mut p = lock(&self.progress);
            if let Some(e) = &p.failed {
                return Err(WriteError::Failed(e.clone()));
            }
            if p.pending >= MAX_QUEUED_FRAMES {
                return Err(WriteError::Backlog(p.pending));
            }
            if p.pending == 0 {
                p.since = Instant::now();
            }
            p.pending += 1;
        }
        self.queue
            .as_ref()
            .and_then(|q| q.send(frame).ok())
            .ok_or_else(|| WriteError::Failed("the link's writer has stopped".into()))
    }

    /// How long frames have waited without the socket accepting a byte (zero when
    /// nothing waits).
    pub fn stalled_for(&self) -> Duration {
        let p = lock(&self.progress);
        if p.pending == 0 {
            Duration::ZERO
        } else {
            p.since.elapsed()
        }
    }

    /// Completes when the writing task fails, with the reason.
    pub async fn failed(&mut self) -> WriteError {
        let reason = (&mut self.failure)
            .await
            .unwrap_or_else(|_| "the link's writer has stopped".into());
        WriteError::Failed(reason)
    }

    /// Flushes what is queued and closes the stream (TLS close_notify, then FIN),
    /// waiting at most `bound`: a partner that reads nothing does not hold the
    /// link's end. After the bound the task is aborted and the stream dropped.
    pub async fn close(mut self, bound: Duration) {
        self.queue = None;
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(bound, &mut task).await.is_err() {
                task.abort();
            }
        }
    }

    /// Queues `frame` (a goodbye), then closes as [`Writer::close`] does. When the
    /// writer is already stalled the frame could not leave anyway, so the stream
    /// is dropped at once.
    pub async fn close_with(self, frame: I, bound: Duration) {
        if self.stalled_for() >= bound {
            return; // dropped: the task is aborted
        }
        let _ = self.send(frame);
        self.close(bound).await;
    }
}

impl<I> Drop for Writer<I> {
    fn drop(&mut self) {
        // A link that ends without `close` (a stalled writer, a panic, a cancelled
        // task) must not leave its writer holding the connection.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn write_frames<W, C, I>(
    mut sink: FramedWrite<Stamped<W>, C>,
    mut frames: mpsc::UnboundedReceiver<I>,
    progress: Arc<Mutex<Progress>>,
    report: oneshot::Sender<String>,
) where
    W: AsyncWrite + Send + Unpin + 'static,
    C: Encoder<I>,
    C::Error: std::fmt::Display + From<std::io::Error>,
{
    let result: Result<(), C::Error> = async {
        while let Some(first) = frames.recv().await {
            let mut written = 1u64;
            sink.feed(first).await?;
            while let Ok(frame) = frames.try_recv() {
                sink.feed(frame).await?;
                written += 1;
            }
            sink.flush().await?;
            let mut p = lock(&progress);
            p.pending = p.pending.saturating_sub(written);
            p.since = Instant::now();
        }
        // The loop dropped its handle: the link is ending. Say so to TLS and TCP.
        Ok(sink.get_mut().shutdown().await?)
    }
    .await;
    if let Err(e) = result {
        let e = e.to_string();
        lock(&progress).failed = Some(e.clone());
        let _ = report.send(e);
    }
}

/// The stream under the frame encoder, stamping [`Progress::since`] whenever it
/// accepts bytes, so a link that sends a large backlog slowly is not a stalled one.
struct Stamped<W> {
    io: W,
    progress: Arc<Mutex<Progress>>,
}

impl<W: AsyncWrite + Unpin> Stamped<W> {
    fn stamp(&self) {
        lock(&self.progress).since = Instant::now();
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Stamped<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.stamp();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, FrameCodec};
    use futures_util::StreamExt;
    use tokio_util::codec::FramedRead;

    fn ping(nonce: u64) -> Frame {
        Frame::Ping { nonce }
    }

    #[tokio::test]
    async fn frames_arrive_in_order_and_close_ends_the_stream() {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let writer = Writer::spawn(ours, FrameCodec::default());
        for n in 0..100 {
            writer.send(ping(n)).expect("queued");
        }
        writer.close(Duration::from_secs(5)).await;
        let frames: Vec<Frame> = FramedRead::new(theirs, FrameCodec::default())
            .map(|f| f.expect("decodes"))
            .collect()
            .await;
        assert_eq!(frames, (0..100).map(ping).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn a_partner_that_reads_nothing_shows_as_a_stall_and_cannot_hold_the_close() {
        // A tiny pipe that nobody reads: the first frames fill it, the rest wait.
        let (ours, _theirs) = tokio::io::duplex(64);
        let writer = Writer::spawn(ours, FrameCodec::default());
        assert_eq!(writer.stalled_for(), Duration::ZERO);
        for n in 0..50 {
            writer.send(ping(n)).expect("queued");
        }
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(
            writer.stalled_for() >= Duration::from_secs(3),
            "{:?}",
            writer.stalled_for()
        );
        // The close gives up after its bound instead of waiting for the reader.
        let started = tokio::time::Instant::now();
        writer
            .close_with(
                Frame::goodbye(crate::frame::GoodbyeCode::HeartbeatTimeout, "x"),
                Duration::from_millis(200),
            )
            .await;
        assert!(started.elapsed() <= Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_moving_socket_is_not_a_stall() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let writer = Writer::spawn(ours, FrameCodec::default());
        for n in 0..200 {
            writer.send(ping(n)).expect("queued");
        }
        let mut buf = [0u8; 16];
        for _ in 0..40 {
            tokio::time::advance(Duration::from_millis(100)).await;
            let _ = tokio::io::AsyncReadExt::read(&mut theirs, &mut buf).await;
            tokio::task::yield_now().await;
            assert!(writer.stalled_for() < Duration::from_millis(200));
        }
    }

    #[tokio::test]
    async fn a_failed_socket_is_reported_and_refuses_more_frames() {
        let (ours, theirs) = tokio::io::duplex(64);
        drop(theirs);
        let mut writer = Writer::spawn(ours, FrameCodec::default());
        writer
            .send(ping(1))
            .expect("queued before the failure is known");
        let reason = tokio::time::timeout(Duration::from_secs(5), writer.failed())
            .await
            .expect("reported");
        assert!(!reason.to_string().is_empty());
        assert!(matches!(writer.send(ping(2)), Err(WriteError::Failed(_))));
    }

    #[tokio::test]
    async fn a_backlog_past_the_cap_is_refused() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let writer = Writer::spawn(ours, FrameCodec::default());
        let mut refused = None;
        for n in 0..=MAX_QUEUED_FRAMES {
            if let Err(e) = writer.send(ping(n)) {
                refused = Some(e);
                break;
            }
        }
        assert!(
            matches!(refused, Some(WriteError::Backlog(_))),
            "{refused:?}"
        );
    }
}
