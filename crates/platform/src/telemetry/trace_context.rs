//! W3C trace context (`traceparent`) carried by `tracing` spans.
//!
//! There is no OpenTelemetry exporter here: the point is that a trace id started by an HTTP
//! request survives the hop through Kafka, so the log lines of every service involved can be
//! joined on it. [`TraceContextLayer`] gives each span a [`TraceContext`]; code that sends a
//! message reads [`TraceContext::current`] and writes [`TraceContext::to_traceparent`] into a
//! header, and the receiving side opens its span with a `traceparent` field to continue the
//! trace.

use std::fmt;
use std::num::{NonZeroU64, NonZeroU128};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Span, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, SpanRef};

/// The span field that makes a span continue a remote trace.
const TRACEPARENT_FIELD: &str = "traceparent";
/// The span field that names the business flow a span belongs to, inherited by child spans.
const CORRELATION_ID_FIELD: &str = "correlation_id";

/// A position in a distributed trace, as carried by a W3C `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

impl TraceContext {
    /// Starts a new trace.
    pub fn new_root() -> Self {
        Self {
            trace_id: rand::random::<NonZeroU128>().get(),
            span_id: new_span_id(),
            sampled: true,
        }
    }

    /// A new span in the same trace.
    #[must_use]
    pub fn child(&self) -> Self {
        Self {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// Formats the context as a version `00` `traceparent` header value.
    pub fn to_traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{}",
            self.trace_id,
            self.span_id,
            if self.sampled { "01" } else { "00" }
        )
    }

    /// Parses a version `00` `traceparent` header value.
    ///
    /// Strict on purpose: a malformed value from another system is dropped (and a new trace
    /// started) rather than half-understood.
    pub fn parse_traceparent(value: &str) -> Option<Self> {
        let mut parts = value.split('-');
        let (version, trace_id, span_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" {
            return None;
        }
        let trace_id =
            parse_lower_hex(trace_id, 32).and_then(|id| u128::from_str_radix(id, 16).ok())?;
        let span_id =
            parse_lower_hex(span_id, 16).and_then(|id| u64::from_str_radix(id, 16).ok())?;
        let flags =
            parse_lower_hex(flags, 2).and_then(|flags| u8::from_str_radix(flags, 16).ok())?;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 0x01 == 0x01,
        })
    }

    /// The context of the current `tracing` span, if the global or scoped subscriber is built on
    /// a [`Registry`] with a [`TraceContextLayer`] (as [`super::init`] makes it).
    pub fn current() -> Option<Self> {
        with_current_span_telemetry(|telemetry| telemetry.context)
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_traceparent())
    }
}

/// The correlation id of the current span: its own `correlation_id` field or the nearest
/// ancestor's.
pub fn current_correlation_id() -> Option<String> {
    with_current_span_telemetry(|telemetry| telemetry.correlation_id.clone()).flatten()
}

fn new_span_id() -> u64 {
    rand::random::<NonZeroU64>().get()
}

/// Returns `text` if it is exactly `len` lowercase hex digits; W3C forbids uppercase.
fn parse_lower_hex(text: &str, len: usize) -> Option<&str> {
    (text.len() == len
        && text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)))
    .then_some(text)
}

fn with_current_span_telemetry<T>(read: impl FnOnce(&SpanTelemetry) -> T) -> Option<T> {
    Span::current()
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            let span = registry.span(id)?;
            let extensions = span.extensions();
            extensions.get::<SpanTelemetry>().map(read)
        })
        .flatten()
}

/// What the layer stores in each span's extensions.
#[derive(Debug, Clone)]
struct SpanTelemetry {
    context: TraceContext,
    correlation_id: Option<String>,
}

/// A [`tracing_subscriber::Layer`] that gives every new span a [`TraceContext`] and a
/// correlation id.
///
/// A span continues the remote trace named by its `traceparent` field if it has one that
/// parses, else it is a child of its parent span, else it starts a new trace. Its correlation id
/// is its own `correlation_id` field (also when recorded after creation), else its parent's.
///
/// The layer needs only spans; compose it with a span-only filter, as [`super::init`] does, so
/// it does not enable every event call site.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContextLayer;

