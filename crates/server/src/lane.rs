//! The agent lane: a lean HTTP/1.1 connection handler in front of hyper for
//! connections that carry `POST /agent/v1/sync`.
//!
//! Thousands of devices hold a long-poll at once. Under hyper a held connection
//! keeps its read buffer (8–16 KiB) and its write buffer (8 KiB) for as long as
//! it is held, and neither initial size can be configured. Here a connection
//! owns a buffer only while a request is being read; while it waits it is the
//! socket, the [`HeldSync`](crate::agent::HeldSync) and a small task. The head is parsed by `httparse`
//! (hyper's own parser); the lane writes only the answers a sync has: 200 with a
//! policy, 304, or an error in the API's JSON format. The decision logic is the
//! same as the axum handler's ([`begin_sync`], [`HeldSync::finish`](crate::agent::HeldSync::finish)).
//!
//! Any request the lane does not take (another route, HTTP/1.0, a body that is
//! chunked, over 1 MiB or behind `Expect: 100-continue`, a head it cannot parse)
//! is handed to axum with the bytes already read, through [`LaneListener`],
//! which axum accepts from as from a TCP listener. A connection handed over
//! stays with hyper; the agent routes close it after their answer (see
//! [`crate::agent::router`]), so that an agent's next sync opens a connection
//! the lane serves.
//!
//! Over HTTPS the lane also does the TLS handshake, in each connection's task;
//! everything after it reads and writes the decrypted stream ([`Conn`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::conn::Conn;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::agent::{
    SyncAnswer, SyncQuery, SyncRequest, SyncStep, admit, begin_sync, device_token_hash, stopping,
};
use crate::error::ApiResult;
use crate::extract::query_from_str;
use crate::state::AppState;

const SYNC_PATH: &str = "/agent/v1/sync";
/// The largest body the lane reads, the same limit as the API's.
const MAX_BODY: usize = 1024 * 1024;
/// A head larger than this goes to hyper, which answers what is wrong with it.
const MAX_HEAD: usize = 16 * 1024;
/// Headers parsed per request; more goes to hyper.
const MAX_HEADERS: usize = 32;
/// Time allowed to send a whole request once its first byte has arrived.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections past the cap whose head is being read, to refuse a sync or
/// keep an API call (each a file, within the few hundred `serve` keeps free
/// under the open-file limit); past these, new connections wait in the
/// kernel's listen backlog.
const PAST_THE_CAP_AT_ONCE: usize = 64;
/// Connections past the cap kept for calls other than syncs (the admin API,
/// SCIM, the portal), so that an agent storm does not lock them out.
const KEPT_FOR_THE_API: usize = 64;
/// Time a connection past the cap is given to send its head, and a refused
/// one to read its answer.
const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// Connections the lane handed over, accepted by axum as from a TCP listener.
pub(crate) struct LaneListener {
    handed_over: mpsc::Receiver<(Rewound, SocketAddr)>,
}

impl LaneListener {
    /// The next connection handed over, or `None` once the lane has stopped.
    pub(crate) async fn next(&mut self) -> Option<(Rewound, SocketAddr)> {
        self.handed_over.recv().await
    }
}

/// Completes when every connection the lane serves has ended.
pub(crate) struct LaneConnections(watch::Sender<()>);

impl LaneConnections {
    /// Waits for the lane's connections to end (they end at shutdown).
    pub(crate) async fn closed(self) {
        self.0.closed().await;
    }
}

