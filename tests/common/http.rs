//! A tiny HTTP/1.1 file server on a loopback port, for `image_url` fetch tests.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A route: path → (status line, content type, body); a `None` body never answers. For a
/// `3xx` status the second field is the `location` instead of a content type.
pub type Route = (&'static str, &'static str, &'static str, Option<Vec<u8>>);

/// Serves `routes` until the test ends; returns the base URL.
pub async fn serve(routes: Vec<Route>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let routes = routes.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let Some((_, status, ctype, body)) = routes.iter().find(|r| r.0 == path) else {
                    conn.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .ok();
                    return;
                };
                let Some(body) = body else {
                    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                    return;
                };
                let header = if status.starts_with('3') {
                    "location"
                } else {
                    "content-type"
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\n{header}: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                conn.write_all(head.as_bytes()).await.ok();
                conn.write_all(body).await.ok();
            });
        }
    });
    base
}
