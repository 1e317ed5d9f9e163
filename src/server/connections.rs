//! Stalled connections (issue 16): the header-read and idle timeouts and the connection
//! cap, around axum-server's accept loop.
//!
//! The timeouts are our own, in a wrapper around the accepted stream, not hyper's
//! `header_read_timeout`: hyper arms that timer whenever it waits for a request head,
//! including between two requests on a keep-alive connection, so with it an idle
//! keep-alive connection is closed after the (short) header timeout and a longer idle
//! timeout could never apply. The wrapper knows (from the service wrapper beside it)
//! whether a request is in flight, so it tells the three phases apart:
//!
//! - before the first request: the whole head must arrive within `header` of the
//!   connection being accepted (a connection that sends nothing is closed then too);
//! - between requests: the next head must be whole within `idle` of the last response
//!   (bytes from the client do not extend it); on HTTP/1.1, once a byte of the next head
//!   arrives, that head must also be whole within `header` of it. HTTP/2 clients send
//!   frames between requests (window updates, pings), so there only `idle` applies;
//!   the connection preface (`PRI * HTTP/2.0`) tells the two apart;
//! - while a request is in flight: no deadline here (`REQUEST_TIMEOUT` bounds handlers).
//!
//! A timeout is a read error, so hyper closes the connection (HTTP/1.1 and HTTP/2 alike).
//!
//! The cap is a semaphore in the make-service's `poll_ready`: axum-server's accept loop
//! waits there before it takes the next connection, so beyond the cap one accepted
//! connection waits in the process and the rest wait in the kernel's listen backlog;
//! nothing beyond the cap costs a task. The permit lives as long as the connection.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::PollSemaphore;
use tower::Service;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The two timeouts; `None` is off.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Option<Duration>,
    pub idle: Option<Duration>,
}

/// What the stream wrapper and the service wrapper of one connection share.
struct ConnState {
    /// Held for the connection's life (the cap); `None` when there is no cap.
    _permit: Option<OwnedSemaphorePermit>,
    in_flight: AtomicUsize,
    /// Requests begun on this connection.
    started: AtomicU64,
    /// When the last in-flight request answered.
    done_at: Mutex<Instant>,
    /// The reading task, woken when the last in-flight request answers (so the idle
    /// deadline is armed even if no byte arrives).
    reader: Mutex<Option<Waker>>,
}

impl ConnState {
    fn new(permit: Option<OwnedSemaphorePermit>) -> Self {
        Self {
            _permit: permit,
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            done_at: Mutex::new(Instant::now()),
            reader: Mutex::new(None),
        }
    }
}

/// Counts a request in flight until its response (or its cancellation).
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.done_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            if let Some(w) = self
                .0
                .reader
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                w.wake();
            }
        }
    }
}

/// The make-service: the connection cap, and a [`Tracked`] service per connection.
pub struct Capped<M> {
    inner: M,
    semaphore: Option<PollSemaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl<M> Capped<M> {
    /// `max_connections` 0 is no cap.
    pub fn new(inner: M, max_connections: usize) -> Self {
        Self {
            inner,
            semaphore: (max_connections > 0)
                .then(|| PollSemaphore::new(Arc::new(Semaphore::new(max_connections)))),
            permit: None,
        }
    }
}

impl<M> Service<SocketAddr> for Capped<M>
where
    M: Service<SocketAddr>,
    M::Future: Send + 'static,
    M::Response: Send + 'static,
    M::Error: Send + 'static,
{
    type Response = Tracked<M::Response>;
    type Error = M::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Some(semaphore) = &mut self.semaphore {
            if self.permit.is_none() {
                match semaphore.poll_acquire(cx) {
                    Poll::Pending => return Poll::Pending,
                    // Never closed: the semaphore is ours.
                    Poll::Ready(permit) => self.permit = permit,
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, addr: SocketAddr) -> Self::Future {
        let state = Arc::new(ConnState::new(self.permit.take()));
        let made = self.inner.call(addr);
        Box::pin(async move {
            let inner = made.await?;
            Ok(Tracked { inner, state })
        })
    }
}

/// The per-connection service: counts requests in flight.
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    state: Arc<ConnState>,
}

impl<S, R> Service<R> for Tracked<S>
where
    S: Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.state.started.fetch_add(1, Ordering::AcqRel);
        self.state.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(self.state.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let _guard = guard;
            fut.await
        })
    }
}

