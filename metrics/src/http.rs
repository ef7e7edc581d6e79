//! A small HTTP/1.1 endpoint for Prometheus: `GET /metrics` (or `HEAD`) answers the registry's
//! text exposition; other paths get 404, other methods 405, malformed requests 400, too-large
//! requests 431. One std thread accepts; each connection gets its own thread, at most
//! `max_connections` at once (more are answered 503 and closed). Every read and write has a
//! timeout and the whole request head must arrive within `read_timeout`. One request per
//! connection (`Connection: close`).

use crate::{MetricsError, Registry};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Limits of the endpoint.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time allowed to receive the request head.
    pub read_timeout: Duration,
    /// Time allowed for each write of the response.
    pub write_timeout: Duration,
    /// Largest request head accepted, in bytes.
    pub max_request: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            max_connections: 8,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            max_request: 8 << 10,
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (`head`: `HEAD /metrics`, no body).
    Metrics {
        /// A HEAD request.
        head: bool,
    },
    /// An error status to answer.
    Status(u16),
}

/// Routes a request head (the bytes up to and including the blank line, or at least the
/// request line). Never panics, whatever the bytes.
pub fn route(head: &[u8]) -> Route {
    let line_end = head.windows(2).position(|w| w == b"\r\n").unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Route::Status(400);
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::Status(400);
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b))
    };
    if !token(method) || !target.starts_with('/') || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Route::Status(400);
    }
    if target.bytes().any(|b| !b.is_ascii_graphic()) {
        return Route::Status(400);
    }
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" {
        return Route::Status(404);
    }
    match method {
        "GET" => Route::Metrics { head: false },
        "HEAD" => Route::Metrics { head: true },
        _ => Route::Status(405),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn respond(s: &mut TcpStream, status: u16, content_type: &str, body: &[u8], send_body: bool) -> std::io::Result<()> {
    let allow = if status == 405 { "Allow: GET, HEAD\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    s.write_all(head.as_bytes())?;
    if send_body {
        s.write_all(body)?;
    }
    s.flush()
}

fn error_page(s: &mut TcpStream, status: u16) -> std::io::Result<()> {
    let body = format!("{status} {}\n", reason(status));
    respond(s, status, "text/plain; charset=utf-8", body.as_bytes(), true)
}

/// Reads a request head: `Ok(bytes)` when the blank line arrived, `Err(status)` otherwise.
fn read_head(s: &mut TcpStream, opts: &HttpOptions) -> Result<Vec<u8>, u16> {
    let deadline = Instant::now() + opts.read_timeout;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(408);
        }
        if s.set_read_timeout(Some(left)).is_err() {
            return Err(400);
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err(400),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(408);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(400),
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end + 4);
            return Ok(buf);
        }
        if buf.len() > opts.max_request {
            return Err(431);
        }
    }
}

fn serve_one(mut s: TcpStream, registry: &Registry, opts: &HttpOptions) {
    let _ = s.set_write_timeout(Some(opts.write_timeout));
    let r = match read_head(&mut s, opts) {
        Ok(head) => match route(&head) {
            Route::Metrics { head } => {
                let body = registry.render();
                respond(&mut s, 200, CONTENT_TYPE, body.as_bytes(), !head)
            }
            Route::Status(st) => error_page(&mut s, st),
        },
        Err(st) => error_page(&mut s, st),
    };
    // A failed write means the scraper went away: nothing to do.
    let _ = r;
    let _ = s.shutdown(std::net::Shutdown::Both);
}

