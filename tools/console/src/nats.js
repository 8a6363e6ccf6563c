// The page's own NATS connection: the realm's log followed over WebSocket with read-only
// credentials, and the live plane's heartbeats.
import { wsconnect, credsAuthenticator, createInbox } from "@nats-io/nats-core";
import { jetstream } from "@nats-io/jetstream";

/** The claims of a creds file's user JWT (not verified here: the server does that). */
export function credsClaims(creds) {
  const m = /-----BEGIN NATS USER JWT-----\s*([^\s-][^\s]*)\s*------END NATS USER JWT------/.exec(creds);
  if (!m) return null;
  try {
    const payload = m[1].split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload + "=".repeat((4 - (payload.length % 4)) % 4)));
  } catch {
    return null;
  }
}

/** Connects as the page: the observer credentials murmur up issued (or none, for a server
 * without accounts). In operator mode a user's inbox is `_INBOX.<its key>`. */
export async function connect(config) {
  const opts = { servers: config.websocket_url, name: "murmur-console", maxReconnectAttempts: -1 };
  if (config.observer_creds) {
    opts.authenticator = credsAuthenticator(new TextEncoder().encode(config.observer_creds));
    const claims = credsClaims(config.observer_creds);
    if (claims?.sub) opts.inboxPrefix = `_INBOX.${claims.sub}`;
  }
  return wsconnect(opts);
}

const decoder = new TextDecoder();
const header = (m, name) => (m.headers ? m.headers.get(name) : "") || "";

/** A stored message as a row of the Events view. Its CloudEvent attributes are read when
 * first asked for: a flood of ten thousand events a second shows only a screenful, so
 * decoding every body as it arrives is work nobody sees (a filter asks each row once). */
class HistoryRow {
  constructor(m) {
    this.seq = m.seq;
    this.subject = m.subject;
    this.id = header(m, "Nats-Msg-Id");
    this.time = new Date(Math.floor(m.info.timestampNanos / 1e6));
    this.size = m.data.length;
    this.attributes = null;
    this.body = null;
    // Binary mode carries the attributes in ce- headers; structured mode (murmur's default)
    // in the JSON body, kept until it is read.
    const type = header(m, "ce-type");
    if (type) this.attributes = { type, source: header(m, "ce-source") };
    else if (header(m, "Content-Type").startsWith("application/cloudevents+json")) this.body = m.data;
    else this.attributes = { type: "", source: "" };
  }

  get type() {
    return this.read().type;
  }

  get source() {
    return this.read().source;
  }

  read() {
    if (!this.attributes) {
      try {
        const body = JSON.parse(decoder.decode(this.body));
        this.attributes = { type: body.type, source: body.source };
      } catch {
        // Shown without a type; opening it shows why it is not an event.
        this.attributes = { type: "", source: "" };
      }
      this.body = null;
    }
    return this.attributes;
  }
}

/** Follows the history stream from `startSeq` (ordered consumer), calling `onEvent` with a
 * row per stored message; returns a stop function. */
export async function followHistory(nc, config, startSeq, onEvent) {
  const js = jetstream(nc);
  const consumer = await js.consumers.get(config.history_stream, {
    filter_subjects: [`murmur.v1.${config.realm}.>`],
    deliver_policy: startSeq > 1 ? "by_start_sequence" : "all",
    ...(startSeq > 1 ? { opt_start_seq: startSeq } : {}),
  });
  const messages = await consumer.consume({ max_messages: 4000 });
  (async () => {
    for await (const m of messages) onEvent(new HistoryRow(m));
  })().catch((e) => console.warn("history follow ended", e));
  return () => messages.stop();
}

/** The last sequence of the history stream (to start the tail near its end). */
export async function lastSequence(nc, config) {
  const js = jetstream(nc);
  const jsm = await js.jetstreamManager();
  const info = await jsm.streams.info(config.history_stream);
  return info.state.last_seq;
}

/** Calls `onBeat(agentKey, beat)` for each heartbeat on the live plane. */
export function followHeartbeats(nc, config, onBeat) {
  const sub = nc.subscribe(`murmur.v1.${config.realm}.live.agent.*.heartbeat`);
  (async () => {
    for await (const m of sub) {
      const key = m.subject.split(".")[5];
      let data = {};
      try {
        data = JSON.parse(new TextDecoder().decode(m.data));
      } catch {
        /* a heartbeat that is not JSON is still a heartbeat */
      }
      onBeat(key, data);
    }
  })();
  return () => sub.unsubscribe();
}

/** Every agent's live counters: a `$SRV.STATS` scatter-gather (as `murmur status` asks),
 * the replies collected for `waitMs`, keyed by agent id. */
export async function agentStats(nc, config, waitMs = 500) {
  const claims = config.observer_creds ? credsClaims(config.observer_creds) : null;
  const inbox = createInbox(claims?.sub ? `_INBOX.${claims.sub}` : "_INBOX");
  const sub = nc.subscribe(inbox);
  const stats = new Map();
  const done = (async () => {
    for await (const m of sub) {
      try {
        for (const endpoint of JSON.parse(decoder.decode(m.data)).endpoints || []) {
          if (endpoint.data?.agent) stats.set(endpoint.data.agent, endpoint.data);
        }
      } catch {
        /* not a micro service's stats: not ours */
      }
    }
  })();
  nc.publish("$SRV.STATS", new Uint8Array(), { reply: inbox });
  await new Promise((r) => setTimeout(r, waitMs));
  sub.unsubscribe();
  await done;
  return stats;
}
