//! [`EventRecord`]: one CloudEvent as murmur carries it, with the raw data bytes kept intact
//! (so signatures cover exactly what was sent), convertible to and from `cloudevents::Event`.

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use cloudevents::event::{ExtensionValue, TryIntoUrl};
use cloudevents::{AttributesReader, AttributesWriter, Data, Event, EventBuilder, EventBuilderV10};

/// Extension attribute: correlation id (the root event's id, kept by every descendant).
pub const EXT_CORRELATION: &str = "correlationid";
/// Extension attribute: causation id (the parent event's id).
pub const EXT_CAUSATION: &str = "causationid";
/// Extension attribute: W3C trace context.
pub const EXT_TRACEPARENT: &str = "traceparent";
/// Extension attribute: the emitter's signature, `ed25519:<base64url>`.
pub const EXT_SIGNATURE: &str = "murmursig";
/// The only CloudEvents spec version murmur accepts.
pub const SPEC_VERSION: &str = "1.0";
/// Content type of murmur payloads.
pub const JSON: &str = "application/json";

/// One CloudEvent (spec 1.0) with its data kept as the exact bytes that were transmitted.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// `id`: unique per source; murmur uses it as `Nats-Msg-Id`.
    pub id: String,
    /// `source`: the emitter's nkey public key for murmur events.
    pub source: String,
    /// `type`.
    pub ty: String,
    /// `subject`: the aggregate id for murmur events.
    pub subject: Option<String>,
    /// `time`.
    pub time: Option<DateTime<Utc>>,
    /// `datacontenttype`.
    pub datacontenttype: Option<String>,
    /// `dataschema`.
    pub dataschema: Option<String>,
    /// `correlationid` extension.
    pub correlation_id: Option<String>,
    /// `causationid` extension.
    pub causation_id: Option<String>,
    /// `traceparent` extension.
    pub traceparent: Option<String>,
    /// `murmursig` extension.
    pub signature: Option<String>,
    /// Any other extension attributes, sorted by name.
    pub extensions: Vec<(String, String)>,
    /// `data`, as transmitted (JSON text for JSON content types).
    pub data: Option<Bytes>,
}

impl EventRecord {
    /// Whether `datacontenttype` says the data is JSON (absent means JSON, per the JSON format).
    pub fn data_is_json(&self) -> bool {
        match &self.datacontenttype {
            None => true,
            Some(ct) => is_json_content_type(ct),
        }
    }

    /// `correlationid` as it counts: absent means the event's own id (a root event).
    pub fn correlation(&self) -> &str {
        self.correlation_id.as_deref().unwrap_or(&self.id)
    }

    /// `causationid` as it counts: absent means the correlation id (a root event, or the
    /// first event its root caused).
    pub fn causation(&self) -> &str {
        match &self.causation_id {
            Some(causation) => causation,
            None => self.correlation(),
        }
    }

    /// `datacontenttype` as it counts: absent means JSON (the CloudEvents JSON format's rule).
    pub fn content_type(&self) -> &str {
        self.datacontenttype.as_deref().unwrap_or(JSON)
    }

    /// Writes the values [`EventRecord::correlation`], [`EventRecord::causation`] and
    /// [`EventRecord::content_type`] give into the absent attributes: a decoded event reads
    /// the same whether its emitter left the defaults out or wrote them.
    pub fn fill_defaults(&mut self) {
        if self.correlation_id.is_none() {
            self.correlation_id = Some(self.id.clone());
        }
        if self.causation_id.is_none() {
            self.causation_id = self.correlation_id.clone();
        }
        if self.datacontenttype.is_none() {
            self.datacontenttype = Some(JSON.to_string());
        }
    }

