//! The CloudEvents NATS protocol binding, both content modes.
//!
//! * **Structured**: the whole event is a JSON object in the body (CloudEvents JSON format)
//!   and the `Content-Type` header is `application/cloudevents+json`.
//! * **Binary**: each attribute travels in a `ce-<name>` header, percent-encoded like the HTTP
//!   binding (space, `"`, `%`, controls and non-ASCII); `datacontenttype` travels as
//!   `Content-Type` (a `ce-datacontenttype` header is also accepted); the body is the data.
//!
//! [`decode`] detects the mode: a `Content-Type` starting with `application/cloudevents` is
//! structured, anything else is binary. A message with neither a CloudEvents content type nor
//! a `ce-specversion` header whose body starts with `{` is read as structured, because plain
//! NATS tools and older SDKs publish structured events without headers.
//!
//! Both directions keep the data bytes exactly as sent, so signatures verify across modes.

use std::borrow::Cow;

use bytes::Bytes;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::envelope::{EventRecord, JSON, SPEC_VERSION, format_time};
use crate::headers::{HeaderSource, Headers};

/// Content type of structured-mode events.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// Prefix of binary-mode attribute headers.
pub const HEADER_PREFIX: &str = "ce-";
/// Default murmur event size limit (headers + body), well under the server's 1 MiB default
/// `max_payload`.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 512 * 1024;

/// Which content mode to encode with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentMode {
    /// Attributes in `ce-` headers, data in the body.
    Binary,
    /// The whole event as JSON in the body: murmur's default, because it measured cheaper to
    /// encode and decode than a dozen async-nats headers (see docs/benchmarks.md).
    #[default]
    Structured,
}

/// Why bytes could not be read as a CloudEvent, or an event could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindingError {
    /// The body is not a CloudEvents JSON object (structured mode).
    #[error("malformed event: {0}")]
    Malformed(String),
    /// A required attribute is missing or empty.
    #[error("required CloudEvent attribute {0:?} is missing or empty")]
    MissingAttribute(&'static str),
    /// `specversion` is not 1.0.
    #[error("specversion {0:?} is not supported; murmur speaks CloudEvents 1.0")]
    WrongSpecVersion(String),
    /// An attribute has an invalid value.
    #[error("attribute {name:?} is invalid: {reason}")]
    InvalidAttribute {
        /// Attribute name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The message exceeds the event size limit.
    #[error("event is {size} bytes; the limit is {limit} bytes")]
    Oversized {
        /// Size of headers and body.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
}

const HEADER_VALUE_ESCAPES: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

fn pct(value: &str) -> Cow<'_, str> {
    utf8_percent_encode(value, HEADER_VALUE_ESCAPES).into()
}

/// Size of a message as the limit counts it: body plus header names and values.
pub fn message_size<H: HeaderSource + ?Sized>(headers: Option<&H>, body: &[u8]) -> usize {
    let mut header_bytes = 0;
    if let Some(h) = headers {
        h.visit(&mut |name, value, _| header_bytes += name.len() + value.len() + 4);
    }
    header_bytes + body.len()
}

/// Encodes `record` for NATS in `mode`, refusing events over `max_bytes`.
pub fn encode(
    record: &EventRecord,
    mode: ContentMode,
    max_bytes: usize,
) -> Result<(Headers, Bytes), BindingError> {
    let (headers, body) = match mode {
        ContentMode::Binary => encode_binary(record),
        ContentMode::Structured => encode_structured(record)?,
    };
    let size = message_size(Some(&headers), &body);
    if size > max_bytes {
        return Err(BindingError::Oversized {
            size,
            limit: max_bytes,
        });
    }
    Ok((headers, body))
}

fn encode_binary(record: &EventRecord) -> (Headers, Bytes) {
    let mut h = Headers::new();
    h.insert("ce-specversion", SPEC_VERSION);
    h.insert("ce-id", pct(&record.id).into_owned());
    h.insert("ce-source", pct(&record.source).into_owned());
    h.insert("ce-type", pct(&record.ty).into_owned());
    if let Some(s) = &record.subject {
        h.insert("ce-subject", pct(s).into_owned());
    }
    if let Some(t) = record.time {
        h.insert("ce-time", format_time(t));
    }
    if let Some(ct) = &record.datacontenttype {
        h.insert("Content-Type", pct(ct).into_owned());
    }
    if let Some(ds) = &record.dataschema {
        h.insert("ce-dataschema", pct(ds).into_owned());
    }
    for (name, value) in record.wire_extensions() {
        let mut header = String::with_capacity(HEADER_PREFIX.len() + name.len());
        header.push_str(HEADER_PREFIX);
        header.push_str(name);
        h.insert(header, pct(value).into_owned());
    }
    (h, record.data.clone().unwrap_or_default())
}

fn encode_structured(record: &EventRecord) -> Result<(Headers, Bytes), BindingError> {
    let attributes: usize = [&record.id, &record.source, &record.ty]
        .into_iter()
        .chain(&record.subject)
        .chain(&record.datacontenttype)
        .chain(&record.dataschema)
        .map(String::len)
        .chain(record.wire_extensions().map(|(n, v)| n.len() + v.len()))
        .sum();
    let mut out = Vec::with_capacity(
        256 + 8 * record.extensions.len()
            + attributes
            + record.data.as_ref().map_or(0, |d| d.len()),
    );
    out.push(b'{');
    let mut first = true;
    let mut put = |out: &mut Vec<u8>, name: &str, value: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        json_string_into(out, name);
        out.push(b':');
        json_string_into(out, value);
    };
    put(&mut out, "specversion", SPEC_VERSION);
    put(&mut out, "id", &record.id);
    put(&mut out, "source", &record.source);
    put(&mut out, "type", &record.ty);
    if let Some(s) = &record.subject {
        put(&mut out, "subject", s);
    }
    if let Some(t) = record.time {
        put(&mut out, "time", &format_time(t));
    }
    // Absent means JSON in this format: murmur's own content type is left out.
    if let Some(ct) = &record.datacontenttype
        && ct != JSON
    {
        put(&mut out, "datacontenttype", ct);
    }
    if let Some(ds) = &record.dataschema {
        put(&mut out, "dataschema", ds);
    }
    for (name, value) in record.wire_extensions() {
        put(&mut out, name, value);
    }
    if let Some(data) = &record.data {
        if record.data_is_json() {
            // Keep the data bytes verbatim; they must be one JSON value.
            if serde_json::from_slice::<&RawValue>(data).is_err() {
                return Err(BindingError::InvalidAttribute {
                    name: "data".into(),
                    reason: "content type is JSON but data is not a JSON value".into(),
                });
            }
            out.extend_from_slice(b",\"data\":");
            out.extend_from_slice(data);
        } else if let Ok(text) = std::str::from_utf8(data) {
            out.extend_from_slice(b",\"data\":");
            let _ = serde_json::to_writer(&mut out, text);
        } else {
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(data);
            out.extend_from_slice(b",\"data_base64\":");
            let _ = serde_json::to_writer(&mut out, &encoded);
        }
    }
    out.push(b'}');
    let mut h = Headers::new();
    h.insert("Content-Type", STRUCTURED_CONTENT_TYPE);
    Ok((h, Bytes::from(out)))
}