impl<S> tracing_subscriber::Layer<S> for TraceContextLayer
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = TelemetryFields::default();
        attributes.record(&mut fields);

        let parent = span.parent().and_then(|parent| telemetry_of(&parent));
        let remote = fields
            .traceparent
            .as_deref()
            .and_then(TraceContext::parse_traceparent);
        let context = match (remote, &parent) {
            (Some(remote), _) => remote.child(),
            (None, Some(parent)) => parent.context.child(),
            (None, None) => TraceContext::new_root(),
        };
        let correlation_id = fields
            .correlation_id
            .or_else(|| parent.and_then(|parent| parent.correlation_id));

        span.extensions_mut().insert(SpanTelemetry {
            context,
            correlation_id,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut fields = TelemetryFields::default();
        values.record(&mut fields);
        let (Some(correlation_id), Some(span)) = (fields.correlation_id, ctx.span(id)) else {
            return;
        };
        if let Some(telemetry) = span.extensions_mut().get_mut::<SpanTelemetry>() {
            telemetry.correlation_id = Some(correlation_id);
        }
    }
}

fn telemetry_of<R: for<'lookup> LookupSpan<'lookup>>(
    span: &SpanRef<'_, R>,
) -> Option<SpanTelemetry> {
    span.extensions().get::<SpanTelemetry>().cloned()
}

/// Picks the two fields the layer cares about out of a span's values, whether they were
/// recorded as `str` or with `%`/`?`.
#[derive(Default)]
struct TelemetryFields {
    traceparent: Option<String>,
    correlation_id: Option<String>,
}

impl TelemetryFields {
    fn slot(&mut self, field: &Field) -> Option<&mut Option<String>> {
        match field.name() {
            TRACEPARENT_FIELD => Some(&mut self.traceparent),
            CORRELATION_ID_FIELD => Some(&mut self.correlation_id),
            _ => None,
        }
    }
}

