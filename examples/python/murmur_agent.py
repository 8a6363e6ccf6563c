#!/usr/bin/env python3
"""murmur's reference agent in Python: the wire protocol of docs/protocol.md written a
second time, with nats-py, the `nkeys` package and the CloudEvents SDK, and nothing of
murmur's Rust code.

With worker credentials it joins, heartbeats, takes the tasks a coordinator assigns it
(verifying the coordinator's signature, Merkle batch signatures included), reports progress
on the live plane and completes each attempt signed, with the expected-sequence writes the
task fold relies on. With voter credentials it votes on the proposals that name it. It
leaves on SIGTERM/SIGINT.

    .venv/bin/python examples/python/murmur_agent.py --server nats://127.0.0.1:4222 \\
        --creds py-1.creds --realm acme --kind python --capability text.upper

Mint the credentials with `murmur creds issue --role worker --name py-1 -o py-1.creds`
(or `--role voter`). `--send-tampered` also publishes one event whose data was changed
after signing, to see the platform dead-letter it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import secrets
import signal
import struct
import sys
import time
from datetime import datetime, timezone
from typing import Any

import nacl.signing
import nats
import nkeys
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from nats.js.api import DeliverPolicy
from nats.js.errors import APIError

FORMAT = JSONFormat()
STRUCTURED = "application/cloudevents+json"
HISTORY_STREAM = "MURMUR_HISTORY"
ASSIGNED = "dev.murmur.task.assigned"
CANCELLED = "dev.murmur.task.cancelled"
OPENED = "dev.murmur.proposal.opened"
# The version each payload is written at (its `v` member), from murmur's catalog.
VERSIONS = {
    "dev.murmur.agent.joined": 2,
    "dev.murmur.agent.heartbeat": 1,
    "dev.murmur.agent.left": 1,
    "dev.murmur.agent.load_changed": 1,
    "dev.murmur.task.started": 1,
    "dev.murmur.task.progress": 1,
    "dev.murmur.task.completed": 1,
    "dev.murmur.task.failed": 1,
    "dev.murmur.proposal.vote_cast": 1,
}


# ---------------------------------------------------------------------------------------
# Identity: the nkey in the credentials file signs; public keys verify.


class Identity:
    """This participant: the user nkey whose seed is in its `.creds` file."""

    def __init__(self, seed: str):
        self.keys = nkeys.from_seed(seed.encode())
        self.public_key = self.keys.public_key.decode()

    @classmethod
    def from_creds(cls, path: str) -> "Identity":
        text = open(path, encoding="utf-8").read()
        marker = "-----BEGIN USER NKEY SEED-----"
        if marker not in text:
            raise SystemExit(f"{path}: no nkey seed in it; is it a .creds file?")
        seed = text.split(marker, 1)[1].strip().splitlines()[0].strip()
        return cls(seed)

    def sign(self, message: bytes) -> bytes:
        return self.keys.sign(message)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_key(public_key: str) -> nacl.signing.VerifyKey:
    """The Ed25519 key inside a user nkey (`U…`): base32 of prefix byte, 32 key bytes and a
    CRC-16 (little-endian), checked."""
    raw = base64.b32decode(public_key + "=" * (-len(public_key) % 8))
    if len(raw) != 35 or raw[0] != nkeys.PREFIX_BYTE_USER:
        raise ValueError(f"{public_key[:12]}… is not a user nkey")
    if nkeys.crc16(bytearray(raw[:33])) != int.from_bytes(raw[33:], "little"):
        raise ValueError(f"{public_key[:12]}… has a bad checksum")
    return nacl.signing.VerifyKey(bytes(raw[1:33]))


# ---------------------------------------------------------------------------------------
# The envelope: canonical signing bytes, signatures, and the raw members of a structured
# event (the signature covers the data bytes exactly as sent).

SIGNED_ATTRIBUTES = [
    "id", "source", "type", "subject", "time", "datacontenttype", "dataschema",
    "correlationid", "causationid", "traceparent",
]


def with_defaults(attrs: dict[str, str]) -> dict[str, str]:
    """The attributes as they count: murmur leaves out of the wire a `correlationid` equal
    to the id, a `causationid` equal to the correlation id and `datacontenttype`
    `application/json`."""
    out = {"datacontenttype": "application/json", **attrs}
    out.setdefault("correlationid", out["id"])
    out.setdefault("causationid", out["correlationid"])
    return out


def signing_bytes(nats_subject: str, attrs: dict[str, str], data: bytes) -> bytes:
    """`murmur-sig-v1`, the NATS subject, ten attributes (defaults filled in, any other
    absent one empty) and the data, each prefixed with its length as a little-endian u32."""
    attrs = with_defaults(attrs)
    fields = [b"murmur-sig-v1", nats_subject.encode()]
    fields += [attrs.get(name, "").encode() for name in SIGNED_ATTRIBUTES]
    fields.append(data)
    return b"".join(struct.pack("<I", len(f)) + f for f in fields)


def _leaf(signed: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + signed).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_signature(nats_subject: str, attrs: dict[str, str], data: bytes) -> None:
    """Raises unless `murmursig` verifies against the key named in `source`: a single
    `ed25519:` signature, or an `ed25519-merkle:` batch signature (root signature, leaf
    index, sibling hashes leaf to root)."""
    sig = attrs.get("murmursig", "")
    key = verify_key(attrs["source"])
    signed = signing_bytes(nats_subject, attrs, data)
    if sig.startswith("ed25519-merkle:"):
        root_sig, index, path = sig[len("ed25519-merkle:"):].split(":", 2)
        node, index = _leaf(signed), int(index)
        for sibling in filter(None, path.split(".")):
            h = unb64url(sibling)
            node = _node(node, h) if index % 2 == 0 else _node(h, node)
            index >>= 1
        if index != 0:
            raise ValueError("leaf index outside the tree")
        key.verify(b"murmur-merkle-v1" + node, unb64url(root_sig))
    elif sig.startswith("ed25519:"):
        key.verify(signed, unb64url(sig[len("ed25519:"):]))
    else:
        raise ValueError("unsigned or unknown signature scheme")


def raw_members(body: str) -> dict[str, str]:
    """The top-level members of a JSON object as their raw text (so `data` is the exact
    bytes that were signed, whatever their spacing)."""
    decoder = json.JSONDecoder()
    ws = " \t\r\n"
    i = 0
    while body[i] in ws:
        i += 1
    if body[i] != "{":
        raise ValueError("not a JSON object")
    i += 1
    out: dict[str, str] = {}
    while True:
        while body[i] in ws:
            i += 1
        if body[i] == "}":
            return out
        if body[i] != '"':
            raise ValueError("expected a member name")
        name, i = json.decoder.scanstring(body, i + 1)
        while body[i] in ws:
            i += 1
        i += 1  # ':'
        while body[i] in ws:
            i += 1
        _, end = decoder.raw_decode(body, i)
        out[name] = body[i:end]
        i = end
        while body[i] in ws:
            i += 1
        if body[i] == ",":
            i += 1


class Received:
    """One event read off NATS: its attributes, payload and stream sequence, verified."""

    def __init__(self, subject: str, headers: dict | None, body: bytes, sequence: int):
        if (headers or {}).get("Content-Type", STRUCTURED) != STRUCTURED:
            raise ValueError("only structured-mode events are read here")
        # The CloudEvents SDK checks it is a valid CloudEvent 1.0 ...
        self.event = FORMAT.read(None, body)
        # ... and the raw members give the bytes the signature covers.
        raw = raw_members(body.decode("utf-8"))
        self.attrs = with_defaults({
            k: json.loads(v) for k, v in raw.items() if k != "data" and v.startswith('"')
        })
        self.data = raw.get("data", "").encode("utf-8")
        verify_signature(subject, self.attrs, self.data)
        self.payload = json.loads(self.data) if self.data else {}
        self.subject = subject
        self.sequence = sequence

    @property
    def id(self) -> str:
        return self.attrs["id"]

    @property
    def correlation(self) -> str:
        return self.attrs.get("correlationid", self.id)

    @property
    def trace(self) -> str | None:
        return self.attrs.get("traceparent")


def uuid7() -> str:
    """A time-ordered event id (UUID v7)."""
    b = bytearray(secrets.token_bytes(16))
    b[0:6] = int(time.time() * 1000).to_bytes(6, "big")
    b[6] = (b[6] & 0x0F) | 0x70
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def traceparent(parent: str | None) -> str:
    """W3C trace context continuing `parent`'s trace with a new span, or a new trace."""
    trace = parent.split("-")[1] if parent and parent.count("-") == 3 else secrets.token_hex(16)
    return f"00-{trace}-{secrets.token_hex(8)}-01"