/// Decodes a NATS message into an event, detecting the content mode. Checks the size limit
/// first, then the CloudEvents structure (required attributes, spec version).
pub fn decode<H: HeaderSource + ?Sized>(
    headers: Option<&H>,
    body: &Bytes,
    max_bytes: usize,
) -> Result<EventRecord, BindingError> {
    let size = message_size(headers, body);
    if size > max_bytes {
        return Err(BindingError::Oversized {
            size,
            limit: max_bytes,
        });
    }
    let content_type = headers.and_then(|h| h.first_ci("content-type"));
    let has_ce_headers = headers.is_some_and(|h| h.first_ci("ce-specversion").is_some());
    let structured = match content_type {
        Some(ct) => ct
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("application/cloudevents"),
        None => !has_ce_headers && body.first() == Some(&b'{'),
    };
    if structured {
        decode_structured(body)
    } else {
        decode_binary(headers, body)
    }
}

fn unpct(name: &str, value: &str) -> Result<String, BindingError> {
    percent_decode_str(value)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|e| BindingError::InvalidAttribute {
            name: name.to_string(),
            reason: format!("bad percent-encoding: {e}"),
        })
}

fn parse_time(value: &str) -> Result<chrono::DateTime<chrono::Utc>, BindingError> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| BindingError::InvalidAttribute {
            name: "time".into(),
            reason: format!("{value:?} is not RFC 3339: {e}"),
        })
}

fn check_required(record: &EventRecord, specversion: Option<&str>) -> Result<(), BindingError> {
    match specversion {
        None | Some("") => return Err(BindingError::MissingAttribute("specversion")),
        Some(SPEC_VERSION) => {}
        Some(other) => {
            return Err(BindingError::WrongSpecVersion(
                other.chars().take(40).collect(),
            ));
        }
    }
    if record.id.is_empty() {
        return Err(BindingError::MissingAttribute("id"));
    }
    if record.source.is_empty() {
        return Err(BindingError::MissingAttribute("source"));
    }
    if record.ty.is_empty() {
        return Err(BindingError::MissingAttribute("type"));
    }
    Ok(())
}