impl Visit for TelemetryFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(slot) = self.slot(field) {
            *slot = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if let Some(slot) = self.slot(field) {
            *slot = Some(format!("{value:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing::field;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn with_layer<T>(body: impl FnOnce() -> T) -> T {
        tracing::subscriber::with_default(Registry::default().with(TraceContextLayer), body)
    }

    #[test]
    fn traceparent_round_trips() {
        let context = TraceContext::parse_traceparent(TRACEPARENT).unwrap();

        assert_eq!(context.trace_id, 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
        assert_eq!(context.span_id, 0x00f0_67aa_0ba9_02b7);
        assert!(context.sampled);
        assert_eq!(context.to_traceparent(), TRACEPARENT);

        let unsampled = TraceContext {
            sampled: false,
            ..context
        };
        assert!(unsampled.to_traceparent().ends_with("-00"));
        assert_eq!(
            TraceContext::parse_traceparent(&unsampled.to_traceparent()),
            Some(unsampled)
        );
    }

    #[test]
    fn formatting_pads_small_ids() {
        let context = TraceContext {
            trace_id: 1,
            span_id: 2,
            sampled: true,
        };
        assert_eq!(
            context.to_traceparent(),
            "00-00000000000000000000000000000001-0000000000000002-01"
        );
    }

    #[test]
    fn malformed_traceparents_are_rejected() {
        for value in [
            "",
            "00",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        ] {
            assert_eq!(TraceContext::parse_traceparent(value), None, "{value:?}");
        }
    }

    #[test]
    fn new_contexts_are_sampled_and_distinct() {
        let first = TraceContext::new_root();
        let second = TraceContext::new_root();
        let child = first.child();

        assert!(first.sampled);
        assert_ne!(first.trace_id, second.trace_id);
        assert_eq!(child.trace_id, first.trace_id);
        assert_ne!(child.span_id, first.span_id);
        assert_eq!(
            TraceContext::parse_traceparent(&first.to_traceparent()),
            Some(first)
        );
    }

    #[test]
    fn there_is_no_context_outside_a_span_or_without_the_layer() {
        assert_eq!(with_layer(TraceContext::current), None);

        let without_layer = tracing::subscriber::with_default(Registry::default(), || {
            tracing::info_span!("no layer").in_scope(TraceContext::current)
        });
        assert_eq!(without_layer, None);
    }

    #[test]
    fn a_child_span_inherits_the_trace_id() {
        with_layer(|| {
            let parent = tracing::info_span!("parent");
            let parent_context = parent.in_scope(|| TraceContext::current().unwrap());

            let child_context = parent.in_scope(|| {
                tracing::info_span!("child").in_scope(|| TraceContext::current().unwrap())
            });

            assert_eq!(child_context.trace_id, parent_context.trace_id);
            assert_ne!(child_context.span_id, parent_context.span_id);

            let unrelated =
                tracing::info_span!("unrelated").in_scope(|| TraceContext::current().unwrap());
            assert_ne!(unrelated.trace_id, parent_context.trace_id);
        });
    }

    #[test]
    fn a_span_with_a_traceparent_field_continues_that_trace() {
        let remote = TraceContext::parse_traceparent(TRACEPARENT).unwrap();
        let unsampled = TraceContext {
            sampled: false,
            ..remote
        };

        with_layer(|| {
            // Even under an unrelated local parent, the remote context wins.
            let local = tracing::info_span!("local");
            let _entered = local.enter();

            let displayed = tracing::info_span!("consume", traceparent = %TRACEPARENT)
                .in_scope(|| TraceContext::current().unwrap());
            assert_eq!(displayed.trace_id, remote.trace_id);
            assert_ne!(displayed.span_id, remote.span_id);
            assert!(displayed.sampled);

            let header = unsampled.to_traceparent();
            let as_str = tracing::info_span!("consume", traceparent = header.as_str())
                .in_scope(|| TraceContext::current().unwrap());
            assert_eq!(as_str.trace_id, remote.trace_id);
            assert!(!as_str.sampled);
        });
    }

    #[test]
    fn an_unparsable_traceparent_falls_back_to_the_parent() {
        with_layer(|| {
            let parent = tracing::info_span!("parent");
            let _entered = parent.enter();
            let parent_context = TraceContext::current().unwrap();

            let context = tracing::info_span!("consume", traceparent = "garbage")
                .in_scope(|| TraceContext::current().unwrap());
            assert_eq!(context.trace_id, parent_context.trace_id);
        });
    }

    #[test]
    fn correlation_ids_are_inherited_and_overridable() {
        with_layer(|| {
            let request = tracing::info_span!("request", correlation_id = %"order-42");
            let _request = request.enter();
            assert_eq!(current_correlation_id().as_deref(), Some("order-42"));

            let inner = tracing::info_span!("inner");
            inner.in_scope(|| {
                assert_eq!(current_correlation_id().as_deref(), Some("order-42"));
            });

            tracing::info_span!("own", correlation_id = "order-43").in_scope(|| {
                assert_eq!(current_correlation_id().as_deref(), Some("order-43"));
            });
        });

        with_layer(|| {
            let span = tracing::info_span!("plain");
            assert_eq!(span.in_scope(current_correlation_id), None);
        });
    }

    #[test]
    fn a_correlation_id_can_be_recorded_after_the_span_starts() {
        with_layer(|| {
            let span = tracing::info_span!("handle", correlation_id = field::Empty);
            let _entered = span.enter();
            assert_eq!(current_correlation_id(), None);

            span.record("correlation_id", "order-7");
            assert_eq!(current_correlation_id().as_deref(), Some("order-7"));
            let child = tracing::info_span!("child").in_scope(current_correlation_id);
            assert_eq!(child.as_deref(), Some("order-7"));
        });
    }
}
