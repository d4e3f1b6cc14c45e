//! A command that sends HTTP requests through `wasi:http/outgoing-handler`, for the
//! proplet's tests of the HTTP capability and as an example of calling a service.
//!
//! Arguments (the task's `cli_args`):
//! - `get URL`: one GET; prints `status=<code> body=<text>`.
//! - `follow URL`: GET, following up to five redirects itself (each one a new request the
//!   proplet checks); prints the last status and body.
//! - `flood URL N`: N GETs at once, read last to first; prints `ok=<n> failed=<n>
//!   first=<error>`.
//! - `post URL BYTES`: a POST with a body of BYTES bytes; prints the status and body.
//!
//! A refused or failed request prints `error=<code>`; the command still exits 0.

use std::io::Read as _;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingResponse, Method, OutgoingBody,
    OutgoingRequest, Scheme,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let line = match arg(0) {
        "get" => describe(get(arg(1))),
        "follow" => follow(arg(1)),
        "flood" => flood(arg(1), arg(2).parse().unwrap_or(1)),
        "post" => describe(post(arg(1), arg(2).parse().unwrap_or(0))),
        other => format!("unknown command {other:?}"),
    };
    println!("{line}");
}

/// What a finished request gave: status, `Location` header and body text.
struct Reply {
    status: u16,
    location: Option<String>,
    body: String,
}

fn describe(reply: Result<Reply, String>) -> String {
    match reply {
        Ok(r) => format!("status={} body={}", r.status, r.body),
        Err(e) => format!("error={e}"),
    }
}

fn get(url: &str) -> Result<Reply, String> {
    let pending = send(url, Method::Get, None)?;
    receive(pending)
}

fn post(url: &str, size: usize) -> Result<Reply, String> {
    let pending = send(url, Method::Post, Some(vec![b'x'; size]))?;
    receive(pending)
}

fn follow(url: &str) -> String {
    let mut url = url.to_owned();
    for _ in 0..5 {
        match get(&url) {
            Ok(Reply { status, location: Some(next), .. }) if (300..400).contains(&status) => url = next,
            other => return describe(other),
        }
    }
    "error=too many redirects".into()
}

fn flood(url: &str, n: usize) -> String {
    let pending: Vec<_> = (0..n).map(|_| send(url, Method::Get, None)).collect();
    let (mut ok, mut failed, mut first) = (0, 0, None);
    for p in pending.into_iter().rev() {
        match p.and_then(receive) {
            Ok(_) => ok += 1,
            Err(e) => {
                failed += 1;
                first.get_or_insert(e);
            }
        }
    }
    format!("ok={ok} failed={failed} first={}", first.unwrap_or_default())
}

/// Starts a request to `url` (`scheme://authority/path?query`).
fn send(url: &str, method: Method, body: Option<Vec<u8>>) -> Result<FutureIncomingResponse, String> {
    let (scheme, rest) = url.split_once("://").ok_or("not an absolute URL")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };
    request.set_method(&method).map_err(|()| "bad method")?;
    request.set_scheme(Some(&scheme)).map_err(|()| "bad scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "bad authority")?;
    request.set_path_with_query(Some(path)).map_err(|()| "bad path")?;
    let outgoing = request.body().map_err(|()| "no body")?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| code(&e))?;
    if let Some(bytes) = body {
        let stream = outgoing.write().map_err(|()| "no body stream")?;
        for chunk in bytes.chunks(4096) {
            if let Err(e) = stream.blocking_write_and_flush(chunk) {
                return Err(format!("body write failed: {e:?}"));
            }
        }
        drop(stream);
    }
    OutgoingBody::finish(outgoing, None).map_err(|e| code(&e))?;
    Ok(pending)
}

/// Waits for a response and reads its body.
fn receive(pending: FutureIncomingResponse) -> Result<Reply, String> {
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(code(&e)),
        Some(Err(())) | None => return Err("the response was already taken".into()),
    };
    read(response)
}

fn read(response: IncomingResponse) -> Result<Reply, String> {
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let body = response.consume().map_err(|()| "no body")?;
    let mut stream = body.stream().map_err(|()| "no body stream")?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).map_err(|e| format!("body read failed: {e}"))?;
    Ok(Reply {
        status,
        location,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// The error code's name, as the WIT spells it.
fn code(e: &ErrorCode) -> String {
    match e {
        ErrorCode::HttpRequestDenied => "http-request-denied".into(),
        ErrorCode::DestinationIpProhibited => "destination-ip-prohibited".into(),
        ErrorCode::ConnectionTimeout => "connection-timeout".into(),
        ErrorCode::ConnectionRefused => "connection-refused".into(),
        ErrorCode::HttpRequestUriInvalid => "http-request-uri-invalid".into(),
        ErrorCode::InternalError(Some(m)) => format!("internal-error({m})"),
        other => format!("{other:?}"),
    }
}
