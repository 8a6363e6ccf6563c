// An automerge-repo peer of a murmur realm: opens a knowledge document through a memory
// agent's gateway (NatsNetworkAdapter), prints its facts, and with --set edits one field of a
// fact as this peer (its nkey is the Automerge actor, as murmur's layout requires).
//
//   node peer.mjs --servers nats://127.0.0.1:4222 --creds peer.creds --realm acme \
//     --gateway UMEMORY... --url automerge:... [--set FACT FIELD VALUE] [--timeout 30]
//
// With --wait-stdin it waits for a line on standard input between reading and editing.
// Prints one JSON line per step ({"facts":…}, {"accepted":…} or {"refused":…}); exits 0
// when it read (and, with --set, the gateway took the edit), 3 when the edit was refused.
import * as A from "@automerge/automerge";
import { Repo } from "@automerge/automerge-repo";
import { credsAuthenticator } from "@nats-io/nats-core";
import { fromSeed } from "@nats-io/nkeys";
import { connect } from "@nats-io/transport-node";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { NatsNetworkAdapter } from "./nats-network-adapter.js";

const { values, positionals } = parseArgs({
  options: {
    servers: { type: "string" },
    creds: { type: "string" },
    seed: { type: "string" },
    realm: { type: "string" },
    gateway: { type: "string" },
    url: { type: "string" },
    set: { type: "boolean" },
    "wait-stdin": { type: "boolean" },
    timeout: { type: "string", default: "30" },
  },
  allowPositionals: true,
});
for (const required of ["servers", "realm", "gateway", "url"]) {
  if (!values[required]) {
    console.error(`peer.mjs: --${required} is required (see the comment at the top)`);
    process.exit(2);
  }
}
const say = (line) => console.log(JSON.stringify(line));
const fail = (code, line) => {
  say(line);
  process.exit(code);
};
setTimeout(
  () => fail(4, { timeout: `nothing conclusive within ${values.timeout} s` }),
  Number(values.timeout) * 1000,
).unref();

let credsText;
let seed = values.seed;
if (values.creds) {
  credsText = readFileSync(values.creds, "utf8");
  seed = credsText.match(/-----BEGIN USER NKEY SEED-----\s*(\S+)/)?.[1];
}
if (!seed) fail(2, { error: "give --creds (a murmur .creds file) or --seed" });
const keyPair = fromSeed(new TextEncoder().encode(seed));
const key = keyPair.getPublicKey();

const nc = await connect({
  servers: values.servers,
  ...(credsText ? { authenticator: credsAuthenticator(new TextEncoder().encode(credsText)) } : {}),
});
const refusals = [];
const adapter = new NatsNetworkAdapter({
  nc,
  realm: values.realm,
  gateway: values.gateway,
  keyPair,
  onError: (reason) => refusals.push(reason),
  onGone: () => say({ waiting: "no gateway answers; joining again each second" }),
});
const repo = new Repo({ network: [adapter], peerId: `murmur-peer-${key.slice(0, 12)}` });

const opening = performance.now();
const handle = await repo.find(values.url);
const openMs = Math.round(performance.now() - opening);
// murmur writes its values as plain (immutable) Automerge strings, not collaborative text.
const text = (value) => (A.isImmutableString(value) ? value.val : value);
const facts = (doc) =>
  Object.entries(doc)
    .filter(([, fact]) => typeof text(fact?.core) === "string")
    .map(([id, fact]) => ({
      id,
      ...JSON.parse(text(fact.core)),
      fields: Object.keys(fact).filter((k) => k.startsWith("f:")),
    }));
say({ peer: key, open_ms: openMs, facts: facts(handle.doc()) });

if (values["wait-stdin"]) {
  await new Promise((resolve) => process.stdin.once("data", resolve));
  process.stdin.pause();
}

if (values.set) {
  const [fact, field, value] = positionals;
  if (!fact || !field || value === undefined) fail(2, { error: "--set needs FACT FIELD VALUE" });
  // murmur's layout: this peer's changes carry its key (and a session nonce) as the actor.
  const actor = Buffer.concat([
    Buffer.from(key, "utf8"),
    Buffer.from(crypto.getRandomValues(new Uint8Array(8))),
  ]).toString("hex");
  const stamped = JSON.stringify({ value: { type: "text", value }, at: new Date().toISOString() });
  handle.update((doc) =>
    A.change(A.clone(doc, { actor }), (d) => {
      d[fact][`f:${field}`] = new A.ImmutableString(stamped);
    }),
  );
  const ours = A.getHeads(handle.doc());
  const editing = performance.now();
  await new Promise((resolve) => {
    const check = () => {
      if (refusals.length > 0) fail(3, { refused: refusals[0] });
    };
    adapter.on("message", (message) => {
      check();
      if (message.type !== "sync" || !message.data) return;
      const { heads } = A.decodeSyncMessage(message.data);
      if (ours.every((h) => heads.includes(h))) resolve();
    });
    const timer = setInterval(check, 50);
    timer.unref();
  });
  const ms = Math.round(performance.now() - editing);
  say({ accepted: { fact, field, value, heads: ours, ms } });
}
repo.shutdown?.();
await nc.close();
process.exit(0);
