"""An independent MCP client (the official Python SDK) driving aiops.

Usage:
  py_client.py stdio AIOPS_BIN AIOPS_HOME
  py_client.py http  URL TOKEN     (URL ends in /mcp)
  py_client.py sse   URL TOKEN     (URL ends in /sse)

Initialises, lists tools and prompts, calls `check_health` and `query_logs`, checks the
answers, and prints one JSON line with what it saw. Exits non-zero on any failure.
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import ClientSession, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client


async def exercise(session: ClientSession) -> dict:
    init = await session.initialize()
    assert init.server_info.name == "aiops", init.server_info
    assert "incident_snapshot" in (init.instructions or ""), "instructions missing"
    tools = (await session.list_tools()).tools
    names = {t.name for t in tools}
    for want in ("incident_snapshot", "check_health", "query_logs", "db_diagnostics"):
        assert want in names, f"{want} not in {sorted(names)}"
    for t in tools:
        a = t.annotations
        assert a is not None and a.read_only_hint is not None and a.destructive_hint is not None \
            and a.idempotent_hint is not None and a.open_world_hint is not None, f"{t.name} annotations"
    health = await session.call_tool("check_health", {})
    assert not health.is_error, health.content
    assert health.structured_content is not None, "no structured content"
    logs = await session.call_tool("query_logs", {"limit": 5})
    assert not logs.is_error, logs.content
    bad = None
    try:
        r = await session.call_tool("query_logs", {"regex": "(unclosed"})
        bad = "is_error" if r.is_error else "accepted"
    except Exception as e:  # a protocol error is the expected answer
        bad = f"protocol error: {e}"
    assert bad != "accepted", "a bad regex was accepted"
    prompts = {p.name for p in (await session.list_prompts()).prompts}
    assert {"investigate_incident", "write_postmortem"} <= prompts, prompts
    return {
        "server": init.server_info.name,
        "protocol": init.protocol_version,
        "tools": len(tools),
        "health": health.structured_content.get("overall"),
        "bad_regex": bad,
    }


async def main() -> None:
    mode = sys.argv[1]
    if mode == "stdio":
        params = StdioServerParameters(
            command=sys.argv[2],
            args=["serve", "--stdio"],
            env={**os.environ, "AIOPS_HOME": sys.argv[3], "AIOPS_LOG": "warn"},
        )
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                out = await exercise(session)
    elif mode == "http":
        headers = {"Authorization": f"Bearer {sys.argv[3]}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            async with streamable_http_client(sys.argv[2], http_client=http) as streams:
                read, write = streams[0], streams[1]
                async with ClientSession(read, write) as session:
                    out = await exercise(session)
    elif mode == "sse":
        headers = {"Authorization": f"Bearer {sys.argv[3]}"}
        async with sse_client(sys.argv[2], headers=headers) as (read, write):
            async with ClientSession(read, write) as session:
                out = await exercise(session)
    else:
        raise SystemExit(f"unknown mode {mode}; use stdio, http or sse")
    out["transport"] = mode
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
