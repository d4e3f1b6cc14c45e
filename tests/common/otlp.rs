//! An OTLP trace receiver inside the test suite: it decodes the real OTLP protobuf the
//! worker exports, over http/protobuf (`POST /v1/traces`) or gRPC.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

/// One received span with the attributes of its resource.
#[derive(Debug, Clone)]
pub struct Received {
    pub resource: Vec<KeyValue>,
    pub span: Span,
}

impl Received {
    pub fn name(&self) -> &str {
        &self.span.name
    }

    /// A span attribute as text (strings, ints and bools).
    pub fn attr(&self, key: &str) -> Option<String> {
        text_of(&self.span.attributes, key)
    }

    /// A resource attribute as text.
    pub fn resource_attr(&self, key: &str) -> Option<String> {
        text_of(&self.resource, key)
    }

    pub fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex::encode(&self.span.span_id)
    }

    pub fn parent_id(&self) -> String {
        hex::encode(&self.span.parent_span_id)
    }
}

fn text_of(attrs: &[KeyValue], key: &str) -> Option<String> {
    let value = attrs
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

type Store = Arc<Mutex<Vec<Received>>>;

fn collect(store: &Store, request: ExportTraceServiceRequest) {
    let mut spans = store.lock().expect("lock");
    for rs in request.resource_spans {
        let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                spans.push(Received {
                    resource: resource.clone(),
                    span,
                });
            }
        }
    }
}

/// A running receiver.
pub struct Collector {
    /// The base URL to give as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub url: String,
    store: Store,
}

impl Collector {
    /// An http/protobuf receiver on a loopback port.
    pub async fn http() -> Collector {
        let store: Store = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = axum::Router::new()
            .route("/v1/traces", post(http_export))
            .with_state(store.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        Collector { url, store }
    }

    /// A gRPC receiver on a loopback port.
    pub async fn grpc() -> Collector {
        let store: Store = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let service = TraceServiceServer::new(Grpc(store.clone()));
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
                .ok()
        });
        Collector { url, store }
    }

    /// Everything received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.store.lock().expect("lock").clone()
    }

    /// Waits until a span satisfies `pred`; returns all spans received by then.
    pub async fn wait_for(
        &self,
        within: Duration,
        pred: impl Fn(&Received) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.spans();
            if spans.iter().any(&pred) {
                return spans;
            }
            let names: Vec<&str> = spans.iter().map(Received::name).collect();
            assert!(
                Instant::now() < deadline,
                "no matching span within {within:?}; got {names:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn http_export(State(store): State<Store>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).expect("valid OTLP protobuf");
    collect(&store, request);
    ExportTraceServiceResponse::default().encode_to_vec()
}

struct Grpc(Store);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        collect(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}
