// murmur's event envelope in JavaScript: the same canonical signing bytes as
// `EventRecord::signing_bytes` (subjects/src/envelope.rs) and the same structured-mode
// CloudEvent as the Rust binding writes, so an event sealed here verifies in every fold.
// A browser (or any JS) participant signs with its own nkey; nothing trusts `source` alone.

const encoder = new TextEncoder();

/** `time` as murmur writes it: RFC 3339 UTC with `Z`, fractional digits only when nonzero
 * (chrono's `SecondsFormat::AutoSi` for millisecond times). */
export function formatTime(date) {
  return date.toISOString().replace(".000Z", "Z");
}

/** The attributes as they count: murmur leaves out of the wire a `correlationid` equal to
 * the id, a `causationid` equal to the correlation id and `datacontenttype`
 * `application/json`. */
export function withDefaults(ev) {
  const correlationid = ev.correlationid ?? ev.id;
  return {
    ...ev,
    datacontenttype: ev.datacontenttype ?? "application/json",
    correlationid,
    causationid: ev.causationid ?? correlationid,
  };
}

/** The bytes an emitter signs: `murmur-sig-v1`, the NATS subject, id, source, type,
 * subject, time, datacontenttype, dataschema, correlationid, causationid, traceparent and
 * the data (defaults filled in, any other absent attribute empty), each prefixed with its
 * length as a little-endian u32. */
export function signingBytes(natsSubject, event) {
  const ev = withDefaults(event);
  const fields = [
    "murmur-sig-v1",
    natsSubject,
    ev.id,
    ev.source,
    ev.type,
    ev.subject ?? "",
    ev.time ?? "",
    ev.datacontenttype ?? "",
    ev.dataschema ?? "",
    ev.correlationid ?? "",
    ev.causationid ?? "",
    ev.traceparent ?? "",
    ev.data ?? "",
  ].map((f) => (typeof f === "string" ? encoder.encode(f) : f));
  const out = new Uint8Array(fields.reduce((n, f) => n + 4 + f.length, 0));
  const view = new DataView(out.buffer);
  let at = 0;
  for (const f of fields) {
    view.setUint32(at, f.length, true);
    out.set(f, at + 4);
    at += 4 + f.length;
  }
  return out;
}

const base64url = (bytes) => {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
};

/** A time-ordered id (UUID v7) for the event: its `Nats-Msg-Id`. */
export function eventId(now = Date.now()) {
  const b = crypto.getRandomValues(new Uint8Array(16));
  const ms = BigInt(now);
  for (let i = 0; i < 6; i++) b[i] = Number((ms >> BigInt(8 * (5 - i))) & 0xffn);
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * Seals one event as `keyPair` (an nkeys user key pair): returns the NATS subject, the headers
 * (`Content-Type`, `Nats-Msg-Id`) and the structured-mode body.
 * `event`: { realm, domain, aggregate, verb, type, payload, correlationid?, causationid?,
 * time? }; a root event (no correlation given) is its own correlation and causation.
 */
export function seal(keyPair, event) {
  const natsSubject = `murmur.v1.${event.realm}.evt.${event.domain}.${event.aggregate}.${event.verb}`;
  const id = event.id ?? eventId();
  const ev = {
    id,
    source: keyPair.getPublicKey(),
    type: event.type,
    subject: event.aggregate,
    time: formatTime(event.time ?? new Date()),
    datacontenttype: "application/json",
    correlationid: event.correlationid ?? id,
    causationid: event.causationid ?? id,
    data: JSON.stringify(event.payload),
  };
  const signature = `ed25519:${base64url(keyPair.sign(signingBytes(natsSubject, ev)))}`;
  const attributes = {
    specversion: "1.0",
    id: ev.id,
    source: ev.source,
    type: ev.type,
    subject: ev.subject,
    time: ev.time,
    datacontenttype: ev.datacontenttype,
    causationid: ev.causationid,
    correlationid: ev.correlationid,
    murmursig: signature,
  };
  const body = `${JSON.stringify(attributes).slice(0, -1)},"data":${ev.data}}`;
  return {
    subject: natsSubject,
    headers: { "Content-Type": "application/cloudevents+json", "Nats-Msg-Id": id },
    body,
  };
}
