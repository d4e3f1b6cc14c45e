//! The OpenTelemetry trace pipeline: an OTLP exporter (http/protobuf or gRPC), a batch
//! processor, the sampler and the resource. Built only when an endpoint is configured.

use std::collections::HashMap;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{
    Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

use super::TelemetryError;
use crate::config::{OtelSettings, OtlpProtocol, RootSampler};

/// The tracer provider for `settings`, or `None` when no endpoint is configured.
pub fn provider(
    settings: &OtelSettings,
    proplet_id: &str,
) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    let Some(endpoint) = &settings.traces_endpoint else {
        return Ok(None);
    };
    let exporter = exporter(settings, endpoint)?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler(settings))
        .with_resource(resource(settings, proplet_id))
        .build();
    Ok(Some(provider))
}

fn exporter(settings: &OtelSettings, endpoint: &str) -> Result<SpanExporter, TelemetryError> {
    // The exporter's HTTP client takes the process's default TLS provider.
    crate::crypto::install_default();
    let built = match settings.protocol {
        OtlpProtocol::HttpProtobuf => SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_headers(settings.headers.iter().cloned().collect::<HashMap<_, _>>())
            .build(),
        OtlpProtocol::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_metadata(metadata(&settings.headers)?)
            .build(),
    };
    built.map_err(|e| TelemetryError::Exporter(e.to_string()))
}

fn metadata(
    headers: &[(String, String)],
) -> Result<opentelemetry_otlp::tonic_types::metadata::MetadataMap, TelemetryError> {
    use axum::http::{HeaderMap, HeaderName, HeaderValue};
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        let bad =
            || TelemetryError::Exporter(format!("OTEL_EXPORTER_OTLP_HEADERS: bad header {k:?}"));
        let name = HeaderName::try_from(k.as_str()).map_err(|_| bad())?;
        let value = HeaderValue::try_from(v.as_str()).map_err(|_| bad())?;
        map.insert(name, value);
    }
    Ok(opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(map))
}

fn sampler(settings: &OtelSettings) -> Sampler {
    let root = match settings.sampler {
        RootSampler::AlwaysOn => Sampler::AlwaysOn,
        RootSampler::AlwaysOff => Sampler::AlwaysOff,
        RootSampler::Ratio(r) => Sampler::TraceIdRatioBased(r),
    };
    if settings.parent_based {
        Sampler::ParentBased(Box::new(root))
    } else {
        root
    }
}

/// service name and version, the proplet id, the host, and the operator's attributes.
fn resource(settings: &OtelSettings, proplet_id: &str) -> Resource {
    let mut attributes = vec![
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("proplet.id", proplet_id.to_owned()),
    ];
    if let Some(host) = super::hostname() {
        attributes.push(KeyValue::new("host.name", host));
    }
    attributes.extend(
        settings
            .resource
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    );
    Resource::builder_empty()
        .with_service_name(settings.service_name.clone())
        .with_attributes(attributes)
        .build()
}
