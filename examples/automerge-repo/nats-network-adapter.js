// An automerge-repo NetworkAdapter that reaches a murmur memory agent's gateway over NATS.
//
// One connection per (peer key, session): every frame is automerge-repo's CBOR message,
// signed with the peer's nkey, published on `murmur.v1.{realm}.rpc.knowledge.{gateway}.repo`;
// the gateway answers on `_INBOX.{peer key}.repo.{session}`, which only this peer may
// subscribe to, and its frames are checked against the gateway's key. The signed bytes are
// murmur's detached signature input: "murmur-detached-v1\n" + session + "\nrepo\n" + frame.
import { NetworkAdapter, cbor } from "@automerge/automerge-repo";
import { headers } from "@nats-io/nats-core";
import { fromPublic } from "@nats-io/nkeys";

const CONTEXT = new TextEncoder().encode("murmur-detached-v1\n");
const SCHEME = "ed25519:";

function signedBytes(session, frame) {
  const head = new TextEncoder().encode(`${session}\nrepo\n`);
  const out = new Uint8Array(CONTEXT.length + head.length + frame.length);
  out.set(CONTEXT, 0);
  out.set(head, CONTEXT.length);
  out.set(frame, CONTEXT.length + head.length);
  return out;
}

function base64url(bytes) {
  return Buffer.from(bytes).toString("base64url");
}

export class NatsNetworkAdapter extends NetworkAdapter {
  /**
   * @param {object} options
   * @param {import("@nats-io/nats-core").NatsConnection} options.nc a connection made with
   *   the peer's own credentials
   * @param {string} options.realm the murmur realm
   * @param {string} options.gateway the memory agent's public key (`murmur agents ls`)
   * @param {import("@nats-io/nkeys").KeyPair} options.keyPair the peer's nkey (its creds' seed)
   * @param {(reason: string) => void} [options.onError] told when the gateway refuses a frame
   * @param {() => void} [options.onGone] told when no gateway answers (it joins again each second)
   */
  constructor({ nc, realm, gateway, keyPair, onError, onGone }) {
    super();
    this.nc = nc;
    this.realm = realm;
    this.gateway = gateway;
    this.gatewayKey = fromPublic(gateway);
    this.keyPair = keyPair;
    this.key = keyPair.getPublicKey();
    this.onError = onError ?? ((reason) => console.error(`murmur gateway: ${reason}`));
    this.onGone = onGone ?? (() => {});
    this.remote = undefined;
    this.ready = false;
    this.readyPromise = new Promise((resolve) => (this.resolveReady = resolve));
  }

  isReady() {
    return this.ready;
  }

  whenReady() {
    return this.readyPromise;
  }

  connect(peerId, peerMetadata) {
    this.peerId = peerId;
    this.peerMetadata = peerMetadata;
    this.subject = `murmur.v1.${this.realm}.rpc.knowledge.${this.gateway}.repo`;
    this.join();
  }

  // A fresh session and a `join`; again whenever the gateway no longer knows the session
  // (it restarted, or forgot an idle connection), after which the repo syncs anew.
  join() {
    this.sub?.unsubscribe();
    this.session = `s${Buffer.from(crypto.getRandomValues(new Uint8Array(12))).toString("hex")}`;
    this.inbox = `_INBOX.${this.key}.repo.${this.session}`;
    const sub = this.nc.subscribe(this.inbox);
    this.sub = sub;
    const session = this.session;
    (async () => {
      for await (const m of sub) this.receive(m, session);
    })();
    this.sendFrame({
      type: "join",
      senderId: this.peerId,
      peerMetadata: this.peerMetadata ?? {},
      supportedProtocolVersions: ["1"],
    });
  }

  gatewayGone() {
    if (this.retry) return;
    if (!this.gone) this.onGone();
    this.gone = true;
    if (this.remote) this.emit("peer-disconnected", { peerId: this.remote });
    this.remote = undefined;
    this.ready = false;
    this.retry = setTimeout(() => {
      this.retry = undefined;
      this.join();
    }, 1000);
  }

  rejoin() {
    if (this.remote) this.emit("peer-disconnected", { peerId: this.remote });
    this.remote = undefined;
    this.join();
  }

  receive(m, session) {
    if (session !== this.session) return;
    // Frames go out with this inbox as their reply subject, so the server answers 503 "no
    // responders" when no gateway listens (restarting): the frame is lost, so join again
    // once one does.
    if (m.headers?.code === 503) {
      this.gatewayGone();
      return;
    }
    const signer = m.headers?.get("Murmur-Signer");
    const signature = m.headers?.get("Murmur-Signature") ?? "";
    if (signer !== this.gateway || !signature.startsWith(SCHEME)) return;
    const sig = Buffer.from(signature.slice(SCHEME.length), "base64url");
    if (!this.gatewayKey.verify(signedBytes(this.session, m.data), sig)) return;
    const message = cbor.decode(m.data);
    if (message.data) message.data = new Uint8Array(message.data);
    switch (message.type) {
      case "peer":
        this.gone = false;
        this.remote = message.senderId;
        this.ready = true;
        this.resolveReady();
        this.emit("peer-candidate", {
          peerId: message.senderId,
          peerMetadata: message.peerMetadata ?? {},
        });
        break;
      case "error":
        if (String(message.message).startsWith("unknown connection")) this.rejoin();
        else this.onError(message.message);
        break;
      default:
        this.emit("message", message);
    }
  }

  send(message) {
    if (!this.remote || message.targetId !== this.remote) return;
    this.sendFrame(message);
  }

  sendFrame(message) {
    const frame = cbor.encode(message);
    const h = headers();
    h.set("Murmur-Signer", this.key);
    h.set("Murmur-Sync-Session", this.session);
    h.set("Murmur-Signature", SCHEME + base64url(this.keyPair.sign(signedBytes(this.session, frame))));
    this.nc.publish(this.subject, frame, { headers: h, reply: this.inbox });
  }

  disconnect() {
    clearTimeout(this.retry);
    if (this.remote) this.sendFrame({ type: "leave", senderId: this.peerId });
    this.sub?.unsubscribe();
    if (this.remote) this.emit("peer-disconnected", { peerId: this.remote });
    this.remote = undefined;
    this.ready = false;
    this.emit("close");
  }
}