/// What every lane connection shares.
struct Lane {
    state: AppState,
    hand_over: mpsc::Sender<(Rewound, SocketAddr)>,
    /// The TLS handshake every connection goes through first, when serving HTTPS.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Accepts on `listener` until the server shuts down. Returns the listener
/// axum serves the handed-over connections from, and the lane's connections.
pub(crate) fn start(
    listener: TcpListener,
    state: AppState,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> io::Result<(LaneListener, LaneConnections)> {
    let (hand_over, handed_over) = mpsc::channel(256);
    let (alive, alive_rx) = watch::channel(());
    let lane = Arc::new(Lane {
        state,
        hand_over,
        tls,
    });
    tokio::spawn(accept_loop(listener, lane, alive_rx));
    Ok((LaneListener { handed_over }, LaneConnections(alive)))
}

async fn accept_loop(listener: TcpListener, lane: Arc<Lane>, alive: watch::Receiver<()>) {
    let mut shutdown = lane.state.shutdown.clone();
    // Every connection, the lane's and hyper's, holds a permit. Past the cap
    // a new connection's head is read: a sync is answered 503 with
    // `Retry-After` and closed, rather than left in the kernel's listen
    // backlog until its client gives up; any other call is served on a
    // connection kept for the API. Past those, connections wait in the backlog.
    let slots = Arc::new(Semaphore::new(
        lane.state
            .config
            .max_connections
            .clamp(1, Semaphore::MAX_PERMITS),
    ));
    let past_the_cap = Arc::new(Semaphore::new(PAST_THE_CAP_AT_ONCE));
    let kept_for_the_api = Arc::new(Semaphore::new(KEPT_FOR_THE_API));
    loop {
        let place = tokio::select! {
            biased;
            () = stopping(&mut shutdown) => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => Place::Served(slot),
                Err(_) => break,
            },
            looked_at = past_the_cap.clone().acquire_owned() => match looked_at {
                Ok(looked_at) => Place::PastTheCap(looked_at),
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopping(&mut shutdown) => break,
        };
        match accepted {
            Ok((stream, address)) => {
                // Answers are written whole; waiting to coalesce them only adds latency.
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "could not set TCP_NODELAY");
                }
                match place {
                    Place::Served(slot) => {
                        tokio::spawn(serve_connection(
                            lane.clone(),
                            stream,
                            address,
                            slot,
                            alive.clone(),
                        ));
                    }
                    Place::PastTheCap(looked_at) => {
                        tokio::spawn(serve_past_the_cap(
                            lane.clone(),
                            stream,
                            address,
                            looked_at,
                            kept_for_the_api.clone(),
                        ));
                    }
                }
            }
            // A connection that failed before it was accepted concerns only its client.
            Err(error) if is_connection_error(&error) => {}
            Err(error) => {
                // Usually too many open files: wait for some to close rather than spin.
                tracing::error!(%error, "accepting connections failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Where the accept loop puts its next connection.
enum Place {
    /// Under the cap: served.
    Served(OwnedSemaphorePermit),
    /// Past the cap: looked at by [`serve_past_the_cap`].
    PastTheCap(OwnedSemaphorePermit),
}

/// A connection past the cap: its head is read (within [`REFUSAL_TIME`]).
/// A call other than a sync is handed to axum on a connection kept for the
/// API, while one is free; a sync (or a call when none is free) is answered
/// 503 with `Retry-After`, spread like a shed sync's, which the agent honours
/// with jitter. The socket is drained after the answer, so that closing does
/// not reset the connection before the client has read it.
async fn serve_past_the_cap(
    lane: Arc<Lane>,
    stream: TcpStream,
    address: SocketAddr,
    looked_at: OwnedSemaphorePermit,
    kept_for_the_api: Arc<Semaphore>,
) {
    let looked = async {
        let mut stream = match &lane.tls {
            None => Conn::Plain(stream),
            Some(acceptor) => handshake(&lane.state, acceptor, stream, address).await?,
        };
        let mut buffer = Vec::new();
        let incoming = read_head(&mut stream, &mut buffer).await.ok()?;
        Some((stream, buffer, incoming))
    };
    let Ok(Some((mut stream, buffer, incoming))) = tokio::time::timeout(REFUSAL_TIME, looked).await
    else {
        return;
    };
    match incoming {
        Incoming::Other => {
            if let Ok(kept) = kept_for_the_api.try_acquire_owned() {
                drop(looked_at);
                let handed = Rewound::new(buffer, stream, kept);
                let _ = Box::pin(lane.hand_over.send((handed, address))).await;
                return;
            }
        }
        Incoming::Sync(_) => {}
        Incoming::Closed => return,
    }
    let busy = lane.state.shed.refuse_connection();
    let refused = async {
        let (_, response) = render(Err(busy), true);
        stream.write_all(&response).await?;
        stream.flush().await?;
        stream.shutdown().await?;
        let mut scratch = [0u8; 1024];
        while stream.read(&mut scratch).await? > 0 {}
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(REFUSAL_TIME, refused).await;
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves syncs on one connection until it closes, the server shuts down, or a
/// request comes that is not for the lane. Over HTTPS it first completes the
/// TLS handshake, in the connection's own task (so that a slow client never
/// holds up the accept loop) and under the header-read timeout.
///
/// This future is what a held long-poll costs, so it is kept small. It is not
/// an `async fn`, which would keep every argument twice (as passed and as its
/// local) for the life of the connection; and each step but the hold is boxed,
/// so that the state kept across the hold is only the hold's.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
fn serve_connection(
    lane: Arc<Lane>,
    stream: TcpStream,
    address: SocketAddr,
    slot: OwnedSemaphorePermit,
    alive: watch::Receiver<()>,
) -> impl Future<Output = ()> + Send {
    async move {
        // Dropped with the connection: the lane's connections are all gone
        // once every clone of it is.
        let _alive = &alive;
        let mut stream = match &lane.tls {
            None => Conn::Plain(stream),
            Some(acceptor) => {
                match Box::pin(handshake(&lane.state, acceptor, stream, address)).await {
                    Some(stream) => stream,
                    None => return,
                }
            }
        };
        let mut buffer = Vec::new();
        let mut shutdown = lane.state.shutdown.clone();
        loop {
            if buffer.is_empty() {
                // Idle between requests: no buffer, only the socket, for a while.
                tokio::select! {
                    ready = tokio::time::timeout(lane.state.config.idle_timeout, stream.readable()) => {
                        if !matches!(ready, Ok(Ok(()))) {
                            return;
                        }
                    }
                    () = stopping(&mut shutdown) => return,
                }
            }
            let (first_look, close, started) =
                match Box::pin(take_sync(&lane, &mut stream, &mut buffer, address)).await {
                    Taken::Sync {
                        first_look,
                        close,
                        started,
                    } => (first_look, close, started),
                    Taken::Other => {
                        // axum's side has closed only if the server is stopping.
                        let handed = Rewound::new(buffer, stream, slot);
                        let _ = Box::pin(lane.hand_over.send((handed, address))).await;
                        return;
                    }
                    Taken::End => return,
                };
            let mut close = close;
            let answered = match first_look {
                Ok(SyncStep::Hold(held)) => {
                    let watch_client = buffer.is_empty() && !stream.has_buffered();
                    let finish = std::pin::pin!(held.finish(&lane.state));
                    match hold(finish, &stream, watch_client).await {
                        Held::Answer(answer) => answer,
                        Held::HalfClosed(answer) => {
                            // The client sends nothing more, but waits for this answer.
                            close = true;
                            answer
                        }
                        Held::Gone => return,
                    }
                }
                Ok(SyncStep::Answer(answer)) => Ok(answer),
                Err(error) => Err(error),
            };
            let close = close || *lane.state.shutdown.borrow();
            if answer(&lane, &mut stream, answered, close, started)
                .await
                .is_err()
            {
                return;
            }
            if close {
                let _ = stream.shutdown().await;
                return;
            }
        }
    }
}

/// The TLS handshake under the header-read timeout; `None` if it failed,
/// timed out or the server is stopping.
async fn handshake(
    state: &AppState,
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    address: SocketAddr,
) -> Option<Conn> {
    let mut shutdown = state.shutdown.clone();
    let handshake = tokio::time::timeout(state.config.header_read_timeout, acceptor.accept(stream));
    tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => Some(Conn::Tls(Box::new(stream))),
            Ok(Err(error)) => {
                tracing::debug!(%error, %address, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%address, "TLS handshake timed out");
                None
            }
        },
        () = stopping(&mut shutdown) => None,
    }
}

/// What came on a connection after it had been idle.
enum Taken {
    /// A sync, with its first look (or why it was refused), whether the
    /// connection closes after its answer, and when its head had been read.
    Sync {
        first_look: ApiResult<SyncStep>,
        close: bool,
        started: Instant,
    },
    /// A request for hyper: the connection is handed over with `buffer`.
    Other,
    /// The connection ended, or is to end without an answer.
    End,
}

/// Reads a request; if it is a sync, authenticates the device before its body
/// is read, reads the body and takes the first look at the sync.
async fn take_sync(
    lane: &Lane,
    stream: &mut Conn,
    buffer: &mut Vec<u8>,
    address: SocketAddr,
) -> Taken {
    let state = &lane.state;
    let head =
        match tokio::time::timeout(state.config.header_read_timeout, read_head(stream, buffer))
            .await
        {
            Ok(Ok(Incoming::Sync(head))) => head,
            Ok(Ok(Incoming::Other)) => return Taken::Other,
            Ok(Ok(Incoming::Closed) | Err(_)) | Err(_) => return Taken::End,
        };
    let started = Instant::now();
    let client = head.client(state, address);
    let request_end = head.head_len + head.content_length;
    // The device is known before its body is read: a stranger's body is
    // never read, let alone parsed, and the connection ends with the answer.
    let device = match state
        .shed
        .authenticate(state, head.token_hash.clone(), Some(client))
        .await
    {
        Ok(device) => device,
        Err(error) => {
            // The body is skipped in small pieces, never held or parsed, so
            // that the connection can carry the next request.
            let skipped =
                tokio::time::timeout(REQUEST_READ_TIMEOUT, skip_body(stream, buffer, request_end))
                    .await;
            return Taken::Sync {
                first_look: Err(error),
                close: head.close || !matches!(skipped, Ok(Ok(true))),
                started,
            };
        }
    };
    let request = {
        let budget = match state.body_budget.reserve(head.content_length).await {
            Ok(budget) => budget,
            Err(error) => {
                return Taken::Sync {
                    first_look: Err(error),
                    close: true,
                    started,
                };
            }
        };
        let read =
            tokio::time::timeout(REQUEST_READ_TIMEOUT, read_body(stream, buffer, request_end))
                .await;
        if !matches!(read, Ok(Ok(true))) {
            return Taken::End;
        }
        let request = head.sync_request(buffer.get(head.head_len..request_end).unwrap_or(&[]));
        buffer.drain(..request_end.min(buffer.len()));
        drop(budget);
        request
    };
    if buffer.is_empty() {
        // Give the memory back before the request is held.
        *buffer = Vec::new();
    }
    let first_look = match request {
        // Shed (503 with Retry-After) when the node or the tenant's share stays busy.
        Ok(request) => match admit(state, &device).await {
            Ok(admitted) => Box::pin(begin_sync(state, device, request, admitted)).await,
            Err(busy) => Err(busy),
        },
        Err(error) => Err(error),
    };
    Taken::Sync {
        first_look,
        close: head.close,
        started,
    }
}

/// Writes an answer and records it.
async fn answer(
    lane: &Lane,
    stream: &mut Conn,
    answer: ApiResult<SyncAnswer>,
    close: bool,
    started: Instant,
) -> io::Result<()> {
    let (status, response) = render(answer, close);
    lane.state.metrics.record_request(
        "POST",
        SYNC_PATH.to_owned(),
        status.as_u16(),
        started.elapsed().as_secs_f64(),
    );
    tracing::debug!(status = status.as_u16(), "sync answered by the agent lane");
    Box::pin(async {
        stream.write_all(&response).await?;
        // TLS may keep what the socket did not take yet.
        stream.flush().await
    })
    .await
}

/// How a hold ended.
enum Held {
    /// With an answer for a connection that stays open.
    Answer(ApiResult<SyncAnswer>),
    /// With an answer for a client that half-closed its side while it waited.
    HalfClosed(ApiResult<SyncAnswer>),
    /// The connection failed: nobody is left to answer.
    Gone,
}

/// Waits for the held sync's answer. A client that closes its sending side
/// (`SHUT_WR`) after its request still gets the answer; a connection that
/// fails is given up. `finish` is pinned in the caller's state, so that it is
/// not kept twice.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
fn hold<'a>(
    mut finish: Pin<&'a mut impl Future<Output = ApiResult<SyncAnswer>>>,
    stream: &'a Conn,
    mut watch_client: bool,
) -> impl Future<Output = Held> + 'a {
    async move {
        let mut half_closed = false;
        let mut probe = [0u8; 1];
        loop {
            tokio::select! {
                answer = finish.as_mut() => {
                    return if half_closed { Held::HalfClosed(answer) } else { Held::Answer(answer) };
                }
                peeked = std::future::poll_fn(|cx| stream.poll_peek(cx, &mut probe)), if watch_client => match peeked {
                    Err(_) => return Held::Gone,
                    // End of the client's stream: a half-close, or a close that the
                    // write of the answer will find (the hold is bounded either way).
                    Ok(0) => {
                        half_closed = true;
                        watch_client = false;
                    }
                    // A pipelined request: it is read after this one is answered.
                    Ok(_) => watch_client = false,
                },
            }
        }
    }
}

/// What the start of a connection's byte stream holds.
enum Incoming {
    /// A sync request's whole head is in the buffer.
    Sync(SyncHead),
    /// A request for hyper.
    Other,
    /// The client closed the connection (perhaps in the middle of a request).
    Closed,
}

/// A sync request's head, read into owned values so that the buffer can go.
struct SyncHead {
    head_len: usize,
    content_length: usize,
    query: ApiResult<SyncQuery>,
    token_hash: ApiResult<String>,
    held_etag: Option<String>,
    close: bool,
    /// `X-Forwarded-For` values, read only when the peer is a trusted proxy.
    forwarded_for: Vec<Vec<u8>>,
    /// `Forwarded` values, likewise.
    forwarded: Vec<Vec<u8>>,
}

impl SyncHead {
    /// The client's address, as [`crate::extract::client_address`] finds it.
    fn client(&self, state: &AppState, peer: SocketAddr) -> std::net::IpAddr {
        state.config.trusted_proxies.client(
            peer.ip(),
            self.forwarded_for.iter().map(Vec::as_slice),
            self.forwarded.iter().map(Vec::as_slice),
        )
    }

    /// The request of an authenticated device, or the first error in the
    /// order the axum handler finds them after the token: query, then body.
    /// (The body is parsed by `begin_sync`, and only when the device's last
    /// answer cannot be reused.)
    fn sync_request(&self, body: &[u8]) -> ApiResult<SyncRequest> {
        let wait_s = match &self.query {
            Ok(query) => query.wait.unwrap_or(0),
            Err(error) => return Err(error.clone()),
        };
        Ok(SyncRequest {
            held_etag: self.held_etag.clone(),
            wait_s,
            body: body.to_vec(),
        })
    }
}

/// Reads until a whole head is in the buffer (and some of the body, perhaps).
async fn read_head(stream: &mut Conn, buffer: &mut Vec<u8>) -> io::Result<Incoming> {
    loop {
        if !buffer.is_empty() {
            match parse_head(buffer) {
                Head::Partial if buffer.len() >= MAX_HEAD => return Ok(Incoming::Other),
                Head::Partial => {}
                Head::Other => return Ok(Incoming::Other),
                Head::Sync(head) => return Ok(Incoming::Sync(head)),
            }
        }
        if read_some(stream, buffer, 1024).await? == 0 {
            return Ok(Incoming::Closed);
        }
    }
}

/// Drops the request that ends at `request_end` from the buffer and the
/// socket, reading what has not arrived yet into a small scratch buffer;
/// false if the client closed first.
async fn skip_body(
    stream: &mut Conn,
    buffer: &mut Vec<u8>,
    request_end: usize,
) -> io::Result<bool> {
    let mut missing = request_end.saturating_sub(buffer.len());
    buffer.drain(..request_end.min(buffer.len()));
    let mut scratch = [0u8; 4096];
    while missing > 0 {
        let wanted = missing.min(scratch.len());
        let read = stream.read(&mut scratch[..wanted]).await?;
        if read == 0 {
            return Ok(false);
        }
        missing -= read;
    }
    Ok(true)
}

/// Reads until the buffer holds `request_end` bytes; false if the client closed first.
async fn read_body(
    stream: &mut Conn,
    buffer: &mut Vec<u8>,
    request_end: usize,
) -> io::Result<bool> {
    while buffer.len() < request_end {
        if read_some(stream, buffer, request_end - buffer.len()).await? == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn read_some(stream: &mut Conn, buffer: &mut Vec<u8>, wanted: usize) -> io::Result<usize> {
    buffer.reserve(wanted);
    stream.read_buf(buffer).await
}

enum Head {
    Partial,
    Other,
    Sync(SyncHead),
}

fn parse_head(bytes: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Head::Partial,
        // Malformed, or too many headers: hyper gives the proper answer.
        Err(_) => return Head::Other,
    };
    let (Some("POST"), Some(1), Some(target)) = (request.method, request.version, request.path)
    else {
        return Head::Other;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != SYNC_PATH {
        return Head::Other;
    }
    let mut content_length = None;
    let mut authorization = None;
    let mut held_etag = None;
    let mut close = false;
    let mut forwarded_for = Vec::new();
    let mut forwarded = Vec::new();
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            match (content_length, parse_content_length(header.value)) {
                (None, Some(length)) => content_length = Some(length),
                // Unparsable or repeated: hyper decides what that means.
                _ => return Head::Other,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return Head::Other;
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization.get_or_insert(header.value);
        } else if name.eq_ignore_ascii_case("if-none-match") {
            if held_etag.is_none() {
                held_etag = std::str::from_utf8(header.value)
                    .ok()
                    .map(|v| v.trim().to_owned());
            }
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for.push(header.value.to_vec());
        } else if name.eq_ignore_ascii_case("forwarded") {
            forwarded.push(header.value.to_vec());
        } else if name.eq_ignore_ascii_case("connection") {
            close |= header
                .value
                .split(|b| *b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    let Some(content_length) = content_length.filter(|length| *length <= MAX_BODY) else {
        return Head::Other;
    };
    Head::Sync(SyncHead {
        head_len,
        content_length,
        query: query_from_str(query),
        token_hash: device_token_hash(authorization),
        held_etag,
        close,
        forwarded_for,
        forwarded,
    })
}

/// `1*DIGIT` and nothing else (no sign, no list): anything looser is how
/// requests get smuggled past a proxy that reads the length differently.
fn parse_content_length(value: &[u8]) -> Option<usize> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The response's status and bytes.
fn render(answer: ApiResult<SyncAnswer>, close: bool) -> (StatusCode, Vec<u8>) {
    let mut retry_after = None;
    let (status, etag, body): (_, Option<std::sync::Arc<str>>, Option<Bytes>) = match answer {
        Ok(SyncAnswer::Policy(policy)) => (StatusCode::OK, Some(policy.etag), Some(policy.json)),
        Ok(SyncAnswer::NotModified { etag }) => (StatusCode::NOT_MODIFIED, Some(etag), None),
        Err(error) => {
            retry_after = error.retry_after();
            (
                error.status(),
                None,
                Some(Bytes::from(error.body().to_string())),
            )
        }
    };
    // The same security headers as every answer of the router (see `edge`).
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ndate: {}\r\nx-content-type-options: {}\r\ncache-control: {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        httpdate::fmt_http_date(SystemTime::now()),
        crate::edge::NOSNIFF,
        crate::edge::NO_STORE,
    );
    // ETags are made by the server; the check keeps a header from ever being split.
    if let Some(etag) = etag.filter(|e| e.bytes().all(|b| b.is_ascii_graphic() || b == b' ')) {
        head.push_str(&format!("etag: {etag}\r\n"));
    }
    if let Some(body) = &body {
        head.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    if let Some(seconds) = retry_after {
        head.push_str(&format!("retry-after: {seconds}\r\n"));
    }
    if close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut response = head.into_bytes();
    if let Some(body) = body {
        response.extend_from_slice(&body);
    }
    (status, response)
}

/// A connection with bytes already read from it put back in front, so that
/// hyper reads the request the lane declined from its first byte.
pub(crate) struct Rewound {
    prefix: Vec<u8>,
    consumed: usize,
    stream: Conn,
    /// The connection's place under the cap, given back when hyper drops it.
    _slot: OwnedSemaphorePermit,
}

impl Rewound {
    fn new(prefix: Vec<u8>, stream: Conn, slot: OwnedSemaphorePermit) -> Self {
        Self {
            prefix,
            consumed: 0,
            stream,
            _slot: slot,
        }
    }
}

impl AsyncRead for Rewound {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(rest) = this.prefix.get(this.consumed..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.consumed += n;
            if this.consumed == this.prefix.len() {
                this.prefix = Vec::new();
                this.consumed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;

    fn sync_head(bytes: &[u8]) -> Option<SyncHead> {
        match parse_head(bytes) {
            Head::Sync(head) => Some(head),
            _ => None,
        }
    }

    /// The size of what `f` returns, without calling it.
    fn size_of_output<A, B, C, D, E, R>(_: impl FnOnce(A, B, C, D, E) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn a_held_connection_fits_a_small_task() {
        // The connection's future is most of what a held long-poll costs.
        // tokio allocates a task in 128-byte steps with about 120 bytes of its
        // own: up to 904 bytes of future, the task takes 1 KiB (it took 2 KiB
        // before the hold was made lean).
        let size = size_of_output(serve_connection);
        assert!(size <= 904, "serve_connection's future is {size} bytes");
    }

    #[test]
    fn a_sync_request_is_taken_with_its_headers() {
        let request = b"POST /agent/v1/sync?wait=30 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\nIf-None-Match: \"v1\"\r\nContent-Length: 2\r\n\r\n{}";
        let head = sync_head(request).expect("taken");
        assert_eq!(head.head_len, request.len() - 2);
        assert_eq!(head.content_length, 2);
        assert_eq!(head.held_etag.as_deref(), Some("\"v1\""));
        assert!(!head.close);
        assert_eq!(head.query.as_ref().ok().and_then(|q| q.wait), Some(30));
        assert!(head.token_hash.is_ok());
    }

    #[test]
    fn anything_else_goes_to_hyper() {
        let declined: [&[u8]; 9] = [
            b"GET /agent/v1/sync HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"POST /agent/v1/enroll HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
            b"POST /agent/v1/sync HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}",
            b"POST /agent/v1/sync HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /agent/v1/sync HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            b"POST /agent/v1/sync HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            b"POST /agent/v1/sync HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n",
            b"POST /agent/v1/sync HTTP/1.1\r\nContent-Length: +2\r\n\r\n{}",
            b"POST /agent/v1/sync HTTP/1.1\r\n\r\n",
        ];
        for request in declined {
            assert!(
                matches!(parse_head(request), Head::Other),
                "{}",
                String::from_utf8_lossy(request)
            );
        }
        assert!(matches!(
            parse_head(b"\x16\x03\x01garbage\r\n\r\n"),
            Head::Other
        ));
    }

    #[test]
    fn a_head_still_arriving_is_partial() {
        assert!(matches!(
            parse_head(b"POST /agent/v1/sync HTTP/1.1\r\nContent-Le"),
            Head::Partial
        ));
    }

    #[test]
    fn connection_close_is_honoured_in_any_case_and_list() {
        let head = sync_head(
            b"POST /agent/v1/sync HTTP/1.1\r\nConnection: keep-alive, CLOSE\r\nContent-Length: 0\r\n\r\n",
        )
        .expect("taken");
        assert!(head.close);
    }

    #[test]
    fn errors_come_in_the_handlers_order() {
        let head =
            sync_head(b"POST /agent/v1/sync?wait=soon HTTP/1.1\r\nContent-Length: 1\r\n\r\n{")
                .expect("taken");
        let error = head.sync_request(b"{").err().expect("refused");
        assert_eq!(error.body()["error"]["code"], "invalid_query");
        // The body is parsed later, by `begin_sync`, once the device is known.
        let head = sync_head(b"POST /agent/v1/sync HTTP/1.1\r\nContent-Length: 1\r\n\r\n{")
            .expect("taken");
        let request = head.sync_request(b"{").expect("taken");
        assert_eq!(request.body, b"{");
    }

    #[test]
    fn answers_are_well_formed() {
        let (status, bytes) = render(
            Ok(SyncAnswer::NotModified {
                etag: "\"v7\"".into(),
            }),
            true,
        );
        let text = String::from_utf8(bytes).expect("ascii");
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(text.starts_with("HTTP/1.1 304 Not Modified\r\n"), "{text}");
        assert!(text.contains("\r\netag: \"v7\"\r\n"));
        assert!(text.contains("\r\nconnection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        assert!(!text.contains("content-length"));

        let (status, bytes) = render(Err(ApiError::unauthorized("no token")), false);
        let text = String::from_utf8(bytes).expect("ascii");
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(body["error"]["message"], "no token");
    }

    proptest::proptest! {
        /// Whatever a client sends, the lane decides without panicking, and
        /// never reads past what it has.
        #[test]
        fn any_bytes_are_decided_without_panic(
            prefix in proptest::sample::select(vec![
                "".to_owned(),
                "POST /agent/v1/sync HTTP/1.1\r\n".to_owned(),
                "POST /agent/v1/sync?wait=".to_owned(),
            ]),
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        ) {
            let mut input = prefix.into_bytes();
            input.extend(bytes);
            if let Head::Sync(head) = parse_head(&input) {
                proptest::prop_assert!(head.head_len <= input.len());
                let body = input.get(head.head_len..).unwrap_or(&[]);
                let _ = head.sync_request(body);
            }
        }

        /// Well-formed heads with any query, header values and body: taken or
        /// declined, never a panic, and a taken one's body length is its own.
        #[test]
        fn any_well_formed_sync_head_is_decided_without_panic(
            query in "[ -~]{0,30}",
            headers in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "Authorization", "If-None-Match", "Connection", "Content-Length",
                        "content-length", "Host", "X-Other",
                    ]),
                    "[!-~][ -~]{0,40}",
                ),
                0..6,
            ),
            body in "[ -~]{0,80}",
        ) {
            let mut input = format!("POST /agent/v1/sync?{} HTTP/1.1\r\n", query.replace(' ', "+"));
            for (name, value) in &headers {
                input.push_str(&format!("{name}: {value}\r\n"));
            }
            input.push_str("\r\n");
            let head_len = input.len();
            input.push_str(&body);
            match parse_head(input.as_bytes()) {
                Head::Sync(head) => {
                    proptest::prop_assert_eq!(head.head_len, head_len);
                    let length: usize = headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                        .map(|(_, v)| v.trim())
                        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(usize::MAX);
                    proptest::prop_assert_eq!(head.content_length, length);
                    let end = head_len.saturating_add(head.content_length).min(input.len());
                    let _ = head.sync_request(&input.as_bytes()[head_len..end]);
                }
                Head::Other | Head::Partial => {}
            }
        }
    }

    /// Decides a head and, when taken, everything the lane derives from it
    /// before and after authentication: the client address behind a trusted
    /// proxy, the request from the body, and what follows it in the buffer.
    fn decide_fully(input: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
        if let Head::Sync(head) = parse_head(input) {
            proptest::prop_assert!(head.head_len <= input.len());
            let proxies = crate::limit::TrustedProxies::new(vec![
                crate::limit::TrustedProxies::parse_network("127.0.0.0/8")
                    .map_err(proptest::test_runner::TestCaseError::fail)?,
            ]);
            let _client = proxies.client(
                std::net::IpAddr::from([127, 0, 0, 1]),
                head.forwarded_for.iter().map(Vec::as_slice),
                head.forwarded.iter().map(Vec::as_slice),
            );
            let end = head
                .head_len
                .saturating_add(head.content_length)
                .min(input.len());
            if let Err(error) = head.sync_request(&input[head.head_len..end]) {
                proptest::prop_assert!(error.status().is_client_error());
            }
            // A pipelined request after this one is decided the same way.
            if end < input.len() {
                let _ = parse_head(&input[end..]);
            }
        }
        Ok(())
    }

    /// Heads made of sync-like lines in any order and any bytes between:
    /// request lines with any target, headers with any value bytes (control
    /// characters, obs-fold, forwarding headers, lengths), then any bytes.
    fn sync_like_head() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        (
            prop::collection::vec(any::<u8>(), 0..40),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "Authorization",
                        "If-None-Match",
                        "Connection",
                        "Content-Length",
                        "X-Forwarded-For",
                        "Forwarded",
                        "Transfer-Encoding",
                        "Expect",
                        "Host",
                        " Folded",
                    ]),
                    prop::collection::vec(any::<u8>(), 0..48),
                ),
                0..12,
            ),
            prop::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(target, lines, tail)| {
                let mut input = b"POST /agent/v1/sync".to_vec();
                input.extend(target);
                input.extend_from_slice(b" HTTP/1.1\r\n");
                for (name, value) in lines {
                    input.extend_from_slice(name.as_bytes());
                    input.extend_from_slice(b": ");
                    input.extend(value);
                    input.extend_from_slice(b"\r\n");
                }
                input.extend_from_slice(b"\r\n");
                input.extend(tail);
                input
            })
    }

    /// Well-formed sync heads with forwarding headers and bodies of any
    /// bytes, followed by any bytes (a second, pipelined request).
    fn pipelined_syncs() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        (
            "[0-9a-f:.,\\[\\] ]{0,60}",
            "[ -~]{0,60}",
            prop::collection::vec(any::<u8>(), 0..120),
            prop::collection::vec(any::<u8>(), 0..120),
        )
            .prop_map(|(forwarded_for, forwarded, body, second)| {
                let mut input = format!(
                    "POST /agent/v1/sync?wait=5 HTTP/1.1\r\nX-Forwarded-For: {forwarded_for}\r\nForwarded: {forwarded}\r\nAuthorization: Bearer t\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                input.extend(body);
                input.extend(second);
                input
            })
    }

    /// Any bytes, after nothing or the start of a sync's request line.
    fn any_bytes_after_a_prefix() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        (
            prop::sample::select(vec![
                "",
                "POST /agent/v1/sync HTTP/1.1\r\n",
                "POST /agent/v1/sync?wait=",
            ]),
            prop::collection::vec(any::<u8>(), 0..600),
        )
            .prop_map(|(prefix, bytes)| {
                let mut input = prefix.as_bytes().to_vec();
                input.extend(bytes);
                input
            })
    }

    proptest::proptest! {
        #[test]
        fn any_sync_like_head_is_decided_without_panic(input in sync_like_head()) {
            decide_fully(&input)?;
        }

        #[test]
        fn pipelined_syncs_with_forwarding_headers_are_decided_without_panic(
            input in pipelined_syncs(),
        ) {
            decide_fully(&input)?;
        }
    }

    /// The lane's request head for `FUZZ_SECONDS`.
    #[test]
    #[ignore = "a campaign of FUZZ_SECONDS; run by hand"]
    fn request_head_campaign() {
        use proptest::strategy::Strategy;
        crate::fuzz::campaign(
            "lane request head",
            &[
                any_bytes_after_a_prefix().boxed(),
                sync_like_head().boxed(),
                pipelined_syncs().boxed(),
            ],
            decide_fully,
        );
    }

    #[test]
    fn an_etag_that_could_split_the_head_is_left_out() {
        let (_, bytes) = render(
            Ok(SyncAnswer::NotModified {
                etag: "\"v7\"\r\nset-cookie: x".into(),
            }),
            false,
        );
        let text = String::from_utf8(bytes).expect("ascii");
        assert!(!text.contains("set-cookie"));
    }
}
