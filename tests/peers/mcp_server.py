"""A small real MCP server (the official Python SDK 2.x) for Airlock's tests.

Usage: python mcp_server.py PORT

Serves Streamable HTTP on 127.0.0.1:PORT/mcp, answering both the 2026-07-28
revision (server/discover) and the handshake era (initialize).
"""

import sys

import anyio
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("airlock-test-crm")


@server.tool()
def lookup_customer(customer_id: str) -> str:
    """Look a customer up."""
    return f"customer {customer_id}: Ada Lovelace, plan pro"


@server.tool()
def issue_refund(customer_id: str, amount: int, reason: str = "") -> str:
    """Issue a refund to a customer."""
    return f"refunded {amount} to {customer_id}"


@server.tool()
def delete_customer(customer_id: str) -> str:
    """Delete a customer."""
    return f"deleted {customer_id}"


@server.tool()
async def count_slowly(n: int, gap_ms: int, ctx: Context) -> str:
    """Count to n, reporting progress every gap_ms."""
    for i in range(n):
        await ctx.report_progress(i + 1, n, f"step {i + 1}")
        await anyio.sleep(gap_ms / 1000)
    return f"counted to {n}"


if __name__ == "__main__":
    port = int(sys.argv[1])
    print(f"listening on {port}", file=sys.stderr, flush=True)
    server.run("streamable-http", host="127.0.0.1", port=port)