    /// The bytes an emitter signs: every attribute murmur relies on plus the NATS subject and
    /// the data, each length-prefixed so no two different events share an encoding. The
    /// lineage and content type are signed as they count ([`EventRecord::correlation`]), so
    /// leaving a default out of the wire changes no signature.
    pub fn signing_bytes(&self, nats_subject: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024 + self.data.as_ref().map_or(0, |d| d.len()));
        self.write_signing_bytes(nats_subject, |part| out.extend_from_slice(part));
        out
    }

    /// Hands [`EventRecord::signing_bytes`] to `sink` piece by piece, in order: a hash of
    /// them without the bytes gathered in memory first.
    pub fn write_signing_bytes(&self, nats_subject: &str, mut sink: impl FnMut(&[u8])) {
        let time = self.time.map(format_time);
        let fields: [&[u8]; 13] = [
            b"murmur-sig-v1",
            nats_subject.as_bytes(),
            self.id.as_bytes(),
            self.source.as_bytes(),
            self.ty.as_bytes(),
            opt(&self.subject),
            time.as_deref().unwrap_or("").as_bytes(),
            self.content_type().as_bytes(),
            opt(&self.dataschema),
            self.correlation().as_bytes(),
            self.causation().as_bytes(),
            opt(&self.traceparent),
            self.data.as_deref().unwrap_or(b""),
        ];
        for f in fields {
            sink(&(f.len() as u32).to_le_bytes());
            sink(f);
        }
    }

    /// Converts to the CloudEvents SDK type. Never fails for a decoded record: data that is
    /// not valid JSON under a JSON content type is handed over as binary data.
    pub fn to_cloudevent(&self) -> Event {
        let mut b = EventBuilderV10::new()
            .id(self.id.clone())
            .source(self.source.clone())
            .ty(self.ty.clone());
        if let Some(s) = &self.subject {
            b = b.subject(s.clone());
        }
        if let Some(t) = self.time {
            b = b.time(t);
        }
        for (name, value) in self.all_extensions() {
            b = b.extension(name, value.to_string());
        }
        let mut event = b.build().unwrap_or_default();
        if let Some(schema) = &self.dataschema
            && let Ok(url) = schema.as_str().into_url()
        {
            event.set_dataschema(Some(url));
        }
        if let Some(data) = &self.data {
            let ct = self.datacontenttype.clone();
            let value = if self.data_is_json() {
                match serde_json::from_slice::<serde_json::Value>(data) {
                    Ok(v) => Data::Json(v),
                    Err(_) => Data::Binary(data.to_vec()),
                }
            } else {
                match std::str::from_utf8(data) {
                    Ok(s) => Data::String(s.to_string()),
                    Err(_) => Data::Binary(data.to_vec()),
                }
            };
            event.set_data(ct.unwrap_or_else(|| JSON.to_string()), value);
        }
        event
    }

    /// All extensions (murmur's own first, then others), as name/value pairs.
    pub fn all_extensions(&self) -> impl Iterator<Item = (&str, &str)> {
        [
            (EXT_CORRELATION, &self.correlation_id),
            (EXT_CAUSATION, &self.causation_id),
            (EXT_TRACEPARENT, &self.traceparent),
            (EXT_SIGNATURE, &self.signature),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.as_deref().map(|v| (n, v)))
        .chain(
            self.extensions
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str())),
        )
    }

    /// The extensions as they travel: [`EventRecord::all_extensions`] without a
    /// `correlationid` or `causationid` equal to its default.
    pub fn wire_extensions(&self) -> impl Iterator<Item = (&str, &str)> {
        let correlation = self.correlation();
        self.all_extensions()
            .filter(move |&(name, value)| match name {
                EXT_CORRELATION => value != self.id,
                EXT_CAUSATION => value != correlation,
                _ => true,
            })
    }

    /// Sets one extension by name, routing murmur's own to their fields.
    pub fn set_extension(&mut self, name: &str, value: String) {
        match name {
            EXT_CORRELATION => self.correlation_id = Some(value),
            EXT_CAUSATION => self.causation_id = Some(value),
            EXT_TRACEPARENT => self.traceparent = Some(value),
            EXT_SIGNATURE => self.signature = Some(value),
            other => {
                match self
                    .extensions
                    .binary_search_by(|(n, _)| n.as_str().cmp(other))
                {
                    Ok(i) => self.extensions[i].1 = value,
                    Err(i) => self.extensions.insert(i, (other.to_string(), value)),
                }
            }
        }
    }
}

