"""What the server pays for the deliveries a participant reads, by role.

A role that answers requests (NATS `allow_responses`) makes the server note every message
it delivers to that connection with a reply subject, and every JetStream delivery has one.
This reader holds ONE connection, as a long-running agent does, and reads the realm's
`task.submitted` events over and over through ordered consumers for SECONDS seconds,
printing the server's CPU and resident memory after each pass.

Usage: python responder_reads.py URL CREDS SERVER_PID SECONDS EVENTS
"""

import asyncio
import json
import os
import sys
import time

import nats

# The reference Python agent's identity: the key a participant connects and signs with.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples", "python"))
from murmur_agent import Identity  # noqa: E402


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    return 0


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


async def main():
    url, creds, pid, seconds, events = sys.argv[1:6]
    pid, seconds, events = int(pid), float(seconds), int(events)
    nc = await nats.connect(
        url,
        user_credentials=creds,
        inbox_prefix=f"_INBOX.{Identity.from_creds(creds).public_key}".encode(),
    )
    js = nc.jetstream()
    start, cpu0, total = time.time(), cpu_s(pid), 0
    last_cpu = cpu0
    while time.time() - start < seconds:
        done = asyncio.Event()
        count = 0

        async def on_message(_msg):
            nonlocal count
            count += 1
            if count >= events:
                done.set()

        sub = await js.subscribe(
            "murmur.v1.default.evt.task.*.submitted",
            cb=on_message,
            ordered_consumer=True,
            stream="MURMUR_HISTORY",
        )
        await asyncio.wait_for(done.wait(), 300)
        await sub.unsubscribe()
        total += count
        now_cpu = cpu_s(pid)
        print(
            json.dumps(
                {
                    "at_s": round(time.time() - start, 1),
                    "delivered": total,
                    "server_cpu_s_this_pass": round(now_cpu - last_cpu, 2),
                    "server_rss_mib": rss_mib(pid),
                }
            ),
            flush=True,
        )
        last_cpu = now_cpu
    await nc.close()


asyncio.run(main())
