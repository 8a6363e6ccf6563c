#!/usr/bin/env python3
"""A Synadia Agent Protocol agent hosted with the protocol's own Python SDK
(`synadia-ai-agent-service`), for murmur's bridge to route tasks to: it answers a prompt with
its words in reverse order, one `response` chunk per word. Prints its prompt subject once
registered, and each prompt's sender (its `Agent-Sender`, verified or claimed) on stderr;
stops on SIGTERM/SIGINT. With `--ask QUESTION` it first asks the caller QUESTION mid-stream
(a `query` chunk) and puts the reply before the reversed words.

    .venv/bin/python examples/python/protocol_host.py --server nats://127.0.0.1:4222 \\
        --creds host.creds --agent reverser --owner acme
"""

import argparse
import asyncio
import os
import signal
import sys

import nats
from synadia_ai.agent_service import AgentService


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--creds", help="credentials allowed to host (a murmur submitter's)")
    p.add_argument("--agent", default="reverser")
    p.add_argument("--owner", default="acme")
    p.add_argument("--min-sender-trust", choices=["any", "signed"], default="any",
                   help="`signed`: answer only prompts whose Agent-Sender header verifies")
    p.add_argument("--ask", metavar="QUESTION",
                   help="ask the caller this mid-stream before answering")
    args = p.parse_args()
    nc = await nats.connect(args.server, user_credentials=args.creds)
    service = AgentService(agent=args.agent, owner=args.owner, session_name="default", nc=nc,
                           description="reverses the words of a prompt", heartbeat_interval_s=1,
                           min_sender_trust=args.min_sender_trust)

    async def reverse(envelope, stream) -> None:
        print(f"[host] prompt from {stream.sender}", file=sys.stderr, flush=True)
        words = envelope.prompt.split()
        if args.ask:
            reply = await stream.ask(args.ask, timeout=60)
            print(f"[host] asked {args.ask!r}, told {reply.prompt!r}", file=sys.stderr, flush=True)
            await stream.send(reply.prompt + ": ")
        for i, word in enumerate(reversed(words)):
            await stream.send(word if i == 0 else " " + word)

    service.on_prompt(reverse)
    await service.start()
    print(service.subject.prompt, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await service.stop()
    await nc.drain()


if __name__ == "__main__":
    asyncio.run(main())
