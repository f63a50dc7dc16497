//! `notepad`: the demo's "highly available notepad", a tiny HTTP server that
//! keeps one note in a file. Steward runs it as a `generic-app` resource and
//! watches it with `tcp-check` or `http-check`; moving the group moves the
//! note's service, and the file is the state that has to follow.
//!
//! ```text
//! notepad --listen 127.0.0.1:8080 --note /var/lib/notepad/note.txt
//! GET /         200, the note's text (empty while there is no note)
//! PUT|POST /    replaces the note with the request's body, 204
//! GET /health   200 "ok"
//! ```
//!
//! Only std: one thread per connection, HTTP/1.x with `Content-Length`
//! bodies, one request per connection. Every request is bounded and a
//! malformed one gets a 4xx answer, never a panic. SIGTERM ends the process
//! by the default disposition: a write in progress leaves at most a stale
//! `FILE.tmp`, since the note is replaced by rename.

use std::ffi::OsString;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The most a request's line and headers may take; real clients send a few
/// hundred bytes, and the bound keeps a misbehaving one from growing memory.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The largest note accepted: a note, not a file store.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long a connection may stay silent before it is dropped, so idle or
/// stalled clients (a `tcp-check` probe sends nothing) do not pin threads.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

const USAGE: &str = "usage: notepad --listen IP:PORT --note FILE";

/// What the server shares between connections.
struct Notepad {
    note: PathBuf,
    /// Serializes writers, which share `FILE.tmp`; readers need no lock,
    /// since the rename replaces the note in one step.
    write_lock: Mutex<()>,
}

/// A request as far as this server reads it.
#[derive(Debug, PartialEq)]
struct Head {
    method: String,
    path: String,
    content_length: Option<usize>,
    expects_continue: bool,
}

/// An answer: status, reason phrase, body (always text).
struct Response {
    status: u16,
    reason: &'static str,
    body: Vec<u8>,
    allow: Option<&'static str>,
}

impl Response {
    fn new(status: u16, reason: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, reason, body: body.into(), allow: None }
    }

    fn error(status: u16, reason: &'static str, why: &str) -> Response {
        Response::new(status, reason, format!("{why}\n"))
    }
}

