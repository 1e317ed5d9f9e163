//! Connections that stall (issue 16): the header-read timeout, the idle timeout and the
//! connection cap, seen from raw sockets (a partial head is beyond an HTTP client).
//! Each test sets the limits it relies on; waits are bounded by generous deadlines, and
//! nothing asserts how fast the server is.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::common::TestServer;

/// Longest a test waits for the server to close a stalled connection (the timeouts set
/// are a few seconds; this is only the bound of a broken server).
const CLOSE_DEADLINE: Duration = Duration::from_secs(30);

const PARTIAL_HEAD: &[u8] = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow";
const FULL_GET: &[u8] = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

fn addr(server: &TestServer) -> String {
    server
        .base
        .split("://")
        .nth(1)
        .expect("base URL has a scheme")
        .to_string()
}

/// A TLS client over std sockets that trusts only the server's certificate and speaks
/// HTTP/1.1.
fn tls_config(server: &TestServer) -> Arc<rustls::ClientConfig> {
    let cert = CertificateDer::from_pem_file(server.data_dir().join("tls/cert.pem"))
        .expect("server certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects and completes the TLS handshake.
fn tls_connect(addr: &str, config: Arc<rustls::ClientConfig>) -> Tls {
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(CLOSE_DEADLINE)).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).expect("TLS handshake");
    }
    rustls::StreamOwned::new(conn, tcp)
}

/// Reads until the peer closes; `Ok` when it did (EOF or an error such as a reset),
/// `Err` when our own read deadline passed first.
fn closed_by_server(stream: &mut impl Read) -> Result<(), String> {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!("still open after {CLOSE_DEADLINE:?}"))
            }
            Err(_) => return Ok(()),
        }
    }
}

/// Reads one response (head and a Content-Length body); returns its status.
fn read_response(stream: &mut impl Read) -> std::io::Result<u16> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buf[..n]);
    }
    Ok(status)
}

/// Opens `stalled` connections that send a partial head (over TLS when `tls` is set,
/// after a complete handshake) and `silent` TCP connections that send nothing; once all
/// are open, checks that a normal client is served, then that the server closed every
/// stalled one.
async fn stall_and_check(server: &TestServer, tls: Option<Arc<rustls::ClientConfig>>) {
    const STALLED: usize = 50;
    const SILENT: usize = 20;
    let addr = addr(server);
    let (open_tx, open_rx) = mpsc::channel::<()>();
    let mut threads = Vec::new();
    for _ in 0..STALLED {
        let (addr, tls, open) = (addr.clone(), tls.clone(), open_tx.clone());
        threads.push(std::thread::spawn(move || match tls {
            Some(config) => {
                let mut stream = tls_connect(&addr, config);
                stream.write_all(PARTIAL_HEAD).unwrap();
                stream.flush().unwrap();
                open.send(()).unwrap();
                closed_by_server(&mut stream).map_err(|e| format!("stalled TLS head: {e}"))
            }
            None => {
                let mut tcp = TcpStream::connect(&addr).expect("connect");
                tcp.set_read_timeout(Some(CLOSE_DEADLINE)).unwrap();
                tcp.write_all(PARTIAL_HEAD).unwrap();
                open.send(()).unwrap();
                closed_by_server(&mut tcp).map_err(|e| format!("stalled head: {e}"))
            }
        }));
    }
    for _ in 0..SILENT {
        let (addr, open) = (addr.clone(), open_tx.clone());
        threads.push(std::thread::spawn(move || {
            let mut tcp = TcpStream::connect(&addr).expect("connect");
            tcp.set_read_timeout(Some(CLOSE_DEADLINE)).unwrap();
            open.send(()).unwrap();
            closed_by_server(&mut tcp).map_err(|e| format!("silent connection: {e}"))
        }));
    }
    drop(open_tx);
    for _ in 0..STALLED + SILENT {
        open_rx
            .recv_timeout(CLOSE_DEADLINE)
            .expect("every stalled connection opened");
    }

    // While they stall, a normal client is served.
    let (status, body) = server.call("GET", "/health", None, None).await;
    assert_eq!(status, 200, "{body}");

    let results = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|t| t.join().expect("client thread"))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let still_open: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(
        still_open.is_empty(),
        "{} connections were not closed: {still_open:?}",
        still_open.len()
    );
}

