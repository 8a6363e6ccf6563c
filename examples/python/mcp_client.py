#!/usr/bin/env python3
"""Uses murmur's capabilities as MCP tools with the official MCP Python SDK (PyPI `mcp` 2.x):
starts `murmur mcp serve` as its stdio MCP server, lists the tools, calls one, and prints the
tool list and the result as JSON (stdout). Exits 1 when the call reports an error.

    .venv/bin/python examples/python/mcp_client.py --murmur target/debug/murmur \\
        --murmur-arg=--creds --murmur-arg=submitter.creds tool.fs '{"op": "list"}'
"""

import argparse
import asyncio
import json
import sys

from mcp.client import Client
from mcp.client.stdio import StdioServerParameters


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--murmur", default="murmur", help="the murmur binary")
    p.add_argument("--murmur-arg", action="append", default=[],
                   help="an argument before `mcp serve` (--server, --realm, --creds …); repeatable")
    p.add_argument("tool")
    p.add_argument("arguments", help="the call's arguments, JSON")
    args = p.parse_args()
    server = StdioServerParameters(command=args.murmur, args=[*args.murmur_arg, "mcp", "serve"])
    async with Client(server) as client:
        tools = await client.list_tools()
        result = await client.call_tool(args.tool, json.loads(args.arguments))
        print(json.dumps({
            "tools": [{"name": t.name, "description": t.description} for t in tools.tools],
            "is_error": bool(result.is_error),
            "text": [c.text for c in result.content if getattr(c, "type", "") == "text"],
            "structured": result.structured_content,
        }, indent=2))
        return 1 if result.is_error else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