fn empty_record() -> EventRecord {
    EventRecord {
        id: String::new(),
        source: String::new(),
        ty: String::new(),
        subject: None,
        time: None,
        datacontenttype: None,
        dataschema: None,
        correlation_id: None,
        causation_id: None,
        traceparent: None,
        signature: None,
        extensions: Vec::new(),
        data: None,
    }
}

fn decode_binary<H: HeaderSource + ?Sized>(
    headers: Option<&H>,
    body: &Bytes,
) -> Result<EventRecord, BindingError> {
    let Some(headers) = headers else {
        return Err(BindingError::MissingAttribute("specversion"));
    };
    let mut record = empty_record();
    let mut specversion = None;
    let mut ce_content_type = None;
    let mut content_type = None;
    let mut firsts = Vec::new();
    headers.visit(&mut |name, value, index| {
        if index == 0 {
            firsts.push((name, value));
        }
    });
    for (name, value) in firsts {
        if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(unpct("datacontenttype", value)?);
            continue;
        }
        if name.len() <= HEADER_PREFIX.len()
            || !name[..HEADER_PREFIX.len()].eq_ignore_ascii_case(HEADER_PREFIX)
        {
            continue;
        }
        let attr = name[HEADER_PREFIX.len()..].to_ascii_lowercase();
        let value = unpct(&attr, value)?;
        match attr.as_str() {
            "specversion" => specversion = Some(value),
            "id" => record.id = value,
            "source" => record.source = value,
            "type" => record.ty = value,
            "subject" => record.subject = Some(value),
            "time" => record.time = Some(parse_time(&value)?),
            "datacontenttype" => ce_content_type = Some(value),
            "dataschema" => record.dataschema = Some(value),
            _ => record.set_extension(&attr, value),
        }
    }
    check_required(&record, specversion.as_deref())?;
    record.datacontenttype = ce_content_type.or(content_type);
    if !body.is_empty() {
        record.data = Some(body.clone());
    }
    record.fill_defaults();
    Ok(record)
}

/// The members of a structured event, borrowed from the body.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a CloudEvents JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut out = Vec::with_capacity(16);
                while let Some(MemberName(key)) = map.next_key()? {
                    let value: &'de RawValue = map.next_value()?;
                    out.push((key, value));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A member's name, borrowed from the body unless it holds an escape. (serde's own
/// `Cow<str>` always allocates.)
struct MemberName<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for MemberName<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = MemberName<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

fn decode_structured(body: &Bytes) -> Result<EventRecord, BindingError> {
    let members: Members<'_> = serde_json::from_slice(body)
        .map_err(|e| BindingError::Malformed(format!("not a CloudEvents JSON object: {e}")))?;
    let mut record = empty_record();
    let mut specversion = None;
    let mut data_raw: Option<&RawValue> = None;
    let mut data_base64: Option<String> = None;
    for (name, raw) in members.0 {
        // The JSON format treats a null attribute as absent.
        if raw.get() == "null" {
            continue;
        }
        let text = || -> Result<String, BindingError> {
            json_string(raw).ok_or_else(|| BindingError::InvalidAttribute {
                name: name.to_string(),
                reason: format!("expected a string, found {}", truncate(raw.get())),
            })
        };
        let as_extension = || -> Result<String, BindingError> {
            if let Some(s) = json_string(raw) {
                return Ok(s);
            }
            match serde_json::from_str::<serde_json::Value>(raw.get()) {
                Ok(serde_json::Value::String(s)) => Ok(s),
                Ok(serde_json::Value::Bool(b)) => Ok(b.to_string()),
                Ok(serde_json::Value::Number(n)) if n.is_i64() => Ok(n.to_string()),
                _ => Err(BindingError::InvalidAttribute {
                    name: name.to_string(),
                    reason: "extension values are strings, booleans or integers".into(),
                }),
            }
        };
        match name.as_ref() {
            "specversion" => specversion = Some(text()?),
            "id" => record.id = text()?,
            "source" => record.source = text()?,
            "type" => record.ty = text()?,
            "subject" => record.subject = Some(text()?),
            "time" => record.time = Some(parse_time(&text()?)?),
            "datacontenttype" => record.datacontenttype = Some(text()?),
            "dataschema" => record.dataschema = Some(text()?),
            "data" => data_raw = Some(raw),
            "data_base64" => data_base64 = Some(text()?),
            other => {
                let value = as_extension()?;
                record.set_extension(other, value);
            }
        }
    }
    check_required(&record, specversion.as_deref())?;
    if let Some(raw) = data_raw {
        let is_json = record.data_is_json();
        let bytes = if is_json {
            Bytes::copy_from_slice(raw.get().as_bytes())
        } else {
            match json_string(raw) {
                Some(s) => Bytes::from(s.into_bytes()),
                None => Bytes::copy_from_slice(raw.get().as_bytes()),
            }
        };
        record.data = Some(bytes);
    } else if let Some(b64) = data_base64 {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| BindingError::InvalidAttribute {
                name: "data_base64".into(),
                reason: e.to_string(),
            })?;
        record.data = Some(Bytes::from(bytes));
    }
    record.fill_defaults();
    Ok(record)
}

