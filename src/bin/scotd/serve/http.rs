//! Just enough HTTP/1.1 for an OpenAI-compatible API: one request per connection
//! (`Connection: close`), a body only by `Content-Length` and bounded, JSON responses, and
//! server-sent events flushed as they are written. Every malformed or oversized request
//! becomes an [`HttpError`] with its status, never a panic.

use std::io::{Read, Write};
use std::net::TcpStream;

/// Bytes of the request line and headers at most.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

pub struct Request {
    pub method: String,
    /// The path without its query string.
    pub path: String,
    pub body: Vec<u8>,
}

/// A request refused before it reached the API, with its HTTP status.
#[derive(Debug)]
pub struct HttpError {
    pub status: u16,
    pub message: String,
}

fn refuse(status: u16, message: impl Into<String>) -> HttpError {
    HttpError {
        status,
        message: message.into(),
    }
}

/// Reads one request from `stream`: its head (at most 64 KiB), then a body of
/// `Content-Length` bytes, at most `max_body`.
pub fn read_request(stream: &mut TcpStream, max_body: usize) -> Result<Request, HttpError> {
    let mut buf = Vec::with_capacity(4096);
    let head_len = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return Err(refuse(431, "the request head is over 64 KiB"));
        }
        let mut chunk = [0u8; 4096];
        let n = stream
            .read(&mut chunk)
            .map_err(|e| refuse(408, format!("reading the request: {e}")))?;
        if n == 0 {
            return Err(refuse(
                400,
                "the connection closed before the request ended",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(refuse(400, "incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(431, format!("more than {MAX_HEADERS} headers")))
        }
        Err(e) => return Err(refuse(400, format!("malformed HTTP request: {e}"))),
    }
    let method = parsed.method.unwrap_or_default().to_string();
    let target = parsed.path.unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default().to_string();
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    if header("transfer-encoding").is_some() {
        return Err(refuse(
            411,
            "chunked request bodies are not supported: send a Content-Length",
        ));
    }
    let length = match header("content-length") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| refuse(400, format!("Content-Length {v:?} is not a byte count")))?,
    };
    if length > max_body {
        return Err(refuse(
            413,
            format!("the request body of {length} bytes is over the limit of {max_body}"),
        ));
    }
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let mut body = buf[head_len..].to_vec();
    body.truncate(length);
    let mut rest = vec![0u8; length - body.len()];
    stream
        .read_exact(&mut rest)
        .map_err(|e| refuse(400, format!("reading the {length}-byte body: {e}")))?;
    body.extend_from_slice(&rest);
    Ok(Request { method, path, body })
}

/// After refusing a request whose body was not read: stops writing and reads what the
/// client still sends (at most 16 MiB, for 2 seconds), so closing does not reset the
/// connection before the client has read the answer.
pub fn discard_unread(stream: &mut TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    let mut rest = stream.take(16 << 20);
    let _ = std::io::copy(&mut rest, &mut std::io::sink());
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// Writes a whole JSON response.
pub fn write_json(stream: &mut impl Write, status: u16, body: &serde_json::Value) {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    // The client may have gone; there is no one left to tell.
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .and_then(|()| stream.flush());
}

/// A response of server-sent events: the body ends when the connection closes.
pub struct EventStream<'a, W: Write> {
    stream: &'a mut W,
}

impl<'a, W: Write> EventStream<'a, W> {
    pub fn start(stream: &'a mut W) -> std::io::Result<Self> {
        stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        )?;
        stream.flush()?;
        Ok(EventStream { stream })
    }

    /// Sends one `data:` event now; an error when the client has gone.
    pub fn send(&mut self, data: &str) -> std::io::Result<()> {
        write!(self.stream, "data: {data}\n\n")?;
        self.stream.flush()
    }
}
