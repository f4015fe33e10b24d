//! A client connection as the lane and hyper see it: plain TCP, or TLS over
//! TCP once the handshake is done.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// One accepted connection.
pub(crate) enum Conn {
    /// Plain HTTP.
    Plain(TcpStream),
    /// HTTPS. Boxed so that a held connection's task stays the size of a plain
    /// one's; the session itself lives on the heap either way.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    /// Completes when a read may make progress: the socket has bytes, or TLS
    /// already holds decrypted bytes (or the peer's close) that no read has taken.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        match self {
            Conn::Plain(stream) => stream.readable().await,
            Conn::Tls(stream) => {
                if stream.get_ref().1.wants_read() {
                    stream.get_ref().0.readable().await
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Whether bytes already taken off the socket wait to be read (TLS only).
    pub(crate) fn has_buffered(&self) -> bool {
        match self {
            Conn::Plain(_) => false,
            Conn::Tls(stream) => !stream.get_ref().1.wants_read(),
        }
    }

    /// Peeks at the socket under any TLS: 0 means the client's end of the
    /// stream; more means it sent something (a request, or TLS's close alert).
    /// A poll rather than an `async fn`: a held connection waits on it, and
    /// tokio's `peek` future is some 250 bytes of its state.
    pub(crate) fn poll_peek(
        &self,
        cx: &mut Context<'_>,
        probe: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut probe = ReadBuf::new(probe);
        match self {
            Conn::Plain(stream) => stream.poll_peek(cx, &mut probe),
            Conn::Tls(stream) => stream.get_ref().0.poll_peek(cx, &mut probe),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Conn::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Conn::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Conn::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(stream) => stream.is_write_vectored(),
            Conn::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Conn::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Conn::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