/// A running metrics endpoint; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl MetricsServer {
    /// Listens on `addr` (port 0: any free port) and serves `registry`.
    pub fn start(addr: SocketAddr, registry: Arc<Registry>, opts: HttpOptions) -> Result<Self, MetricsError> {
        let listener = TcpListener::bind(addr).map_err(|source| MetricsError::Listen { addr, source })?;
        let local = listener.local_addr().map_err(|source| MetricsError::Os {
            what: "local address",
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("metrics-http".into())
                .spawn(move || accept_loop(&listener, &registry, &opts, &stop))
                .map_err(|source| MetricsError::Os { what: "spawn", source })?
        };
        Ok(MetricsServer {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }

    /// The address served (with the real port).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting; connections being served finish on their own (bounded by the timeouts).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            // Wake the blocking accept.
            let mut wake = self.addr;
            if wake.ip().is_unspecified() {
                wake.set_ip(match wake {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.halt();
    }
}

fn accept_loop(listener: &TcpListener, registry: &Arc<Registry>, opts: &HttpOptions, stop: &AtomicBool) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(mut s) = conn else {
            // EMFILE and the like: do not spin.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if active.load(Ordering::SeqCst) >= opts.max_connections.max(1) {
            let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = error_page(&mut s, 503);
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let guard = Active(Arc::clone(&active));
        let (registry, opts) = (Arc::clone(registry), opts.clone());
        let spawned = std::thread::Builder::new().name("metrics-conn".into()).spawn(move || {
            let _guard = guard;
            serve_one(s, &registry, &opts);
        });
        if spawned.is_err() {
            // The closure (and its guard) was dropped: the slot is free again.
            continue;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_good_and_bad_request_lines() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Route::Metrics { head: false }
        );
        assert_eq!(route(b"HEAD /metrics HTTP/1.1\r\n\r\n"), Route::Metrics { head: true });
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::Status(404));
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n"), Route::Status(404));
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::Status(405));
        assert_eq!(route(b"DELETE /metrics HTTP/1.1\r\n\r\n"), Route::Status(405));
        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /metrics\r\n\r\n",
            b"GET /metrics HTTP/2.0\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 extra\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"G\xffT /metrics HTTP/1.1\r\n\r\n",
            b"GET /met\x01rics HTTP/1.1\r\n\r\n",
            b"G(T /metrics HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(route(bad), Route::Status(400), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn routing_arbitrary_bytes_never_panics() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for len in 0..2000 {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x & 0xff) as u8
                })
                .collect();
            let _ = route(&bytes);
        }
    }

    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn serves_metrics_and_refuses_the_rest() {
        let r = Arc::new(Registry::new());
        r.counter("up_total", "Up.", &[]).add(42);
        let opts = HttpOptions {
            read_timeout: Duration::from_millis(300),
            max_request: 256,
            ..HttpOptions::default()
        };
        let srv = MetricsServer::start("127.0.0.1:0".parse().unwrap(), Arc::clone(&r), opts).unwrap();
        let a = srv.local_addr();
        let ok = exchange(a, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(
            ok.ends_with("\r\n\r\n# HELP up_total Up.\n# TYPE up_total counter\nup_total 42\n"),
            "{ok}"
        );
        let head = exchange(a, b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(exchange(a, b"GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        let m = exchange(a, b"PUT /metrics HTTP/1.1\r\n\r\n");
        assert!(
            m.starts_with("HTTP/1.1 405 ") && m.contains("Allow: GET, HEAD\r\n"),
            "{m}"
        );
        assert!(exchange(a, b"\x00\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400 "));
        assert!(exchange(a, &[b'A'; 1000]).starts_with("HTTP/1.1 431 "));
        // A silent client is cut off by the read timeout; a half-sent one too.
        assert!(exchange(a, b"").starts_with("HTTP/1.1 408 "));
        assert!(exchange(a, b"GET /metrics HTTP/1.1\r\n").starts_with("HTTP/1.1 408 "));
        // A client that closes at once does not disturb the next one.
        drop(TcpStream::connect(a).unwrap());
        assert!(exchange(a, b"GET /metrics HTTP/1.0\r\n\r\n").contains("up_total 42"));
        srv.stop();
        assert!(TcpStream::connect(a).is_err());
    }

    #[test]
    fn connections_beyond_the_bound_get_503() {
        let r = Arc::new(Registry::new());
        let opts = HttpOptions {
            max_connections: 2,
            read_timeout: Duration::from_secs(5),
            ..HttpOptions::default()
        };
        let srv = MetricsServer::start("127.0.0.1:0".parse().unwrap(), r, opts).unwrap();
        let a = srv.local_addr();
        // Two idle connections hold both slots.
        let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(a).unwrap()).collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut refused = false;
        while Instant::now() < deadline {
            if exchange(a, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 503 ") {
                refused = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(refused);
        drop(idle);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut served = false;
        while Instant::now() < deadline {
            if exchange(a, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 ") {
                served = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(served);
    }
}