fn main() -> ExitCode {
    let (listen, note) = match parse_args(std::env::args_os().skip(1)) {
        Ok(parsed) => parsed,
        Err(why) => {
            say(format_args!("notepad: {why}\n{USAGE}"));
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(listen) {
        Ok(listener) => listener,
        Err(error) => {
            say(format_args!("notepad: cannot listen on {listen}: {error}"));
            return ExitCode::FAILURE;
        }
    };
    // The bound address, so that port 0 shows the port the system chose.
    let bound = listener.local_addr().unwrap_or(listen);
    say(format_args!("notepad listening on {bound}, note {}", note.display()));
    let notepad = Arc::new(Notepad { note, write_lock: Mutex::new(()) });
    for connection in listener.incoming() {
        match connection {
            Ok(stream) => {
                let notepad = notepad.clone();
                std::thread::spawn(move || serve(stream, &notepad));
            }
            Err(error) => {
                // Running out of file descriptors repeats at once; pausing
                // keeps this loop from spinning until some close.
                say(format_args!("notepad: accept failed: {error}"));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    ExitCode::SUCCESS
}

/// Writes one line to stderr. Unlike `eprintln!`, it does not panic when
/// stderr is closed: a supervisor that stopped reading must not stop the server.
fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Reads `--listen IP:PORT --note FILE`, in either order, each once.
fn parse_args(args: impl Iterator<Item = OsString>) -> Result<(SocketAddr, PathBuf), String> {
    let mut args = args;
    let (mut listen, mut note) = (None, None);
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else {
            return Err(format!("{} needs a value", flag.to_string_lossy()));
        };
        match flag.to_str() {
            Some("--listen") if listen.is_none() => {
                let text = value.to_string_lossy();
                let address = text.parse::<SocketAddr>().map_err(|_| format!("--listen `{text}` is not an IP:PORT"))?;
                listen = Some(address);
            }
            Some("--note") if note.is_none() && !value.is_empty() => note = Some(PathBuf::from(value)),
            _ => return Err(format!("unexpected argument `{}`", flag.to_string_lossy())),
        }
    }
    match (listen, note) {
        (Some(listen), Some(note)) => Ok((listen, note)),
        _ => Err("both --listen and --note are required".to_string()),
    }
}

/// Answers one request on `stream`, then closes it. I/O errors end the
/// connection quietly: the client has gone, there is no one to tell.
fn serve(mut stream: TcpStream, notepad: &Notepad) {
    if stream.set_read_timeout(Some(IDLE_TIMEOUT)).and_then(|()| stream.set_write_timeout(Some(IDLE_TIMEOUT))).is_err()
    {
        return;
    }
    let response = match read_request(&mut stream) {
        Ok(Some((head, body))) => route(notepad, &head, &body),
        // Connected and closed without a byte: a TCP probe, not a request.
        Ok(None) => return,
        Err(response) => response,
    };
    let _ = write_response(&mut stream, &response);
}

/// Reads a request's head and body, `None` when the client sent nothing,
/// or the error answer to send.
fn read_request(stream: &mut TcpStream) -> Result<Option<(Head, Vec<u8>)>, Response> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        // Memory stays within one chunk of the bound: checked after each read.
        let end = find_head_end(&received);
        if end.as_ref().map_or(received.len(), |end| end.head) > MAX_HEAD_BYTES {
            let why = format!("the request line and headers exceed {MAX_HEAD_BYTES} bytes");
            return Err(Response::error(431, "Request Header Fields Too Large", &why));
        }
        if let Some(end) = end {
            break end;
        }
        match stream.read(&mut chunk) {
            Ok(0) if received.is_empty() => return Ok(None),
            Ok(0) => return Err(Response::error(400, "Bad Request", "the request ended inside its headers")),
            Ok(count) => received.extend_from_slice(&chunk[..count]),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) if received.is_empty() => return Ok(None),
            Err(_) => return Err(Response::error(408, "Request Timeout", "the request did not arrive in time")),
        }
    };
    let head = parse_head(&received[..head_end.head]).map_err(|why| Response::error(400, "Bad Request", &why))?;
    if matches!(head.method.as_str(), "PUT" | "POST") && head.content_length.is_none() {
        return Err(Response::error(411, "Length Required", "send the new note with a Content-Length"));
    }
    let length = head.content_length.unwrap_or(0);
    if length > MAX_BODY_BYTES {
        let why = format!("the body is {length} bytes; a note holds at most {MAX_BODY_BYTES}");
        return Err(Response::error(413, "Content Too Large", &why));
    }
    if head.expects_continue && length > 0 {
        // curl waits a second for this before sending a body of over 1 KiB.
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(|_| Response::error(400, "Bad Request", "the connection failed"))?;
    }
    let mut body = received.split_off(head_end.body);
    if body.len() > length {
        return Err(Response::error(400, "Bad Request", "more bytes than Content-Length says"));
    }
    let missing = length - body.len();
    let read = Read::take(&mut *stream, missing as u64).read_to_end(&mut body);
    if read.is_err() || body.len() != length {
        return Err(Response::error(400, "Bad Request", "the body is shorter than Content-Length says"));
    }
    Ok(Some((head, body)))
}

/// Where the head ends: the blank line after the headers.
struct HeadEnd {
    /// The head's length, up to the blank line.
    head: usize,
    /// Where the body starts, after the blank line.
    body: usize,
}

/// Finds the blank line ending the head; a bare `\n` is accepted as a line
/// end, as HTTP allows, so that hand-typed requests (`nc`) work too.
fn find_head_end(bytes: &[u8]) -> Option<HeadEnd> {
    let newline = bytes.iter().enumerate().filter(|(_, byte)| **byte == b'\n').map(|(index, _)| index);
    for index in newline {
        let after = &bytes[index + 1..];
        if after.starts_with(b"\r\n") {
            return Some(HeadEnd { head: index + 1, body: index + 3 });
        }
        if after.starts_with(b"\n") {
            return Some(HeadEnd { head: index + 1, body: index + 2 });
        }
    }
    None
}

/// Reads the request line and the headers this server cares about.
fn parse_head(bytes: &[u8]) -> Result<Head, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the request head is not UTF-8".to_string())?;
    let mut lines = text.split('\n').map(|line| line.strip_suffix('\r').unwrap_or(line));
    let request_line = lines.next().unwrap_or_default();
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(format!("`{request_line}` is not a request line such as `GET / HTTP/1.1`"));
    };
    if method.is_empty() || !method.bytes().all(|byte| byte.is_ascii_uppercase()) {
        return Err(format!("`{method}` is not a method"));
    }
    if !target.starts_with('/') {
        return Err(format!("`{target}` is not a path"));
    }
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(format!("`{version}` is not HTTP/1.0 or HTTP/1.1"));
    }
    let mut head = Head {
        method: method.to_string(),
        // The query string means nothing here.
        path: target.split('?').next().unwrap_or(target).to_string(),
        content_length: None,
        expects_continue: false,
    };
    for line in lines.filter(|line| !line.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("`{line}` is not a header"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length = value.parse::<usize>().map_err(|_| format!("Content-Length `{value}` is not a number"))?;
            // Two differing lengths are a request-smuggling attempt or a bug.
            if head.content_length.is_some_and(|earlier| earlier != length) {
                return Err("conflicting Content-Length headers".to_string());
            }
            head.content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("Transfer-Encoding is not supported; send the body with Content-Length".to_string());
        } else if name.eq_ignore_ascii_case("expect") {
            head.expects_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    Ok(head)
}

fn route(notepad: &Notepad, head: &Head, body: &[u8]) -> Response {
    match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/") => match read_note(&notepad.note) {
            Ok(text) => Response::new(200, "OK", text),
            Err(error) => {
                say(format_args!("notepad: cannot read {}: {error}", notepad.note.display()));
                Response::error(500, "Internal Server Error", "the note cannot be read")
            }
        },
        ("PUT" | "POST", "/") => match write_note(notepad, body) {
            Ok(()) => Response::new(204, "No Content", Vec::new()),
            Err(error) => {
                say(format_args!("notepad: cannot write {}: {error}", notepad.note.display()));
                Response::error(500, "Internal Server Error", "the note cannot be written")
            }
        },
        ("GET", "/health") => Response::new(200, "OK", "ok\n"),
        (_, "/") => {
            Response { allow: Some("GET, PUT, POST"), ..Response::error(405, "Method Not Allowed", "use GET or PUT") }
        }
        (_, "/health") => Response { allow: Some("GET"), ..Response::error(405, "Method Not Allowed", "use GET") },
        _ => Response::error(404, "Not Found", "there is only / and /health"),
    }
}

