#!/usr/bin/env python3
"""Checks the reference agent's envelope code against the example bytes of
docs/protocol.md (computed there from murmur's Rust code): the same signing bytes, the same
signature from the same seed, and every batch signature verifying.

    .venv/bin/python examples/python/check_protocol_examples.py docs/protocol.md
"""

import json
import re
import sys

import murmur_agent as m


def block(doc: str, name: str) -> str:
    found = re.search(rf"<!-- generated: {name} -->\n```text\n(.*?)```", doc, re.S)
    if not found:
        raise SystemExit(f"no generated {name!r} block in the document")
    return found.group(1)


def field(text: str, label: str) -> str:
    found = re.search(rf"^{re.escape(label)}\s+(\S+)", text, re.M)
    if not found:
        raise SystemExit(f"no {label!r} line in the example")
    return found.group(1)


def main() -> None:
    doc = open(sys.argv[1], encoding="utf-8").read()
    single = block(doc, "single")
    me = m.Identity(field(single, "seed (example)"))
    assert me.public_key == field(single, "source"), "the seed gives another public key"
    subject = field(single, "NATS subject")
    body = single.split("application/cloudevents+json, body:\n", 1)[1].splitlines()[0]
    raw = m.raw_members(body)
    attrs = {k: json.loads(v) for k, v in raw.items() if k != "data" and v.startswith('"')}
    data = raw["data"].encode()

    signed = m.signing_bytes(subject, attrs, data)
    dump = re.findall(r"^[0-9a-f]{4}  ((?:[0-9a-f]{2} ?)+)", single, re.M)
    expected = bytes.fromhex("".join(line.replace(" ", "") for line in dump))
    assert signed == expected, f"signing bytes differ:\n{signed!r}\n{expected!r}"
    signature = "ed25519:" + m.b64url(me.sign(signed))
    assert signature == attrs["murmursig"], f"{signature} != {attrs['murmursig']}"
    m.verify_signature(subject, attrs, data)

    # The batch: the same attributes but type, id and data, each verified by its path.
    batch = block(doc, "batch")
    sigs = re.findall(r"^(ed25519-merkle:\S+)$", batch, re.M)
    subjects = re.findall(r"^leaf \d+\s+\S+\s+\((\S+)\)$", batch, re.M)
    assert len(sigs) == len(subjects) == 3, batch
    for i, (sig, subj) in enumerate(zip(sigs, subjects)):
        event = {**attrs, "type": "dev.murmur.task.started", "subject": subj.split(".")[5],
                 "id": f"01938a3c-0000-7000-8000-00000000001{i}", "murmursig": sig}
        m.verify_signature(subj, event, b'{"v":1,"attempt":1}')
        try:
            m.verify_signature(subj, event, b'{"v":1,"attempt":2}')
        except Exception:  # noqa: BLE001 - a changed event must not verify
            pass
        else:
            raise AssertionError("a tampered batch member verified")
    print(f"protocol examples check out: {len(signed)} signing bytes, 1 signature, "
          f"{len(sigs)} batch paths")


if __name__ == "__main__":
    main()
