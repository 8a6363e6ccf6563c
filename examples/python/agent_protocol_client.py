#!/usr/bin/env python3
"""Prompts a murmur gateway through the Synadia Agent Protocol's own Python SDK
(`synadia-ai-agents`): discovers the agent by name, sends the prompt, prints the answer as
it streams (stdout) and each status chunk (stderr). Exits 1 when the agent answers with an
error or is not found. With `--sign-as NAME` each prompt carries a signed `Agent-Sender`
header (the gateway records the verified sender in the prompt's task). With `--answer TEXT`
it answers each mid-stream question (a `query` chunk) with TEXT; without it, a question
ends the run with exit 1.

    .venv/bin/python examples/python/agent_protocol_client.py --server nats://127.0.0.1:4222 \\
        --creds submitter.creds --agent llm-generate "What is the capital of France?"
"""

import argparse
import asyncio
import os
import sys

import nats
from synadia_ai.agents import Agents, Identity, Query, signer_from_creds_file
from synadia_ai.agents.discovery import DiscoverFilter
from synadia_ai.agents.messages import ResponseChunk, StatusChunk


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--creds", help="credentials allowed to prompt (a murmur submitter's)")
    p.add_argument("--agent", required=True, help="the protocol agent's name")
    p.add_argument("--find-within", type=float, default=30.0,
                   help="seconds to keep discovering before giving up")
    p.add_argument("--sign-as", metavar="NAME",
                   help="sign each prompt's Agent-Sender header with the creds' user key, "
                        "under this display name")
    p.add_argument("--answer", metavar="TEXT",
                   help="the reply to each question the agent asks mid-stream")
    p.add_argument("prompt")
    args = p.parse_args()
    nc = await nats.connect(args.server, user_credentials=args.creds)
    identity = None
    if args.sign_as:
        identity = Identity(signer=signer_from_creds_file(args.creds), name=args.sign_as)
    agents = Agents(nc=nc, identity=identity)
    try:
        loop = asyncio.get_running_loop()
        until = loop.time() + args.find_within
        found = []
        while not found and loop.time() < until:
            found = await agents.discover(filter=DiscoverFilter(agent=args.agent))
        if not found:
            print(f"no protocol agent named {args.agent!r} answered discovery", file=sys.stderr)
            return 1
        agent = found[0]
        print(f"[client] {agent.agent} (owner {agent.info.owner}, instance {agent.instance_id}, "
              f"protocol {agent.info.protocol_version}) at {agent.prompt_subject}",
              file=sys.stderr, flush=True)
        chunks = 0
        async for message in agent.prompt(args.prompt):
            if isinstance(message, ResponseChunk):
                chunks += 1
                print(message.text, end="", flush=True)
            elif isinstance(message, StatusChunk):
                print(f"[client] status {message.status}", file=sys.stderr, flush=True)
            elif isinstance(message, Query):
                print(f"[client] question {message.id}: {message.prompt}",
                      file=sys.stderr, flush=True)
                if args.answer is None:
                    print("[client] asked a question and no --answer given", file=sys.stderr)
                    return 1
                await message.reply(args.answer)
        print()
        print(f"[client] {chunks} response chunks", file=sys.stderr, flush=True)
        return 0
    except Exception as e:  # noqa: BLE001 - the SDK's errors carry the agent's words
        print(f"[client] {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        await agents.close()
        await nc.drain()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
