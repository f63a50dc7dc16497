//! The smallest HTTP client a health check needs: a plain-http URL made of
//! an IP address, a port and a path; one `GET` over `std::net::TcpStream`;
//! the status code from the response's status line. No TLS and no name
//! lookup, because the sandbox offers neither; no crate, because a status
//! line is all the check reads.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The most the check reads of a response while looking for the end of its
/// status line. A status line is a few dozen bytes; the bound keeps a server
/// that streams without a line break from growing the guest's memory until
/// the host's memory cap ends the instance.
const MAX_READ_BYTES: usize = 64 * 1024;

/// The port of a URL that names none.
const DEFAULT_PORT: u16 = 80;

/// A URL the check can request: `http://IP[:PORT][/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Where to connect.
    pub address: SocketAddr,
    /// The request target: the path with its query, starting with `/`.
    pub path: String,
}

impl fmt::Display for Url {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "http://{}{}", self.address, self.path)
    }
}

impl Url {
    /// Reads `text`, or says what is wrong with it, for the operator.
    pub fn parse(text: &str) -> Result<Url, String> {
        let text = text.trim();
        let example = "write it as http://IP:PORT/PATH, for example http://127.0.0.1:8080/health";
        let (scheme, rest) = text.split_once("://").unwrap_or(("", text));
        if scheme.eq_ignore_ascii_case("https") {
            return Err(format!("`{text}`: https is not supported, because the sandbox has no TLS; {example}"));
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(format!("`{text}` is not an http:// URL; {example}"));
        }
        // The fragment is never sent to a server.
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, path) = match rest.find(['/', '?']) {
            Some(index) => (&rest[..index], &rest[index..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') { format!("/{path}") } else { path.to_string() };
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("`{text}`: the path holds spaces or control characters; percent-encode them"));
        }
        if authority.contains('@') {
            return Err(format!("`{text}`: credentials in the URL are not supported; {example}"));
        }
        let address = authority
            .parse::<SocketAddr>()
            .ok()
            .or_else(|| {
                let bare = authority.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(authority);
                bare.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, DEFAULT_PORT))
            })
            .ok_or_else(|| {
                format!(
                    "`{authority}` is not an IP address with an optional port: host names are not supported, \
                     because the sandbox cannot look names up; {example}"
                )
            })?;
        Ok(Url { address, path })
    }
}

/// Requests `url` and returns the response's status code, or what went
/// wrong. The whole exchange (connect, write, read) ends within `timeout`.
pub fn get_status(url: &Url, timeout: Duration) -> std::io::Result<u16> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&url.address, timeout)?;
    // A refused connect can come back as success on wasm32-wasip2; the peer
    // address tells a real connection from a refused one.
    stream.peer_addr()?;
    stream.set_write_timeout(Some(remaining(deadline, timeout)?))?;
    // HTTP/1.0 and `Connection: close`: no keep-alive or chunked encoding
    // to deal with, and the server closes when it is done.
    let request = format!("GET {} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n", url.path, url.address);
    stream.write_all(request.as_bytes())?;

    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = received.iter().position(|&byte| byte == b'\n') {
            return parse_status_line(&received[..end]).map_err(|why| std::io::Error::new(ErrorKind::InvalidData, why));
        }
        if received.len() >= MAX_READ_BYTES {
            let why = format!("no status line in the first {MAX_READ_BYTES} bytes of the response");
            return Err(std::io::Error::new(ErrorKind::InvalidData, why));
        }
        // A read timeout per read would let a server that drips one byte at
        // a time stretch the check without bound; each read gets what is
        // left of the whole.
        stream.set_read_timeout(Some(remaining(deadline, timeout)?))?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                let why = "the server closed the connection before sending a status line";
                return Err(std::io::Error::new(ErrorKind::UnexpectedEof, why));
            }
            Ok(count) => received.extend_from_slice(&chunk[..count.min(MAX_READ_BYTES - received.len())]),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            // WASI reports a read timeout as "would block"; say what it means.
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let why = format!("no status line within {} ms", timeout.as_millis());
                return Err(std::io::Error::new(ErrorKind::TimedOut, why));
            }
            Err(error) => return Err(error),
        }
    }
}

/// The time left before `deadline`, or a timeout error once it has passed
/// (the socket timeouts refuse a zero duration).
fn remaining(deadline: Instant, timeout: Duration) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        let why = format!("no answer within {} ms", timeout.as_millis());
        return Err(std::io::Error::new(ErrorKind::TimedOut, why));
    }
    Ok(left)
}

/// Reads the status code from a status line such as `HTTP/1.1 200 OK`
/// (with or without its trailing `\r`).
pub fn parse_status_line(line: &[u8]) -> Result<u16, String> {
    let shown = || String::from_utf8_lossy(line).trim_end().chars().take(80).collect::<String>();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let malformed = || format!("`{}` is not an HTTP/1.x status line", shown());
    let rest = line.strip_prefix(b"HTTP/1.").ok_or_else(malformed)?;
    // One minor version digit, a space, three digits, then the end or a space.
    match rest {
        [minor, b' ', code @ ..] if minor.is_ascii_digit() && code.len() >= 3 => {
            let (digits, tail) = code.split_at(3);
            if !digits.iter().all(u8::is_ascii_digit) || !(tail.is_empty() || tail[0] == b' ') {
                return Err(malformed());
            }
            let status = digits.iter().fold(0u16, |status, digit| status * 10 + u16::from(digit - b'0'));
            if status < 100 {
                return Err(malformed());
            }
            Ok(status)
        }
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r"), Ok(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503 Service Unavailable"), Ok(503));
        assert_eq!(parse_status_line(b"HTTP/1.1 204"), Ok(204));
        for bad in
            [&b"HTTP/2 200 OK"[..], b"HTTP/1.1 20 OK", b"HTTP/1.1 2000", b"HTTP/1.1 abc", b"SSH-2.0-OpenSSH", b""]
        {
            let error = parse_status_line(bad).expect_err("malformed");
            assert!(error.contains("not an HTTP/1.x status line"), "{error}");
        }
    }

    #[test]
    fn reads_plain_http_urls_of_ip_addresses() {
        let url = Url::parse("http://127.0.0.1:8080/health?deep=1").expect("valid");
        assert_eq!(url.address, "127.0.0.1:8080".parse().expect("address"));
        assert_eq!(url.path, "/health?deep=1");
        assert_eq!(url.to_string(), "http://127.0.0.1:8080/health?deep=1");
        assert_eq!(Url::parse("http://10.0.0.1").expect("valid").to_string(), "http://10.0.0.1:80/");
        assert_eq!(Url::parse("http://[::1]:81/x#top").expect("valid").to_string(), "http://[::1]:81/x");
        assert_eq!(Url::parse("http://[::1]").expect("valid").address.port(), 80);
    }

    #[test]
    fn explains_what_is_not_supported() {
        assert!(Url::parse("https://127.0.0.1/").expect_err("tls").contains("no TLS"));
        assert!(Url::parse("http://example.com/").expect_err("name").contains("cannot look names up"));
        assert!(Url::parse("ftp://127.0.0.1/").expect_err("scheme").contains("not an http:// URL"));
        assert!(Url::parse("http://127.0.0.1:99999/").is_err());
        assert!(Url::parse("http://127.0.0.1/a b").expect_err("space").contains("percent-encode"));
        // Text a guest gets wrong must not panic on a char boundary.
        assert!(Url::parse("héllo://ünïcode/").is_err() && Url::parse("http://ü").is_err());
    }
}