impl From<&Event> for EventRecord {
    fn from(event: &Event) -> Self {
        let mut record = EventRecord {
            id: event.id().to_string(),
            source: event.source().to_string(),
            ty: event.ty().to_string(),
            subject: event.subject().map(str::to_string),
            time: event.time().copied(),
            datacontenttype: event.datacontenttype().map(str::to_string),
            dataschema: event.dataschema().map(|u| u.to_string()),
            correlation_id: None,
            causation_id: None,
            traceparent: None,
            signature: None,
            extensions: Vec::new(),
            data: None,
        };
        for (name, value) in event.iter_extensions() {
            let text = match value {
                ExtensionValue::String(s) => s.clone(),
                ExtensionValue::Boolean(b) => b.to_string(),
                ExtensionValue::Integer(i) => i.to_string(),
            };
            record.set_extension(name, text);
        }
        record.data = event.data().map(|d| match d {
            Data::Json(v) => Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
            Data::String(s) => Bytes::from(s.clone().into_bytes()),
            Data::Binary(b) => Bytes::from(b.clone()),
        });
        record
    }
}

fn opt(v: &Option<String>) -> &[u8] {
    v.as_deref().unwrap_or("").as_bytes()
}

/// The canonical text form of a `time` attribute (RFC 3339, UTC, `Z`).
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Whether a media type is JSON (`application/json`, `text/json`, `*/*+json`, parameters allowed).
pub fn is_json_content_type(ct: &str) -> bool {
    let base = ct.split(';').next().unwrap_or("").trim();
    base.eq_ignore_ascii_case("application/json")
        || base.eq_ignore_ascii_case("text/json")
        || base.to_ascii_lowercase().ends_with("+json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EventRecord {
        EventRecord {
            id: "A234-1234-1234".into(),
            source: "/mycontext".into(),
            ty: "com.example.someevent".into(),
            subject: Some("larger-context".into()),
            time: Some("2018-04-05T17:31:00Z".parse().expect("time")),
            datacontenttype: Some(JSON.into()),
            dataschema: None,
            correlation_id: Some("c".into()),
            causation_id: Some("p".into()),
            traceparent: None,
            signature: None,
            extensions: vec![("comexampleextension1".into(), "value".into())],
            data: Some(Bytes::from_static(br#"{"appinfoA":"abc"}"#)),
        }
    }

    #[test]
    fn converts_to_and_from_the_sdk_event() {
        let record = sample();
        let event = record.to_cloudevent();
        assert_eq!(event.id(), "A234-1234-1234");
        assert_eq!(event.ty(), "com.example.someevent");
        assert_eq!(
            event.extension(EXT_CORRELATION).map(|e| e.to_string()),
            Some("c".to_string())
        );
        let back = EventRecord::from(&event);
        assert_eq!(back, record);
    }

    #[test]
    fn signing_bytes_cover_every_field() {
        let base = sample();
        let bytes = base.signing_bytes("s");
        let mut changed = base.clone();
        changed.causation_id = Some("other".into());
        assert_ne!(bytes, changed.signing_bytes("s"));
        assert_ne!(bytes, base.signing_bytes("t"));
        // Moving a byte from one field to the next must change the encoding.
        let mut a = base.clone();
        a.id = "ab".into();
        a.source = "c".into();
        let mut b = base;
        b.id = "a".into();
        b.source = "bc".into();
        assert_ne!(a.signing_bytes("s"), b.signing_bytes("s"));
    }
}
