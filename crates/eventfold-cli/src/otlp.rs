//! Trace export over OTLP (HTTP/protobuf), off unless configured: `--otlp-endpoint URL` (the
//! collector's base URL, `/v1/traces` is appended), or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`
//! / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variables; `OTEL_SERVICE_NAME` names the service
//! (`eventfold` by default), `OTEL_EXPORTER_OTLP_HEADERS`/`_TIMEOUT` and
//! `OTEL_RESOURCE_ATTRIBUTES` are read by the SDK. When off, no exporter and no SDK exist and
//! eventfold-trace makes no span.

use anyhow::Context as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The export pipeline while it runs; [`Otlp::shutdown`] flushes the spans not yet sent.
#[derive(Debug)]
pub struct Otlp(SdkTracerProvider);

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// The traces endpoint of a collector's base URL, as the OTLP spec builds it from
/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn traces_endpoint(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

/// Starts exporting when `endpoint` is given or the standard variables name one; `None` (and
/// nothing made) otherwise.
pub fn start(endpoint: Option<&str>) -> anyhow::Result<Option<Otlp>> {
    let from_env =
        env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    if endpoint.is_none() && !from_env {
        return Ok(None);
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(base) = endpoint {
        exporter = exporter.with_endpoint(traces_endpoint(base));
    }
    let exporter = exporter.build().context(
        "cannot set up the OTLP trace exporter (check --otlp-endpoint / OTEL_EXPORTER_OTLP_*)",
    )?;
    let mut resource = Resource::builder();
    if !env_set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name("eventfold");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    eventfold_trace::install(provider.clone());
    Ok(Some(Otlp(provider)))
}

impl Otlp {
    /// Sends what is buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Err(e) = self.0.shutdown() {
            tracing::warn!(error = %e, "traces not yet exported may be lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_appended_to_the_base_url() {
        assert_eq!(
            traces_endpoint("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(traces_endpoint("http://c:4318/"), "http://c:4318/v1/traces");
    }
}