#[tokio::test]
async fn stalled_tls_heads_and_silent_connections_are_closed_while_others_are_served() {
    let server = TestServer::start_with(&[
        ("REQUEST_HEADER_TIMEOUT", "2"),
        ("IDLE_TIMEOUT", "60"),
        ("MAX_CONNECTIONS", "200"),
    ])
    .await;
    let config = tls_config(&server);
    stall_and_check(&server, Some(config)).await;
}

#[tokio::test]
async fn stalled_plain_http_heads_and_silent_connections_are_closed_while_others_are_served() {
    let server = TestServer::start_with(&[
        ("TLS_DISABLE", "true"),
        ("REQUEST_HEADER_TIMEOUT", "2"),
        ("IDLE_TIMEOUT", "60"),
        ("MAX_CONNECTIONS", "200"),
    ])
    .await;
    stall_and_check(&server, None).await;
}

#[tokio::test]
async fn a_keep_alive_connection_outlives_the_header_timeout_but_not_the_idle_timeout() {
    let server = TestServer::start_with(&[
        ("REQUEST_HEADER_TIMEOUT", "1"),
        ("IDLE_TIMEOUT", "4"),
        ("MAX_CONNECTIONS", "200"),
    ])
    .await;
    let (addr, config) = (addr(&server), tls_config(&server));
    tokio::task::spawn_blocking(move || {
        let mut stream = tls_connect(&addr, config);
        stream.write_all(FULL_GET).unwrap();
        assert_eq!(read_response(&mut stream).unwrap(), 200);
        // Idle between requests longer than the header timeout, within the idle one: the
        // connection is still there for the next request.
        std::thread::sleep(Duration::from_millis(1500));
        stream.write_all(FULL_GET).unwrap();
        assert_eq!(read_response(&mut stream).unwrap(), 200);
        // Then nothing: the server closes it.
        closed_by_server(&mut stream).expect("idle keep-alive connection closed");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn beyond_max_connections_a_new_connection_waits_until_one_closes() {
    const CAP: usize = 3;
    let server = TestServer::start_with(&[
        ("TLS_DISABLE", "true"),
        ("MAX_CONNECTIONS", "3"),
        ("REQUEST_HEADER_TIMEOUT", "60"),
        ("IDLE_TIMEOUT", "60"),
    ])
    .await;
    let addr = addr(&server);
    tokio::task::spawn_blocking(move || {
        // CAP keep-alive connections, each served once and kept open.
        let mut open: Vec<TcpStream> = (0..CAP)
            .map(|_| {
                let mut tcp = TcpStream::connect(&addr).unwrap();
                tcp.set_read_timeout(Some(CLOSE_DEADLINE)).unwrap();
                tcp.write_all(FULL_GET).unwrap();
                assert_eq!(read_response(&mut tcp).unwrap(), 200);
                tcp
            })
            .collect();

        // One more: its request is not answered while the others stay open.
        let mut waiting = TcpStream::connect(&addr).unwrap();
        waiting.write_all(FULL_GET).unwrap();
        waiting
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let mut byte = [0u8; 1];
        match waiting.read(&mut byte) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("connection {} was served at the cap: {other:?}", CAP + 1),
        }

        // One closes: the waiting one is served.
        drop(open.pop());
        waiting.set_read_timeout(Some(CLOSE_DEADLINE)).unwrap();
        assert_eq!(read_response(&mut waiting).unwrap(), 200);
    })
    .await
    .unwrap();
}
