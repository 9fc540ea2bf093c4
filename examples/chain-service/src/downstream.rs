//! The call to the next link of the chain: a minimal HTTP/1.1 client.
//!
//! One connection per call, `connection: close`, the answer read to its end (a `content-length`
//! body, a chunked one, or one delimited by the close). That is all a demo chain needs, on tokio
//! alone. Only `http://host:port[/prefix]` URLs are accepted.

use std::fmt;
use std::io;
use std::time::Duration;

use axum::http::StatusCode;
use tokio::net::TcpStream;

/// The largest answer read from a downstream, head and body together.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The next link: where it is and how long a call may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downstream {
    url: String,
    host: String,
    port: u16,
    prefix: String,
    timeout: Duration,
}

/// A downstream's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: StatusCode,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// Why a call got no answer.
#[derive(Debug)]
pub enum CallError {
    /// The connection could not be opened.
    Connect(io::Error),
    /// Writing the request or reading the answer failed.
    Io(io::Error),
    /// No complete answer within the timeout.
    Timeout(Duration),
    /// The bytes read are not an HTTP/1.x answer, or are too long.
    Malformed(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Connect(e) => write!(f, "cannot connect: {e}"),
            CallError::Io(e) => write!(f, "connection failed: {e}"),
            CallError::Timeout(t) => write!(f, "no answer within {} ms", t.as_millis()),
            CallError::Malformed(why) => write!(f, "malformed answer: {why}"),
        }
    }
}

impl std::error::Error for CallError {}

impl Downstream {
    /// Parses `http://host:port[/prefix]`; the port defaults to 80.
    pub fn parse(url: &str, timeout: Duration) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| "only http:// URLs are supported".to_owned())?;
        let (authority, prefix) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("invalid port {port:?}"))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty() || host.contains(['[', ']', '@']) {
            return Err(format!("unsupported host {host:?}"));
        }
        Ok(Downstream {
            url: url.to_owned(),
            host: host.to_owned(),
            port,
            prefix: prefix.trim_end_matches('/').to_owned(),
            timeout,
        })
    }

    /// The URL this downstream was parsed from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `POST <prefix><path>` with a JSON `body` and reads the answer.
    pub async fn post(&self, path: &str, body: &[u8]) -> Result<Answer, CallError> {
        tokio::time::timeout(self.timeout, self.exchange(path, body))
            .await
            .unwrap_or(Err(CallError::Timeout(self.timeout)))
    }

    async fn exchange(&self, path: &str, body: &[u8]) -> Result<Answer, CallError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(CallError::Connect)?;
        let mut request = format!(
            "POST {}{path} HTTP/1.1\r\nhost: {}:{}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            self.prefix,
            self.host,
            self.port,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        write_all(&stream, &request).await.map_err(CallError::Io)?;
        let raw = read_to_end(&stream).await?;
        parse_answer(&raw)
    }
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn read_to_end(stream: &TcpStream) -> Result<Vec<u8>, CallError> {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        stream.readable().await.map_err(CallError::Io)?;
        match stream.try_read(&mut chunk) {
            Ok(0) => return Ok(raw),
            Ok(n) => {
                raw.extend_from_slice(&chunk[..n]);
                if raw.len() > MAX_ANSWER_BYTES {
                    return Err(CallError::Malformed(format!(
                        "longer than {MAX_ANSWER_BYTES} bytes"
                    )));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(CallError::Io(e)),
        }
    }
}

/// Parses a complete HTTP/1.x answer read up to the closed connection.
pub fn parse_answer(raw: &[u8]) -> Result<Answer, CallError> {
    let malformed = |why: &str| CallError::Malformed(why.to_owned());
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| malformed("no end of head"))?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| malformed("head is not utf-8"))?;
    let rest = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(malformed("no status line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(malformed("not HTTP/1.x"));
    }
    let status = code
        .parse::<u16>()
        .ok()
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| malformed("invalid status code"))?;

    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| malformed("invalid content-length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(length) = content_length {
        rest.get(..length)
            .ok_or_else(|| malformed("body shorter than content-length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Answer { status, body })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, CallError> {
    let malformed = |why: &str| CallError::Malformed(why.to_owned());
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| malformed("unterminated chunk size"))?;
        let size_text = std::str::from_utf8(&rest[..line_end])
            .map_err(|_| malformed("chunk size is not utf-8"))?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| malformed("invalid chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest
            .get(..size)
            .ok_or_else(|| malformed("truncated chunk"))?;
        body.extend_from_slice(chunk);
        rest = rest
            .get(size + 2..)
            .ok_or_else(|| malformed("truncated chunk"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn parses_urls() {
        let d = Downstream::parse("http://127.0.0.1:8082", T).unwrap();
        assert_eq!(
            (d.host.as_str(), d.port, d.prefix.as_str()),
            ("127.0.0.1", 8082, "")
        );
        let d = Downstream::parse("http://payment/api/", T).unwrap();
        assert_eq!(
            (d.host.as_str(), d.port, d.prefix.as_str()),
            ("payment", 80, "/api")
        );
        assert!(Downstream::parse("https://payment", T).is_err());
        assert!(Downstream::parse("http://:80", T).is_err());
        assert!(Downstream::parse("http://host:port", T).is_err());
        assert!(Downstream::parse("http://[::1]:80", T).is_err());
    }

    #[test]
    fn parses_answers() {
        let a = parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA").unwrap();
        assert_eq!((a.status, a.body.as_slice()), (StatusCode::OK, &b"ok"[..]));
        let a = parse_answer(
            b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n\
              3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(a.body, b"abcde");
        let a = parse_answer(b"HTTP/1.0 404 Not Found\r\n\r\nuntil close").unwrap();
        assert_eq!(
            (a.status, a.body.as_slice()),
            (StatusCode::NOT_FOUND, &b"until close"[..])
        );
        for bad in [
            &b"garbage"[..],
            b"SSH-2.0 200\r\n\r\n",
            b"HTTP/1.1 abc\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nz\r\n",
        ] {
            assert!(
                parse_answer(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