/// The acceptor: runs the inner one (TLS handshake or nothing), then wraps the stream.
#[derive(Clone)]
pub struct Guarded<A> {
    inner: A,
    timeouts: Timeouts,
}

impl<A> Guarded<A> {
    pub fn new(inner: A, timeouts: Timeouts) -> Self {
        Self { inner, timeouts }
    }
}

impl<A, S> Accept<TcpStream, Tracked<S>> for Guarded<A>
where
    A: Accept<TcpStream, Tracked<S>>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Watched<A::Stream>;
    type Service = A::Service;
    type Future = BoxFuture<io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: TcpStream, service: Tracked<S>) -> Self::Future {
        let opened = Instant::now();
        let state = service.state.clone();
        let timeouts = self.timeouts;
        let accepted = self.inner.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            Ok((Watched::new(stream, state, timeouts, opened), service))
        })
    }
}

/// The accepted stream, closed (a read error) when a deadline of [`Timeouts`] passes.
pub struct Watched<S> {
    inner: S,
    state: Arc<ConnState>,
    timeouts: Timeouts,
    opened: Instant,
    last_write: Instant,
    /// `started` as last seen: a change means the head being read has been parsed.
    seen_started: u64,
    /// When the first byte of the next head arrived (between requests; HTTP/1.1 only).
    head_began: Option<Instant>,
    /// Nothing read yet (the first bytes tell HTTP/2's preface from an HTTP/1.1 head).
    first_read: bool,
    http2: bool,
    sleep: Pin<Box<Sleep>>,
}

impl<S> Watched<S> {
    fn new(inner: S, state: Arc<ConnState>, timeouts: Timeouts, opened: Instant) -> Self {
        Self {
            inner,
            state,
            timeouts,
            opened,
            last_write: opened,
            seen_started: 0,
            head_began: None,
            first_read: true,
            http2: false,
            sleep: Box::pin(tokio::time::sleep_until(opened)),
        }
    }

    /// Forgets the head being read once the service has seen it; returns the requests
    /// begun so far.
    fn sync_started(&mut self) -> u64 {
        let started = self.state.started.load(Ordering::Acquire);
        if started != self.seen_started {
            self.seen_started = started;
            self.head_began = None;
        }
        started
    }

