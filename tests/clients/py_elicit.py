"""Approvals through MCP elicitation, with the official Python SDK as the client.

Usage: py_elicit.py AIOPS_BIN AIOPS_HOME ANSWER   (ANSWER: accept | decline)

Calls `rotate_db_credentials` (approval required by default). The server asks the
human through elicitation; this client answers for them. Prints one JSON line:
{"status": ..., "asked": ...}.
"""

import asyncio
import json
import os
import sys

import mcp.types as types
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

asked = []


async def answer(context, params: types.ElicitRequestParams):
    asked.append(params.message)
    if sys.argv[3] == "accept":
        return types.ElicitResult(action="accept", content={"approve": True})
    return types.ElicitResult(action="decline")


async def main() -> None:
    server = StdioServerParameters(
        command=sys.argv[1],
        args=["serve", "--stdio"],
        env={**os.environ, "AIOPS_HOME": sys.argv[2], "AIOPS_LOG": "warn"},
    )
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write, elicitation_callback=answer) as session:
            await session.initialize()
            result = await session.call_tool("rotate_db_credentials", {})
            out = result.structured_content or {}
            print(json.dumps({
                "status": out.get("status"),
                "verified": (out.get("verification") or {}).get("passed"),
                "asked": asked,
            }))


asyncio.run(main())
