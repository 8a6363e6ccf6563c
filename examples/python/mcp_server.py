#!/usr/bin/env python3
"""An MCP server written with the official Python SDK (PyPI `mcp` 2.x), for murmur to wrap
as a tool agent: `murmur agent run mcp --mcp-command ".venv/bin/python
examples/python/mcp_server.py"` offers its tools as capabilities `mcp.add`, `mcp.word_count`
and `mcp.divide`. Speaks MCP over stdio (`--http PORT`: streamable HTTP at /mcp instead).
"""

import argparse

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("murmur-example-tools", version="0.1.0")


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


@server.tool()
def word_count(text: str) -> dict:
    """Counts the words and characters of a text."""
    return {"words": len(text.split()), "chars": len(text)}


@server.tool()
def divide(a: float, b: float) -> float:
    """Divides a by b (dividing by zero is the tool's error)."""
    if b == 0:
        raise ToolError("division by zero")
    return a / b


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1")
    args = p.parse_args()
    if args.http:
        server.run("streamable-http", host="127.0.0.1", port=args.http)
    else:
        server.run()
