//! The `OTEL_*` settings, resolved into [`OtelSettings`] the way the OpenTelemetry
//! specification reads them.

use super::reader::Reader;
use super::settings::*;
use super::values;
use super::{ConfigError, OtelSettings, OtlpProtocol, RootSampler};

/// Reads the trace export settings.
pub(super) fn settings(r: &Reader<'_>) -> Result<OtelSettings, ConfigError> {
    let protocol = r.req(&OTEL_PROTOCOL, protocol)?;
    let disabled = r.req(&OTEL_SDK_DISABLED, values::boolean)?;
    let signal = r.opt(&OTEL_TRACES_ENDPOINT, url)?;
    let base = r.opt(&OTEL_ENDPOINT, url)?;
    let traces_endpoint = match (disabled, signal, base) {
        (true, _, _) => None,
        (false, Some(full), _) => Some(full),
        (false, None, Some(base)) if protocol == OtlpProtocol::HttpProtobuf => {
            Some(format!("{}/v1/traces", base.trim_end_matches('/')))
        }
        (false, None, base) => base,
    };
    let (parent_based, sampler) = r.req(&OTEL_TRACES_SAMPLER, sampler_kind)?;
    let ratio = r.opt(&OTEL_TRACES_SAMPLER_ARG, ratio)?.unwrap_or(1.0);
    Ok(OtelSettings {
        traces_endpoint,
        protocol,
        headers: r.opt(&OTEL_HEADERS, pairs)?.unwrap_or_default(),
        service_name: r.req(&OTEL_SERVICE_NAME, nonempty)?,
        resource: r.opt(&OTEL_RESOURCE_ATTRIBUTES, pairs)?.unwrap_or_default(),
        sampler: match sampler {
            RootSampler::Ratio(_) => RootSampler::Ratio(ratio),
            other => other,
        },
        parent_based,
    })
}

fn protocol(t: &str) -> Result<OtlpProtocol, String> {
    match t {
        "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
        "grpc" => Ok(OtlpProtocol::Grpc),
        _ => Err("expected http/protobuf or grpc".into()),
    }
}

fn url(t: &str) -> Result<String, String> {
    let parsed = url::Url::parse(t).map_err(|e| e.to_string())?;
    match parsed.scheme() {
        "http" | "https" => Ok(t.to_owned()),
        other => Err(format!("expected an http or https URL, not {other}:")),
    }
}

fn sampler_kind(t: &str) -> Result<(bool, RootSampler), String> {
    let (parent_based, root) = match t.strip_prefix("parentbased_") {
        Some(root) => (true, root),
        None => (false, t),
    };
    let root = match root {
        "always_on" => RootSampler::AlwaysOn,
        "always_off" => RootSampler::AlwaysOff,
        "traceidratio" => RootSampler::Ratio(1.0),
        _ => return Err("expected [parentbased_]always_on, always_off or traceidratio".into()),
    };
    Ok((parent_based, root))
}

fn ratio(t: &str) -> Result<f64, String> {
    match t.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err("expected a number from 0 to 1".into()),
    }
}

fn nonempty(t: &str) -> Result<String, String> {
    if t.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(t.to_owned())
    }
}

/// `key=value,key2=value2` (W3C baggage-like, as the OTEL_* list variables are written).
fn pairs(t: &str) -> Result<Vec<(String, String)>, String> {
    t.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| "expected key=value pairs".to_owned())?;
            Ok((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}
