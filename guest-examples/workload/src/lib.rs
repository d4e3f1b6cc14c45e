//! A workload written against the proplet's own WIT world (`wit/proplet.wit`): it reads
//! its task context, logs, and reports its result explicitly.
//!
//! It sums its inputs and reports `sum=<n>`. Arguments (the task's `cli_args`) change what
//! it does, for tests: `fail` returns an error, `twice` tries to report a second time,
//! `env` reports the environment it sees, `big` reports a result of 2 MiB, `chatty` logs
//! without end, `trace` reports its trace context, `panic` prints a line and panics,
//! `fetch` GETs the URL of its first input over `wasi:http` (within the task's `http`
//! grant) and reports the status and body, `config` reports the configuration keys it may
//! read (`wasi:config`) with the length of each value, and the value of the key named by
//! its first input, `spans` sums its inputs inside spans of its own (`trace`),
//! `span-flood` opens spans without end, `kv` counts its runs in the bucket named by its
//! first input (`wasi:keyvalue`), `kv-fill` fills that bucket until it is refused, and
//! `kv-open` reports whether that bucket opens.

wit_bindgen::generate!({ path: "../../wit", world: "workload", generate_all });

use exports::propeller::proplet::handler::Guest;
use propeller::proplet::log::{self, Level};
use propeller::proplet::{report, task, trace};

struct Workload;

impl Guest for Workload {
    fn run() -> Result<(), String> {
        let args = task::args();
        let has = |a: &str| args.iter().any(|x| x == a);
        log::write(Level::Info, &format!("task {} ({}) started with {} inputs", task::id(), task::name(), task::inputs().len()));
        if has("fail") {
            return Err("asked to fail".into());
        }
        if has("panic") {
            println!("about to panic");
            panic!("asked to panic with {} inputs", task::inputs().len());
        }
        if has("env") {
            let env: Vec<String> = task::env().into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            return report::text(&env.join(",")).map_err(|e| format!("{e:?}"));
        }
        if has("id") {
            let invocation = task::env().into_iter().find(|(k, _)| k == "PROPLET_INVOCATION_ID").map(|(_, v)| v);
            let text = format!("{} {}", task::id(), invocation.unwrap_or_default());
            return report::text(&text).map_err(|e| format!("{e:?}"));
        }
        if has("trace") {
            log::write(Level::Info, "reporting the trace context");
            return report::text(&task::traceparent().unwrap_or_default()).map_err(|e| format!("{e:?}"));
        }
        if has("chatty") {
            let line = "x".repeat(1024);
            loop {
                log::write(Level::Debug, &line);
            }
        }
        if has("fetch") {
            let url = task::inputs().into_iter().next().ok_or("fetch needs a URL input")?;
            let (status, body) = http::get(&url)?;
            log::write(Level::Info, &format!("GET {url}: {status}"));
            return report::text(&format!("{status} {body}")).map_err(|e| format!("{e:?}"));
        }
        if has("config") {
            let mut all = wasi::config::store::get_all().map_err(|e| format!("{e:?}"))?;
            all.sort();
            let keys: Vec<String> = all.iter().map(|(k, v)| format!("{k}:{}", v.len())).collect();
            let shown = match task::inputs().first() {
                Some(key) => wasi::config::store::get(key).map_err(|e| format!("{e:?}"))?,
                None => None,
            };
            let text = format!("keys={} shown={}", keys.join(","), shown.unwrap_or_default());
            return report::text(&text).map_err(|e| format!("{e:?}"));
        }
        if has("spans") {
            let outer = trace::Span::new("sum inputs");
            outer.set_attribute("inputs", &task::inputs().len().to_string());
            let mut sum: i64 = 0;
            for input in task::inputs() {
                let inner = trace::Span::new("parse input");
                match input.trim().parse::<i64>() {
                    Ok(n) => sum += n,
                    Err(e) => inner.set_error(&format!("{input:?}: {e}")),
                }
            }
            outer.add_event("summed");
            return report::text(&format!("sum={sum}")).map_err(|e| format!("{e:?}"));
        }
        if has("span-flood") {
            for i in 0u64.. {
                let span = trace::Span::new(&"s".repeat(1000));
                span.set_attribute("i", &i.to_string());
            }
        }
        if has("kv") || has("kv-fill") || has("kv-open") {
            let name = task::inputs().into_iter().next().unwrap_or_default();
            return report::text(&keyvalue(&name, has("kv-fill"), has("kv-open"))?).map_err(|e| format!("{e:?}"));
        }
        if has("big") {
            return report::bytes(&vec![7u8; 2 << 20]).map_err(|e| format!("report refused: {e:?}"));
        }
        let mut sum: i64 = 0;
        for input in task::inputs() {
            sum += input.trim().parse::<i64>().map_err(|e| format!("input {input:?} is not a number: {e}"))?;
        }
        report::text(&format!("sum={sum}")).map_err(|e| format!("{e:?}"))?;
        if has("twice") {
            match report::text("again") {
                Err(report::ReportError::AlreadyReported) => log::write(Level::Warn, "a second report was refused"),
                other => return Err(format!("a second report should be refused, got {other:?}")),
            }
        }
        Ok(())
    }
}

