//! A minimal HTTP/1.0 client for the endpoints of the processes the bench
//! starts (admin `/metrics` and `/readyz`, Kafka Connect's REST API,
//! Monstache's `/stats`); one connection per request.

use anyhow::{Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `METHOD http://{addr}{path}` with an optional JSON body: status and body.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    let body = json_body.unwrap_or("");
    let head = if json_body.is_some() {
        format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
    } else {
        format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")
    };
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    Ok(parse_response(&String::from_utf8_lossy(&buf)))
}

/// `GET http://{addr}{path}`: status and body.
pub async fn get(addr: &str, path: &str) -> Result<(u16, String)> {
    request(addr, "GET", path, None).await
}

/// Status and body of a raw HTTP response (status 0 if unreadable).
fn parse_response(text: &str) -> (u16, String) {
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_split_into_status_and_body() {
        assert_eq!(
            parse_response("HTTP/1.1 201 Created\r\nX: y\r\n\r\n{\"a\":1}"),
            (201, "{\"a\":1}".to_string())
        );
        assert_eq!(parse_response("garbage"), (0, String::new()));
    }

    #[tokio::test]
    async fn a_request_carries_its_body() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut buf = vec![0u8; 1024];
            let mut got = String::new();
            while !got.ends_with("{\"x\":1}") {
                let n = s.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                got.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            s.write_all(b"HTTP/1.0 200 OK\r\n\r\nok")
                .await
                .expect("write");
            got
        });
        let (st, body) = request(&addr, "POST", "/c", Some("{\"x\":1}"))
            .await
            .expect("req");
        assert_eq!((st, body.as_str()), (200, "ok"));
        let got = server.await.expect("server");
        assert!(got.starts_with("POST /c HTTP/1.0\r\n"));
        assert!(got.contains("Content-Length: 7\r\n"));
    }
}