/// Writes `text` as a JSON string. Attribute values (ids, keys, signatures) seldom hold a
/// character JSON escapes: those are copied between quotes after one branch-free pass.
fn json_string_into(out: &mut Vec<u8>, text: &str) {
    let plain = !text.bytes().fold(false, |escape, b| {
        escape | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Writing a &str to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// A JSON string value's text. Most have no escape: their text is what lies between the
/// quotes (the parser that found the value has already checked it), without a second parse.
fn json_string(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'))
        && !inner.contains('\\')
    {
        return Some(inner.to_string());
    }
    serde_json::from_str::<String>(text).ok()
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::AttributesReader;

    const LIMIT: usize = DEFAULT_MAX_EVENT_BYTES;

    /// The example event of the CloudEvents JSON format spec (section 3.1).
    const SPEC_STRUCTURED: &str = r#"{
        "specversion" : "1.0",
        "type" : "com.example.someevent",
        "source" : "/mycontext",
        "id" : "A234-1234-1234",
        "time" : "2018-04-05T17:31:00Z",
        "comexampleextension1" : "value",
        "comexampleothervalue" : 5,
        "datacontenttype" : "application/vnd.apache.thrift.binary",
        "data_base64" : "... base64 encoded string ..."
    }"#;

    #[test]
    fn structured_spec_example_decodes() {
        let mut h = Headers::new();
        h.insert("Content-Type", STRUCTURED_CONTENT_TYPE);
        let body = Bytes::from_static(SPEC_STRUCTURED.as_bytes());
        // The spec's stand-in text is not real base64: a typed error, not a panic.
        let err = decode(Some(&h), &body, LIMIT).expect_err("stand-in base64");
        assert!(
            matches!(err, BindingError::InvalidAttribute { .. }),
            "{err}"
        );

        let fixed = SPEC_STRUCTURED.replace("... base64 encoded string ...", "3q2+7w==");
        let record = decode(Some(&h), &Bytes::from(fixed), LIMIT).expect("decodes");
        assert_eq!(record.id, "A234-1234-1234");
        assert_eq!(record.ty, "com.example.someevent");
        assert_eq!(record.source, "/mycontext");
        assert_eq!(
            record.datacontenttype.as_deref(),
            Some("application/vnd.apache.thrift.binary")
        );
        assert_eq!(record.data.as_deref(), Some(&[0xde, 0xad, 0xbe, 0xef][..]));
        assert_eq!(
            record.extensions,
            vec![
                ("comexampleextension1".to_string(), "value".to_string()),
                ("comexampleothervalue".to_string(), "5".to_string()),
            ]
        );
        let event = record.to_cloudevent();
        assert_eq!(
            event.time().map(|t| t.to_rfc3339()),
            Some("2018-04-05T17:31:00+00:00".into())
        );
    }

    #[test]
    fn structured_json_data_example_keeps_bytes() {
        // JSON format spec example with JSON data.
        let body = r#"{"specversion":"1.0","type":"com.example.someevent","source":"/mycontext","subject":null,"id":"C234-1234-1234","time":"2018-04-05T17:31:00Z","comexampleextension1":"value","comexampleothervalue":5,"datacontenttype":"application/json","data":{"appinfoA":"abc","appinfoB":123,"appinfoC":true}}"#;
        let record = decode(
            None::<&Headers>,
            &Bytes::from_static(body.as_bytes()),
            LIMIT,
        )
        .expect("decodes");
        assert_eq!(
            record.data.as_deref(),
            Some(&br#"{"appinfoA":"abc","appinfoB":123,"appinfoC":true}"#[..])
        );
        assert_eq!(record.subject, None);
    }

    #[test]
    fn member_names_with_escapes_decode_like_plain_ones() {
        // Names are borrowed from the body unless an escape makes them differ from it.
        let plain = r#"{"specversion":"1.0","type":"t.x","source":"/s","id":"1","comexampleext":"v","data":{"a":1}}"#;
        let escaped = r#"{"spec\u0076ersion":"1.0","typ\u0065":"t.x","source":"/s","\u0069d":"1","comexample\u0065xt":"v","dat\u0061":{"a":1}}"#;
        let plain = decode(
            None::<&Headers>,
            &Bytes::from_static(plain.as_bytes()),
            LIMIT,
        )
        .expect("plain decodes");
        let escaped = decode(
            None::<&Headers>,
            &Bytes::from_static(escaped.as_bytes()),
            LIMIT,
        )
        .expect("escaped decodes");
        assert_eq!(escaped, plain);
        assert!(
            escaped
                .all_extensions()
                .any(|(name, value)| (name, value) == ("comexampleext", "v"))
        );
    }
    #[test]
    fn binary_mode_percent_encodes_and_round_trips() {
        let record = EventRecord {
            id: "id 1%\"ü".into(),
            source: "/my context".into(),
            ty: "com.example.someevent".into(),
            subject: Some("x".into()),
            time: Some("2018-04-05T17:31:00.123Z".parse().expect("time")),
            datacontenttype: Some(JSON.into()),
            dataschema: Some("urn:x".into()),
            correlation_id: Some("c".into()),
            causation_id: Some("p".into()),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            signature: None,
            extensions: vec![("other".into(), "a b".into())],
            data: Some(Bytes::from_static(b"{\"k\": 1}")),
        };
        let (h, body) = encode(&record, ContentMode::Binary, LIMIT).expect("encodes");
        assert_eq!(h.get("ce-id"), Some("id%201%25%22%C3%BC"));
        assert_eq!(h.get("Content-Type"), Some(JSON));
        assert_eq!(decode(Some(&h), &body, LIMIT).expect("decodes"), record);

        let (h, body) = encode(&record, ContentMode::Structured, LIMIT).expect("encodes");
        assert_eq!(h.get("Content-Type"), Some(STRUCTURED_CONTENT_TYPE));
        assert_eq!(decode(Some(&h), &body, LIMIT).expect("decodes"), record);
    }

    #[test]
    fn http_binding_style_binary_example_decodes() {
        // The HTTP binding's binary example, carried in NATS headers.
        let mut h = Headers::new();
        h.insert("ce-specversion", "1.0");
        h.insert("ce-type", "com.example.someevent");
        h.insert("ce-time", "2018-04-05T03:56:24Z");
        h.insert("ce-id", "1234-1234-1234");
        h.insert("ce-source", "/mycontext/subcontext");
        h.insert("Content-Type", "application/json; charset=utf-8");
        let body = Bytes::from_static(b"{\"x\":1}");
        let record = decode(Some(&h), &body, LIMIT).expect("decodes");
        assert_eq!(record.source, "/mycontext/subcontext");
        assert!(record.data_is_json());
    }

    #[test]
    fn typed_errors_for_bad_input() {
        let no_headers = decode(None::<&Headers>, &Bytes::from_static(b"\x00\x01"), LIMIT);
        assert_eq!(
            no_headers,
            Err(BindingError::MissingAttribute("specversion"))
        );
        let mut h = Headers::new();
        h.insert("Content-Type", STRUCTURED_CONTENT_TYPE);
        let malformed = decode(Some(&h), &Bytes::from_static(b"{not json"), LIMIT);
        assert!(matches!(malformed, Err(BindingError::Malformed(_))));
        let wrong = decode(
            Some(&h),
            &Bytes::from_static(br#"{"specversion":"0.3","id":"1","source":"s","type":"t"}"#),
            LIMIT,
        );
        assert_eq!(wrong, Err(BindingError::WrongSpecVersion("0.3".into())));
        let missing = decode(
            Some(&h),
            &Bytes::from_static(br#"{"specversion":"1.0","id":"1","source":"s"}"#),
            LIMIT,
        );
        assert_eq!(missing, Err(BindingError::MissingAttribute("type")));
        let big = Bytes::from(vec![b'x'; 100]);
        assert!(matches!(
            decode(Some(&h), &big, 50),
            Err(BindingError::Oversized { size, limit: 50 }) if size > 100
        ));
    }

    proptest::proptest! {
        #[test]
        fn attribute_strings_are_written_as_serde_json_writes_them(text in ".*") {
            let mut out = Vec::new();
            json_string_into(&mut out, &text);
            proptest::prop_assert_eq!(out, serde_json::to_vec(&text).expect("a string"));
            let raw: Box<RawValue> = serde_json::from_str(&serde_json::to_string(&text).expect("a string")).expect("raw");
            proptest::prop_assert_eq!(json_string(&raw), Some(text));
        }
    }
}
