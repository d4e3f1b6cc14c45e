//! Outbound HTTP for components (`wasi:http/outgoing-handler`), within the task's grant.
//!
//! Wasmtime's `wasmtime-wasi-http` implements the interfaces; this module is the hook that
//! sends a request. Every request is checked against the task's origins, its host's
//! addresses against the address rules (a name is resolved by the proplet, and only the
//! addresses that passed are connected to, so a name cannot change its answer between the
//! check and the connection), counted against the task's budget, sent without following
//! redirects (a guest that follows one sends a new request, checked again), and traced as
//! a child of the task's `execute` span with its `traceparent` handed on.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use ipnet::IpNet;
use sync_wrapper::SyncWrapper;
use tracing::field::Empty;
use tracing::{Instrument as _, Span, debug};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpHooks};

use crate::sandbox::http::{Exhausted, Refusal, Target, TargetHost, check_resolved};
use crate::sandbox::{HttpBudget, HttpGrant};
use crate::telemetry::{TraceHeaders, trace};

/// What a sent request gives `wasmtime-wasi-http`: the response, and a future of errors
/// after it (none here: reqwest reports them through the body).
type Sent = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

/// The future of a sent request.
type Sending = Box<dyn Future<Output = Sent> + Send>;

/// One HTTP client per set of operator ranges (in practice one per process), shared by
/// all tasks: its connection pool, TLS set-up and resolver.
#[derive(Default)]
pub struct Clients {
    made: Mutex<Vec<(Arc<[IpNet]>, reqwest::Client)>>,
}

impl Clients {
    /// The client whose resolver lets names resolve to `private` ranges besides public
    /// addresses.
    fn get(&self, private: &Arc<[IpNet]>) -> Result<reqwest::Client, Error> {
        let mut made = self
            .made
            .lock()
            .map_err(|_| Error::InternalError(Some("the HTTP client cache is poisoned".into())))?;
        if let Some((_, client)) = made.iter().find(|(p, _)| p == private) {
            return Ok(client.clone());
        }
        crate::crypto::install_default();
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(CheckedResolver {
                private: private.clone(),
            }))
            .build()
            .map_err(|e| Error::InternalError(Some(format!("cannot make an HTTP client: {e}"))))?;
        made.push((private.clone(), client.clone()));
        Ok(client)
    }
}

/// Resolves names, keeping only the addresses the operator's rules allow; a name with none
/// left is refused with the [`Refusal`] of its first address.
struct CheckedResolver {
    private: Arc<[IpNet]>,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let private = self.private.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = |ip: IpAddr| check_resolved(&private, ip).is_ok();
            let kept: Vec<SocketAddr> = found.iter().copied().filter(|a| allowed(a.ip())).collect();
            match (kept.is_empty(), found.first()) {
                (false, _) => Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs),
                (true, Some(first)) => Err(Box::new(Refusal::Address(first.ip())) as _),
                (true, None) => Err(format!("{host} has no address").into()),
            }
        })
    }
}

/// What a component's store holds for `wasi:http`.
pub struct HttpState {
    /// Wasmtime's per-store context (header size limits).
    pub ctx: WasiHttpCtx,
    /// The hook that sends requests.
    pub hooks: Outbound,
}

/// Sends a task's requests within its grant; without a grant, refuses them all.
pub struct Outbound {
    task: Option<Arc<Granted>>,
}

/// A task's grant, budget, client and trace context.
struct Granted {
    grant: HttpGrant,
    budget: Arc<HttpBudget>,
    client: reqwest::Client,
    incoming: TraceHeaders,
}

impl Outbound {
    /// The hook for a task with `grant` (none: every request is refused), counting into
    /// `budget` and handing on `incoming` when traces are not exported.
    pub fn new(
        grant: Option<&HttpGrant>,
        budget: Option<Arc<HttpBudget>>,
        clients: &Clients,
        incoming: TraceHeaders,
    ) -> Result<Outbound, Error> {
        let task = match (grant, budget) {
            (Some(grant), Some(budget)) => Some(Arc::new(Granted {
                client: clients.get(&grant.private)?,
                grant: grant.clone(),
                budget,
                incoming,
            })),
            _ => None,
        };
        Ok(Outbound { task })
    }

    /// Whether the task's HTTP budget ended it.
    pub fn exhausted(&self) -> Option<Exhausted> {
        self.task
            .as_ref()
            .and_then(|t| t.budget.exhausted().cloned())
    }
}

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sending {
        let span = tracing::info_span!(
            "http.request",
            otel.kind = "client",
            http.request.method = %request.method(),
            server.address = request.uri().host().unwrap_or(""),
            server.port = request.uri().port_u16(),
            http.response.status_code = Empty,
            error.type = Empty,
        );
        let Some(task) = self.task.clone() else {
            // Only the host is logged: a query may carry a guest's credentials.
            debug!(
                host = request.uri().host().unwrap_or(""),
                "HTTP request refused: the task was granted no HTTP"
            );
            trace::fail(&span, "denied", "the task was granted no HTTP");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        };
        Box::new(async move { task.send(request).await }.instrument(span))
    }

    fn set_host_header(&mut self) -> bool {
        // reqwest writes the Host header from the URL it connects to.
        false
    }
}