class Sealed:
    """An event signed by this participant: NATS subject, headers and structured body."""

    def __init__(self, me: Identity, realm: str, plane: str, ty: str, aggregate: str,
                 payload: dict[str, Any], cause: Received | Sealed | None = None):
        domain, verb = ty.removeprefix("dev.murmur.").split(".")
        self.subject = f"murmur.v1.{realm}.{plane}.{domain}.{aggregate}.{verb}"
        self.id = uuid7()
        attrs = {
            "id": self.id,
            "source": me.public_key,
            "type": ty,
            "subject": aggregate,
            # Whole seconds: murmur signs `time` as it writes it (RFC 3339, `Z`, fraction
            # digits only when nonzero), and the SDK writes a nonzero fraction as six.
            "time": datetime.now(timezone.utc).replace(microsecond=0),
            "datacontenttype": "application/json",
            "correlationid": cause.correlation if cause else self.id,
            "causationid": cause.id if cause else self.id,
            "traceparent": traceparent(cause.trace if cause else None),
        }
        self.correlation, self.trace = attrs["correlationid"], attrs["traceparent"]
        data = {"v": VERSIONS[ty], **payload}
        unsigned = FORMAT.write(CloudEvent(attrs, data))
        self.data = raw_members(unsigned.decode())["data"].encode()
        text_attrs = {**attrs, "time": attrs["time"].strftime("%Y-%m-%dT%H:%M:%SZ")}
        attrs["murmursig"] = "ed25519:" + b64url(
            me.sign(signing_bytes(self.subject, text_attrs, self.data)))
        self.body = FORMAT.write(CloudEvent(attrs, data))
        assert raw_members(self.body.decode())["data"].encode() == self.data
        self.headers = {"Content-Type": STRUCTURED, "Nats-Msg-Id": self.id}