/// The note's bytes; no file yet means an empty note.
fn read_note(note: &Path) -> std::io::Result<Vec<u8>> {
    match std::fs::read(note) {
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        other => other,
    }
}

/// Replaces the note: write a temporary file, flush it to disk, rename it
/// over the note. A reader or a crash sees the old note or the new, whole.
fn write_note(notepad: &Notepad, body: &[u8]) -> std::io::Result<()> {
    // A writer that panicked left no state behind the lock worth refusing.
    let _writing = notepad.write_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut temporary = notepad.note.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(body)?;
    file.sync_all()?;
    std::fs::rename(&temporary, &notepad.note)
}

fn write_response(stream: &mut TcpStream, response: &Response) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\nConnection: close\r\n", response.status, response.reason);
    if let Some(allow) = response.allow {
        head.push_str(&format!("Allow: {allow}\r\n"));
    }
    // A 204 carries no body and so no length.
    if response.status != 204 {
        head.push_str(&format!(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
            response.body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(&response.body)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(items: &[&str]) -> impl Iterator<Item = OsString> {
        items.iter().map(OsString::from).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn reads_both_flags_in_either_order() {
        let parsed = parse_args(args(&["--note", "/tmp/n", "--listen", "127.0.0.1:8080"])).expect("valid");
        assert_eq!(parsed, ("127.0.0.1:8080".parse().expect("address"), PathBuf::from("/tmp/n")));
        for bad in [&["--listen", "127.0.0.1:8080"][..], &["--listen", "localhost:80", "--note", "n"], &["--note"]] {
            assert!(parse_args(args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reads_a_request_head() {
        let bytes = b"PUT /?x=1 HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\nExpect: 100-continue\r\n\r\nhello";
        let end = find_head_end(bytes).expect("complete head");
        assert_eq!(&bytes[end.body..], b"hello");
        let head = parse_head(&bytes[..end.head]).expect("valid");
        assert_eq!(
            head,
            Head { method: "PUT".into(), path: "/".into(), content_length: Some(5), expects_continue: true }
        );
        assert_eq!(find_head_end(b"GET / HTTP/1.0\n\n").map(|end| end.body), Some(16));
    }

    #[test]
    fn refuses_malformed_heads() {
        for bad in [
            &b"GET /\r\n"[..],
            b"get / HTTP/1.1\r\n",
            b"GET / HTTP/2\r\n",
            b"GET x HTTP/1.1\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: -1\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n",
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n",
            b"GET / HTTP/1.1\r\nX: \xff\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