impl Granted {
    async fn send(self: Arc<Self>, request: http::Request<WasiBody>) -> Sent {
        let span = Span::current();
        if let Err((why, error)) = self.admit(request.uri()) {
            debug!(
                host = request.uri().host().unwrap_or(""),
                "HTTP request refused: {why}"
            );
            trace::fail(&span, "denied", &why);
            return Err(error);
        }
        if let Err(e) = self.budget.request() {
            trace::fail(&span, "http_limit", &e.to_string());
            return Err(exhausted(&e));
        }
        // The slot is held until the response's head arrives, not through its body: a guest
        // that reads its responses in another order than they came must not wait on itself.
        let slot =
            self.budget.slots().acquire_owned().await.map_err(|_| {
                Error::InternalError(Some("the task's HTTP slots are closed".into()))
            })?;
        let response = self
            .execute(request, &span)
            .await
            .inspect_err(|error| trace::fail(&span, "http", &error.to_string()))?;
        drop(slot);
        span.record("http.response.status_code", response.status().as_u16());
        let response = response
            .map(|body| Counted::new(body, self.budget.clone(), from_reqwest).boxed_unsync());
        Ok((response, Box::new(async { Ok(()) })))
    }

    /// Checks the URL against the grant, and an IP literal against the address rules (a
    /// name is checked by the resolver).
    fn admit(&self, uri: &http::Uri) -> Result<(), (String, Error)> {
        let target = Target::of(
            uri.scheme_str().unwrap_or(""),
            uri.host().unwrap_or(""),
            uri.port_u16(),
        )
        .ok_or_else(|| (Refusal::Unusable.to_string(), Error::HttpRequestUriInvalid))?;
        self.grant
            .check(&target)
            .map_err(|r| (r.to_string(), Error::HttpRequestDenied))?;
        if let TargetHost::Ip(ip) = target.host {
            self.grant
                .check_address(&target, ip)
                .map_err(|r| (r.to_string(), Error::DestinationIpProhibited))?;
        }
        Ok(())
    }

    /// Sends the request through the shared client, with the trace context added and the
    /// request body counted.
    async fn execute(
        &self,
        request: http::Request<WasiBody>,
        span: &Span,
    ) -> Result<http::Response<reqwest::Body>, Error> {
        let (mut parts, body) = request.into_parts();
        if !parts.headers.contains_key("traceparent") {
            let context = trace::outgoing(span, &self.incoming);
            for (name, value) in [
                ("traceparent", context.traceparent),
                ("tracestate", context.tracestate),
            ] {
                if let Some(value) = value.and_then(|v| http::HeaderValue::from_str(&v).ok()) {
                    parts.headers.insert(name, value);
                }
            }
        }
        let body = Counted::new(
            SyncBody(SyncWrapper::new(body)),
            self.budget.clone(),
            |e: Error| e,
        );
        let request = self
            .client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .timeout(self.grant.limits.timeout)
            .body(reqwest::Body::wrap(body))
            .build()
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| self.sending_error(&e))?;
        Ok(http::Response::from(response))
    }

    /// The `wasi:http` error code of a failed send.
    fn sending_error(&self, e: &reqwest::Error) -> Error {
        if let Some(why) = self.budget.exhausted() {
            return exhausted(why);
        }
        if let Some(Refusal::Address(_)) = find_source::<Refusal>(e) {
            return Error::DestinationIpProhibited;
        }
        if e.is_timeout() {
            Error::ConnectionTimeout
        } else if e.is_connect() {
            match find_source::<std::io::Error>(e).map(std::io::Error::kind) {
                Some(std::io::ErrorKind::ConnectionRefused) => Error::ConnectionRefused,
                _ => Error::DestinationUnavailable,
            }
        } else {
            Error::HttpProtocolError
        }
    }
}

fn exhausted(why: &Exhausted) -> Error {
    Error::InternalError(Some(format!("the task's HTTP budget is exhausted: {why}")))
}

fn from_reqwest(e: reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::ConnectionReadTimeout
    } else {
        Error::HttpProtocolError
    }
}

/// The first error of type `E` in `e`'s chain of sources.
fn find_source<'a, E: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        next = err.source();
    }
    None
}

/// A body whose data frames are counted against the task's HTTP budget; past it, the body
/// fails.
struct Counted<B, F> {
    inner: B,
    budget: Arc<HttpBudget>,
    map_err: F,
}

impl<B, F> Counted<B, F> {
    fn new(inner: B, budget: Arc<HttpBudget>, map_err: F) -> Self {
        Counted {
            inner,
            budget,
            map_err,
        }
    }
}

impl<B, F> Body for Counted<B, F>
where
    B: Body<Data = Bytes> + Unpin,
    F: Fn(B::Error) -> Error + Unpin,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let size = frame.data_ref().map_or(0, Bytes::len);
                Poll::Ready(Some(match this.budget.transfer(size) {
                    Ok(()) => Ok(frame),
                    Err(why) => Err(exhausted(&why)),
                }))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err((this.map_err)(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

impl Body for SyncBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        Pin::new(self.get_mut().0.get_mut()).poll_frame(cx)
    }
}

/// A guest's request body, made `Sync` for the client (it is only ever polled through
/// `&mut`).
struct SyncBody(SyncWrapper<WasiBody>);