# ---------------------------------------------------------------------------------------
# The agent.


def handle(capability: str, work: Any) -> Any:
    """The built-in handlers: what a task of each capability computes."""
    if capability == "text.upper":
        return {"text": str(work.get("text", "")).upper(), "by": "python"}
    if capability == "text.count":
        text = str(work.get("text", ""))
        return {"chars": len(text), "words": len(text.split()), "by": "python"}
    raise ValueError(f"no handler for capability {capability!r}")


class Agent:
    def __init__(self, args):
        self.args = args
        self.me = Identity.from_creds(args.creds)
        self.realm = args.realm
        self.running = 0
        self.stop = asyncio.Event()

    def seal(self, plane, ty, aggregate, payload, cause=None) -> Sealed:
        return Sealed(self.me, self.realm, plane, ty, aggregate, payload, cause)

    async def store(self, ev: Sealed, expect: tuple[int, str] | None = None) -> int:
        """Appends to the history stream; `expect` = (sequence, filter): the write lands only
        if the last event on `filter` is at `sequence` (optimistic concurrency)."""
        headers = dict(ev.headers)
        if expect:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expect[0])
            headers["Nats-Expected-Last-Subject-Sequence-Subject"] = expect[1]
        ack = await self.js.publish(ev.subject, ev.body, headers=headers, stream=HISTORY_STREAM)
        return ack.seq

    async def run(self) -> None:
        a = self.args
        self.nc = await nats.connect(
            a.server, user_credentials=a.creds, name=f"{a.name} (python)",
            inbox_prefix=f"_INBOX.{self.me.public_key}".encode(),
            max_reconnect_attempts=-1)
        self.js = self.nc.jetstream()
        # Follow before joining, so nothing addressed to the new agent is missed.
        follow = {"worker": [ASSIGNED], "voter": [OPENED]}[a.role]
        subs = []
        for ty in follow:
            domain, verb = ty.removeprefix("dev.murmur.").split(".")
            subs.append(await self.js.subscribe(
                f"murmur.v1.{self.realm}.evt.{domain}.*.{verb}", stream=HISTORY_STREAM,
                ordered_consumer=True, deliver_policy=DeliverPolicy.NEW,
                cb=self.on_event))
        handles = sorted(follow + ([CANCELLED] if a.role == "worker" else []))
        joined = self.seal("evt", "dev.murmur.agent.joined", self.me.public_key, {
            "name": a.name, "kind": a.kind, "capabilities": a.capability,
            "labels": dict(kv.split("=", 1) for kv in a.label), "agent_version": "python-0.1",
            "hardware": {"cores": os.cpu_count() or 1,
                         "memory_mib": os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20},
            "slots": 1, "handles": handles,
        })
        seq = await self.store(joined)
        print(self.me.public_key, flush=True)
        log(f"joined realm {self.realm} as {a.name} ({a.role}) at log position {seq}")
        beats = asyncio.create_task(self.heartbeats())
        if a.send_tampered:
            await self.send_tampered()
        await self.stop.wait()
        beats.cancel()
        for s in subs:
            await s.unsubscribe()
        await self.store(self.seal("evt", "dev.murmur.agent.left", self.me.public_key,
                                   {"reason": "shutdown"}))
        log("left")
        await self.nc.drain()

    async def heartbeats(self) -> None:
        while True:
            load = os.getloadavg()[0] / (os.cpu_count() or 1)
            beat = self.seal("live", "dev.murmur.agent.heartbeat", self.me.public_key, {
                "interval_ms": self.args.heartbeat_ms, "load": round(min(load, 1.0), 3),
                "queue_depth": self.running})
            await self.nc.publish(beat.subject, beat.body, headers=beat.headers)
            await asyncio.sleep(self.args.heartbeat_ms / 1000)

    async def send_tampered(self) -> None:
        ev = self.seal("evt", "dev.murmur.agent.load_changed", self.me.public_key,
                       {"load": 0.5, "queue_depth": 0, "lame_duck": False})
        body = ev.body.replace(b'"load": 0.5', b'"load": 0.0')
        assert body != ev.body
        ack = await self.js.publish(ev.subject, body, headers=ev.headers, stream=HISTORY_STREAM)
        log(f"tampered event {ev.id} stored at {ack.seq}")

    async def on_event(self, msg) -> None:
        try:
            ev = Received(msg.subject, msg.headers, msg.data, msg.metadata.sequence.stream)
        except Exception as e:  # noqa: BLE001 - refused input is reported, never fatal
            log(f"refused an event on {msg.subject}: {e}")
            return
        try:
            if ev.attrs["type"] == ASSIGNED and ev.payload.get("agent") == self.me.public_key:
                asyncio.create_task(self.attempt(ev))
            elif ev.attrs["type"] == OPENED and self.me.public_key in ev.payload.get("voters", {}):
                await self.vote(ev)
        except Exception as e:  # noqa: BLE001
            log(f"could not act on {ev.attrs['type']} {ev.id}: {e}")

    async def attempt(self, assigned: Received) -> None:
        task, attempt = assigned.attrs["subject"], assigned.payload["attempt"]
        on_task = f"murmur.v1.{self.realm}.evt.task.{task}.*"
        work = assigned.payload.get("work") or await self.read_work(task)
        # `started` lands only if nothing happened to the task since the assignment (an
        # attempt expired, cancelled or reassigned meanwhile is never started).
        started = self.seal("evt", "dev.murmur.task.started", task, {"attempt": attempt}, assigned)
        try:
            started_seq = await self.store(started, (assigned.sequence, on_task))
        except APIError as e:
            log(f"task {task} attempt {attempt} not started: {e.description}")
            return
        self.running += 1
        try:
            progress = self.seal("live", "dev.murmur.task.progress", task, {
                "attempt": attempt, "done": 0, "total": 1, "message": "running in python"})
            await self.nc.publish(progress.subject, progress.body, headers=progress.headers)
            try:
                output = handle(work.get("capability", ""), work.get("input", {}))
                result = self.seal("evt", "dev.murmur.task.completed", task,
                                   {"output": output, "attempt": attempt}, started)
            except Exception as e:  # noqa: BLE001 - a handler's error fails the attempt
                result = self.seal("evt", "dev.murmur.task.failed", task,
                                   {"reason": str(e), "attempt": attempt}, started)
            seq = await self.store(result, (started_seq, on_task))
            log(f"task {task} attempt {attempt}: {result.subject.rsplit('.', 1)[1]} at {seq}")
        except APIError as e:
            log(f"task {task} attempt {attempt}: result not stored: {e.description}")
        finally:
            self.running -= 1

    async def read_work(self, task: str) -> dict[str, Any]:
        """The submission, for an assignment too large to carry its work."""
        raw = await self.js.get_last_msg(
            HISTORY_STREAM, f"murmur.v1.{self.realm}.evt.task.{task}.submitted", direct=True)
        submitted = Received(raw.subject, raw.headers, raw.data, raw.seq)
        p = submitted.payload
        return {"input": p.get("input"), "capability": p.get("capability", ""),
                "submitter": submitted.attrs["source"]}

    async def vote(self, opened: Received) -> None:
        question = opened.payload.get("question", "")
        word = self.args.reject_if_contains
        choice = "reject" if word and word in question else "approve"
        reason = f"python voter: question {'mentions' if choice == 'reject' else 'lacks'} {word!r}" \
            if word else "python voter approves"
        cast = self.seal("evt", "dev.murmur.proposal.vote_cast", opened.attrs["subject"],
                         {"choice": choice, "reason": reason}, opened)
        seq = await self.store(cast)
        log(f"voted {choice} on {opened.attrs['subject']} at {seq}")


def log(line: str) -> None:
    print(f"[python agent] {line}", file=sys.stderr, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--creds", required=True, help="the participant's .creds file")
    p.add_argument("--realm", default="default")
    p.add_argument("--role", choices=["worker", "voter"], default="worker",
                   help="what the credentials allow: run tasks, or vote")
    p.add_argument("--name", default="python-agent")
    p.add_argument("--kind", default="python")
    p.add_argument("--capability", action="append", default=[],
                   help="offered capability (text.upper, text.count); repeat for several")
    p.add_argument("--label", action="append", default=[], help="KEY=VALUE; repeatable")
    p.add_argument("--heartbeat-ms", type=int, default=1000)
    p.add_argument("--reject-if-contains", default="", help="voters: reject questions with it")
    p.add_argument("--send-tampered", action="store_true",
                   help="also publish one event whose data changed after signing")
    args = p.parse_args()
    agent = Agent(args)
    loop = asyncio.new_event_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, agent.stop.set)
    loop.run_until_complete(agent.run())


if __name__ == "__main__":
    main()