    /// The instant this connection must be closed at, if nothing changes first.
    fn deadline(&mut self) -> Option<Instant> {
        let started = self.sync_started();
        if self.state.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let Timeouts { header, idle } = self.timeouts;
        if started == 0 {
            // Before the first request: the head within `header` of connecting.
            return header.or(idle).map(|t| self.opened + t);
        }
        match self.head_began {
            Some(began) => header.map(|h| began + h),
            None => {
                let done = *self.state.done_at.lock().unwrap_or_else(|e| e.into_inner());
                idle.map(|i| done.max(self.last_write) + i)
            }
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection stalled")
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.sync_started();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if this.first_read && !read.is_empty() {
                    this.first_read = false;
                    this.http2 = read.starts_with(b"PRI ");
                }
                if !read.is_empty()
                    && !this.http2
                    && this.head_began.is_none()
                    && this.state.in_flight.load(Ordering::Acquire) == 0
                {
                    this.head_began = Some(Instant::now());
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        *this.state.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
        if let Some(deadline) = this.deadline() {
            if Instant::now() >= deadline {
                return Poll::Ready(Err(timed_out()));
            }
            this.sleep.as_mut().reset(deadline);
            if this.sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(timed_out()));
            }
        }
        Poll::Pending
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            if *n > 0 {
                this.last_write = Instant::now();
            }
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &polled {
            if *n > 0 {
                this.last_write = Instant::now();
            }
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// A watched server end with the given timeouts, and the client end.
    fn pair(header: Duration, idle: Duration) -> (Watched<DuplexStream>, DuplexStream) {
        let (server, client) = tokio::io::duplex(1024);
        let state = Arc::new(ConnState::new(None));
        let timeouts = Timeouts {
            header: Some(header),
            idle: Some(idle),
        };
        (
            Watched::new(server, state, timeouts, Instant::now()),
            client,
        )
    }

    /// As the service does when a request's head is parsed and answered.
    fn one_request_answered(watched: &Watched<DuplexStream>) {
        watched.state.started.fetch_add(1, Ordering::AcqRel);
        watched.state.in_flight.fetch_add(1, Ordering::AcqRel);
        drop(InFlight(watched.state.clone()));
    }

    /// The client sends `bytes` and the server end reads them.
    async fn pass(watched: &mut Watched<DuplexStream>, client: &mut DuplexStream, bytes: &[u8]) {
        client.write_all(bytes).await.unwrap();
        let mut got = vec![0u8; bytes.len()];
        watched.read_exact(&mut got).await.unwrap();
    }

    async fn read_error(watched: &mut Watched<DuplexStream>) -> io::ErrorKind {
        let mut buf = [0u8; 64];
        tokio::time::timeout(Duration::from_secs(10), watched.read(&mut buf))
            .await
            .expect("the wrapper closes within its timeouts")
            .expect_err("a stalled read is an error")
            .kind()
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_header_timeout() {
        let (mut watched, _client) = pair(Duration::from_millis(50), Duration::from_secs(60));
        assert_eq!(read_error(&mut watched).await, io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_slow_http1_head_between_requests_gets_the_header_timeout() {
        let (mut watched, mut client) = pair(Duration::from_millis(50), Duration::from_secs(60));
        pass(&mut watched, &mut client, b"GET / HTTP/1.1\r\n\r\n").await;
        one_request_answered(&watched);
        pass(&mut watched, &mut client, b"GET / HT").await;
        assert_eq!(read_error(&mut watched).await, io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn http2_frames_between_requests_leave_only_the_idle_timeout() {
        let (mut watched, mut client) = pair(Duration::from_millis(50), Duration::from_secs(3));
        let mut buf = [0u8; 64];
        pass(
            &mut watched,
            &mut client,
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        )
        .await;
        one_request_answered(&watched);
        // A window update after the response is not the start of a head.
        pass(&mut watched, &mut client, b"\0\0\x04\x08\0\0\0\0\0").await;
        let early = tokio::time::timeout(Duration::from_millis(300), watched.read(&mut buf)).await;
        assert!(early.is_err(), "closed before the idle timeout: {early:?}");
        assert_eq!(read_error(&mut watched).await, io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_request_in_flight_is_not_cut_by_either_timeout() {
        let (mut watched, mut client) = pair(Duration::from_millis(50), Duration::from_millis(50));
        let mut buf = [0u8; 64];
        pass(&mut watched, &mut client, b"GET / HTTP/1.1\r\n\r\n").await;
        watched.state.started.fetch_add(1, Ordering::AcqRel);
        watched.state.in_flight.fetch_add(1, Ordering::AcqRel);
        let in_flight = InFlight(watched.state.clone());
        let early = tokio::time::timeout(Duration::from_millis(300), watched.read(&mut buf)).await;
        assert!(early.is_err(), "closed with a request in flight: {early:?}");
        // Answered: the idle timeout runs from here, and the waiting read is woken for it.
        drop(in_flight);
        assert_eq!(read_error(&mut watched).await, io::ErrorKind::TimedOut);
    }
}