export!(Workload);

/// What the `kv` modes report, for the bucket `name`.
fn keyvalue(name: &str, fill: bool, only_open: bool) -> Result<String, String> {
    use wasi::keyvalue::{atomics, batch, store};
    let bucket = match store::open(name) {
        Ok(b) => b,
        Err(e) => return Ok(format!("open failed: {e:?}")),
    };
    if only_open {
        return Ok("opened".into());
    }
    if fill {
        let value = vec![7u8; 1024];
        for i in 0u64.. {
            if let Err(e) = bucket.set(&format!("fill-{i}"), &value) {
                return Ok(format!("stored={i} refused: {e:?}"));
            }
        }
    }
    let runs = atomics::increment(&bucket, "runs", 1).map_err(|e| format!("{e:?}"))?;
    let pairs = [("last".to_owned(), task::id().into_bytes()), ("mode".to_owned(), b"kv".to_vec())];
    batch::set_many(&bucket, &pairs).map_err(|e| format!("{e:?}"))?;
    let last = bucket.get("last").map_err(|e| format!("{e:?}"))?.unwrap_or_default();
    let keys = bucket.list_keys(None).map_err(|e| format!("{e:?}"))?.keys;
    Ok(format!("runs={runs} last={} keys={}", String::from_utf8_lossy(&last), keys.join(",")))
}

/// A GET over `wasi:http/outgoing-handler`.
mod http {
    use std::io::Read as _;

    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{Fields, OutgoingBody, OutgoingRequest, Scheme};

    /// Sends a GET to `url` (`http://` or `https://`), returns the status and body text.
    pub fn get(url: &str) -> Result<(u16, String), String> {
        let (scheme, rest) = url.split_once("://").ok_or("not an absolute URL")?;
        let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
        let request = OutgoingRequest::new(Fields::new());
        let scheme = if scheme == "https" { Scheme::Https } else { Scheme::Http };
        request.set_scheme(Some(&scheme)).map_err(|()| "bad scheme")?;
        request.set_authority(Some(authority)).map_err(|()| "bad authority")?;
        request.set_path_with_query(Some(path)).map_err(|()| "bad path")?;
        let body = request.body().map_err(|()| "no request body")?;
        let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
        OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(e))) => return Err(format!("GET {url} failed: {e:?}")),
            _ => return Err("no response".into()),
        };
        let status = response.status();
        let incoming = response.consume().map_err(|()| "no response body")?;
        let mut text = String::new();
        incoming
            .stream()
            .map_err(|()| "no body stream")?
            .read_to_string(&mut text)
            .map_err(|e| format!("reading the body: {e}"))?;
        Ok((status, text))
    }
}
