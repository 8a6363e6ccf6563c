// The browser as a murmur participant: a compute agent with its own nkey (generated here;
// the seed never leaves the page), enrolled as a worker by an operator's credentials, its
// events sealed with the same canonical bytes as the Rust side (envelope.js). It joins,
// heartbeats, takes the `compute.js` tasks the coordinator assigns it (verifying the
// coordinator's signature, Merkle batch signatures included), runs each in a Web Worker
// with a time limit, and reports the result with the expected-sequence writes the task fold
// relies on.
import { wsconnect, jwtAuthenticator, headers as natsHeaders } from "@nats-io/nats-core";
import { jetstream } from "@nats-io/jetstream";
import { createUser, fromPublic } from "@nats-io/nkeys";
import { seal, signingBytes, withDefaults } from "./envelope.js";
import { post } from "./api.js";

/** The capability a browser agent offers. */
export const CAPABILITY = "compute.js";
/** Longest a task's code may run when the task does not say (ms). */
export const DEFAULT_TIME_LIMIT_MS = 2000;
/** Longest a task may ask for (ms). */
export const MAX_TIME_LIMIT_MS = 60000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The top-level members of a JSON object as their raw text (the signature covers the data
 * bytes exactly as sent, so they must not be re-serialized). */
export function rawMembers(text) {
  const out = {};
  let i = text.indexOf("{") + 1;
  const ws = () => {
    while (" \t\r\n".includes(text[i])) i++;
  };
  const skipString = () => {
    i++;
    while (text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
    i++;
  };
  for (;;) {
    ws();
    if (text[i] === "}") return out;
    const keyStart = i;
    skipString();
    const key = JSON.parse(text.slice(keyStart, i));
    ws();
    i++; // ':'
    ws();
    const start = i;
    let depth = 0;
    for (;;) {
      const c = text[i];
      if (c === '"') {
        skipString();
        if (depth === 0) break;
        continue;
      }
      if (c === "{" || c === "[") depth++;
      else if (c === "}" || c === "]") {
        if (depth === 0) break;
        depth--;
        if (depth === 0) {
          i++;
          break;
        }
      } else if (c === "," && depth === 0) break;
      i++;
    }
    out[key] = text.slice(start, i);
    ws();
    if (text[i] === ",") i++;
  }
}

const unb64url = (s) => {
  const b = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (s.length % 4)) % 4));
  return Uint8Array.from(b, (c) => c.charCodeAt(0));
};
const sha256 = async (...parts) => {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", all));
};

/** Throws unless the event's `murmursig` verifies against its `source`: `ed25519:` or an
 * `ed25519-merkle:` batch signature (leaf = H(0 ‖ bytes), node = H(1 ‖ l ‖ r), root signed
 * as "murmur-merkle-v1" ‖ root). */
export async function verifyEvent(natsSubject, body) {
  const raw = rawMembers(body);
  const written = {};
  for (const [k, v] of Object.entries(raw)) if (k !== "data" && v.startsWith('"')) written[k] = JSON.parse(v);
  const attrs = withDefaults(written);
  const data = encoder.encode(raw.data ?? "");
  const signed = signingBytes(natsSubject, { ...attrs, data });
  const key = fromPublic(attrs.source);
  const sig = attrs.murmursig ?? "";
  if (sig.startsWith("ed25519-merkle:")) {
    const [root, index, path] = sig.slice("ed25519-merkle:".length).split(":");
    let node = await sha256(new Uint8Array([0]), signed);
    let idx = Number(index);
    for (const sibling of path.split(".").filter(Boolean)) {
      const h = unb64url(sibling);
      node = idx % 2 === 0 ? await sha256(new Uint8Array([1]), node, h) : await sha256(new Uint8Array([1]), h, node);
      idx = Math.floor(idx / 2);
    }
    if (idx !== 0 || !key.verify(new Uint8Array([...encoder.encode("murmur-merkle-v1"), ...node]), unb64url(root)))
      throw new Error(`batch signature of ${attrs.id} does not verify`);
  } else if (sig.startsWith("ed25519:")) {
    if (!key.verify(signed, unb64url(sig.slice(8)))) throw new Error(`signature of ${attrs.id} does not verify`);
  } else throw new Error(`event ${attrs.id} is unsigned`);
  return { attrs, payload: JSON.parse(raw.data ?? "{}") };
}

const WORKER = `onmessage = async (e) => {
  postMessage({ started: true });
  try {
    const run = new Function("input", e.data.code);
    const value = await run(e.data.input);
    postMessage({ ok: true, value: value === undefined ? null : value });
  } catch (err) {
    postMessage({ ok: false, error: String((err && err.message) || err) });
  }
};`;

/** Longest a Web Worker may take to start before the attempt fails (ms). */
const WORKER_START_MS = 10000;

/** Runs `code` (a function body over `input`) in a Web Worker; the time limit counts from
 * when the code starts (a busy page can be slow to start a worker). */
export function runCompute(code, input, limitMs) {
  const url = URL.createObjectURL(new Blob([WORKER], { type: "text/javascript" }));
  const worker = new Worker(url);
  let began = performance.now();
  return new Promise((resolve) => {
    const stop = (outcome) => {
      clearTimeout(timer);
      worker.terminate();
      resolve(outcome);
    };
    let timer = setTimeout(() => stop({ ok: false, error: `the Web Worker did not start within ${WORKER_START_MS} ms` }), WORKER_START_MS);
    worker.onmessage = (e) => {
      if (e.data.started) {
        clearTimeout(timer);
        began = performance.now();
        timer = setTimeout(() => stop({ ok: false, error: `time limit of ${limitMs} ms exceeded` }), limitMs);
        return;
      }
      stop({ ...e.data, ms: Math.round(performance.now() - began) });
    };
    worker.onerror = (e) => stop({ ok: false, error: e.message || "the code could not run" });
    worker.postMessage({ code, input });
  }).finally(() => URL.revokeObjectURL(url));
}

