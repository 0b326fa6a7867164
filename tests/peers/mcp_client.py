"""Drives the official MCP Python SDK 2.x client through Airlock.

Usage: python mcp_client.py URL AGENT_KEY PLAN_JSON

PLAN_JSON: {"mode": "auto" | "legacy", "calls": [{"name": ..., "args": {...}, "progress": bool,
            "signal_file": path?}]}
A call's `signal_file`, when given, is created at its first progress notification,
so a test can act (approve a held call) once the client has seen progress.
`elicit_file` in the plan, when given, makes the client declare elicitation (form
and url): each `elicitation/create` it is sent is appended to that file as one JSON
line and accepted. The notifications the session surfaces are listed under
`notifications` by method.
Prints one JSON object: the negotiated protocol version, the listed tools
with the list's cacheScope, and each call's result (or the error raised);
`session_error` when the session itself failed (a refused key, say).
"""

import json
import sys
import time

import anyio
import mcp.types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def main(url: str, key: str, plan: dict) -> dict:
    out: dict = {"calls": [], "notifications": []}
    try:
        await session(url, key, plan, out)
    except Exception as e:  # a failed session: the test asserts on what the client saw
        out["session_error"] = describe(e)
    return out


def elicitation_callback(path: str):
    """Records each elicitation the server sends, then accepts it."""

    async def on_elicit(_context, params):
        with open(path, "a") as f:
            f.write(json.dumps(params.model_dump(by_alias=True, mode="json", exclude_none=True)) + "\n")
        return types.ElicitResult(action="accept")

    return on_elicit


def notification_recorder(into: list):
    async def on_message(message) -> None:
        method = getattr(getattr(message, "root", message), "method", None)
        if method:
            into.append(method)

    return on_message


def describe(e: BaseException) -> str:
    """The error as the SDK raised it, through exception groups."""
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(describe(x) for x in e.exceptions)
    return f"{type(e).__name__}: {e}"


async def session(url: str, key: str, plan: dict, out: dict) -> None:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    async with http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(
            transport,
            mode=plan.get("mode", "auto"),
            cache=None,
            elicitation_callback=elicitation_callback(plan["elicit_file"]) if plan.get("elicit_file") else None,
            message_handler=notification_recorder(out["notifications"]),
        ) as client:
            out["protocol_version"] = client.protocol_version
            listed = await client.list_tools()
            out["tools"] = [t.name for t in listed.tools]
            out["cache_scope"] = getattr(listed, "cache_scope", None)
            for call in plan.get("calls", []):
                progress: list = []
                started = time.monotonic()

                async def on_progress(
                    p, total, message, _progress=progress, _started=started, _signal=call.get("signal_file")
                ):
                    _progress.append({"progress": p, "message": message, "at": time.monotonic() - _started})
                    if _signal:
                        with open(_signal, "a") as f:
                            f.write(f"{p}\n")

                try:
                    r = await client.call_tool(
                        call["name"],
                        call.get("args", {}),
                        progress_callback=on_progress if call.get("progress") else None,
                    )
                    text = " ".join(c.text for c in r.content if getattr(c, "type", "") == "text")
                    out["calls"].append(
                        {
                            "name": call["name"],
                            "is_error": bool(r.is_error),
                            "text": text,
                            "progress": progress,
                            "elapsed": time.monotonic() - started,
                        }
                    )
                except Exception as e:  # the test asserts on what the client saw
                    out["calls"].append({"name": call["name"], "exception": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    result = anyio.run(main, sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
    print(json.dumps(result))
