//! A minimal HTTP/1.1 client over [`tokio::net::TcpStream`], enough to exercise the service
//! from tests and the self-test without a client crate: one `GET` per connection
//! (`Connection: close`), the whole response read to the end.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The status code, e.g. `200`.
    pub status: u16,
    /// The headers, names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

impl Reply {
    /// The first header named `name` (case-insensitive).
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local_axum_example::client::Reply;
    ///
    /// let reply = Reply { status: 200, headers: vec![("x-a".into(), "1".into())], body: String::new() };
    /// assert_eq!(reply.header("X-A"), Some("1"));
    /// assert_eq!(reply.header("x-b"), None);
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` from the server at `addr`, with extra `headers`.
///
/// # Errors
///
/// Connection and I/O errors, and a response that is not HTTP/1.x with a status line, a
/// header block and (when it says so) a body of its `content-length`.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> io::Result<Reply> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    request.push_str("\r\n");

    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse(&raw)
}

fn parse(raw: &[u8]) -> io::Result<Reply> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let text = std::str::from_utf8(raw).map_err(|_| bad("response is not UTF-8"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    if !status_line.starts_with("HTTP/1.") {
        return Err(bad("not an HTTP/1.x status line"));
    }
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status code"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let reply = Reply {
        status,
        headers,
        body: body.to_string(),
    };
    if let Some(length) = reply.header("content-length") {
        if length.parse::<usize>().ok() != Some(reply.body.len()) {
            return Err(bad("body length differs from content-length"));
        }
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_a_response() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b c\r\n\r\nhi";
        let reply = parse(raw).unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-a"), Some("b c"));
        assert_eq!(reply.body, "hi");
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi").is_err());
        assert!(parse(b"garbage").is_err());
    }
}