/** Joins the realm as a compute agent named `name`, enrolled with the operator's `creds`;
 * `onLog(line)` hears what it does. Returns { key, stop }. */
export async function joinAsAgent(config, creds, name, onLog) {
  const kp = createUser();
  const key = kp.getPublicKey();
  const { jwt } = await post("/api/participants", { creds, public_key: key, name });
  const nc = await wsconnect({
    servers: config.websocket_url,
    authenticator: jwtAuthenticator(jwt, kp.getSeed()),
    inboxPrefix: `_INBOX.${key}`,
    name: `murmur-browser-${name}`,
  });
  const js = jetstream(nc);
  const realm = config.realm;
  const hdrs = (h) => {
    const out = natsHeaders();
    for (const [k, v] of Object.entries(h)) out.set(k, v);
    return out;
  };
  const store = async (sealed, expect) =>
    js.publish(sealed.subject, sealed.body, {
      headers: hdrs(sealed.headers),
      msgID: sealed.headers["Nats-Msg-Id"],
      ...(expect ? { expect: { lastSubjectSequence: expect[0], lastSubjectSequenceSubject: expect[1] } } : {}),
    });
  const event = (domain, aggregate, verb, payload, cause) => ({
    realm,
    domain,
    aggregate,
    verb,
    type: `dev.murmur.${domain}.${verb}`,
    payload,
    ...(cause ? { correlationid: cause.correlationid ?? cause.id, causationid: cause.id } : {}),
  });
  // Follow before joining, so nothing addressed to the new agent is missed.
  const consumer = await js.consumers.get(config.history_stream, {
    filter_subjects: [`murmur.v1.${realm}.evt.task.*.assigned`],
    deliver_policy: "new",
  });
  const messages = await consumer.consume();
  const joined = seal(
    kp,
    event("agent", key, "joined", {
      v: 2,
      name,
      kind: "browser",
      capabilities: [CAPABILITY],
      labels: { runtime: "browser", user_agent: navigator.userAgent.split(" ").pop() },
      agent_version: "console-0.1",
      hardware: { cores: navigator.hardwareConcurrency || 1, memory_mib: Math.round((navigator.deviceMemory || 0) * 1024) },
      slots: 1,
      handles: ["dev.murmur.task.assigned", "dev.murmur.task.cancelled"],
    })
  );
  const ack = await store(joined);
  onLog(`joined as ${key} at log position ${ack.seq}`);
  let running = 0;
  const beat = () => {
    const hb = seal(kp, event("agent", key, "heartbeat", { v: 1, interval_ms: 1000, load: 0, queue_depth: running }));
    nc.publish(hb.subject, hb.body, { headers: hdrs(hb.headers) });
  };
  beat();
  const beats = setInterval(beat, 1000);
  const attempt = async (m) => {
    let assigned;
    try {
      assigned = await verifyEvent(m.subject, decoder.decode(m.data));
    } catch (e) {
      onLog(`refused an assignment: ${e.message}`);
      return;
    }
    if (assigned.payload.agent !== key) return;
    const task = assigned.attrs.subject;
    const attemptNo = assigned.payload.attempt;
    const onTask = `murmur.v1.${realm}.evt.task.${task}.*`;
    const work = assigned.payload.work;
    if (!work) {
      onLog(`task ${task}: its input was too large to carry; a browser agent does not read it back`);
      return;
    }
    const cause = { id: assigned.attrs.id, correlationid: assigned.attrs.correlationid };
    const started = seal(kp, event("task", task, "started", { v: 1, attempt: attemptNo }, cause));
    let startedAck;
    try {
      startedAck = await store(started, [m.seq, onTask]);
    } catch (e) {
      onLog(`task ${task} not started: ${e.message}`);
      return;
    }
    running++;
    const input = work.input ?? {};
    const limit = Math.min(Number(input.timeout_ms) || DEFAULT_TIME_LIMIT_MS, MAX_TIME_LIMIT_MS);
    const progress = seal(kp, event("task", task, "progress", { v: 1, attempt: attemptNo, message: "running in a Web Worker" }));
    nc.publish(progress.subject, progress.body, { headers: hdrs(progress.headers) });
    const outcome =
      typeof input.code === "string"
        ? await runCompute(input.code, input.input ?? null, limit)
        : { ok: false, error: 'compute.js needs {"code": "<function body over input>", "input": …}' };
    running--;
    const startedCause = { id: started.headers["Nats-Msg-Id"], correlationid: cause.correlationid };
    const result = outcome.ok
      ? seal(kp, event("task", task, "completed", { v: 1, output: { value: outcome.value, ms: outcome.ms, by: "browser" }, attempt: attemptNo }, startedCause))
      : seal(kp, event("task", task, "failed", { v: 1, reason: outcome.error, attempt: attemptNo }, startedCause));
    try {
      const stored = await store(result, [startedAck.seq, onTask]);
      onLog(`task ${task}: ${outcome.ok ? `completed → ${JSON.stringify(outcome.value)}` : `failed: ${outcome.error}`} (log position ${stored.seq})`);
    } catch (e) {
      onLog(`task ${task}: result not stored: ${e.message}`);
    }
  };
  (async () => {
    for await (const m of messages) attempt(m);
  })().catch((e) => onLog(`assignments ended: ${e.message}`));
  const stop = async () => {
    clearInterval(beats);
    messages.stop();
    await store(seal(kp, event("agent", key, "left", { v: 1, reason: "the page left" })));
    await nc.drain();
    onLog("left");
  };
  return { key, stop };
}
