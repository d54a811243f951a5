"""An agent's MCP client, the official Python SDK's, reaching a remote MCP
server through tollgate (HTTPS_PROXY and tollgate's CA from the
environment). Run by tests/tests/mcp.rs as `mcp_client.py URL`; calls the
tools CALLS (a JSON list of [name, arguments]) names and prints one JSON
line: the tools the server listed, and each call's text result or the
error the SDK raised. With RELEASE_FILE set, the first log message the
server sends creates that file (see `watch_build` in mcp_server.py).
"""

import asyncio
import json
import os
import sys

import loopback_only  # noqa: F401  (installs the guard; tests/py/loopback_only.py)
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client


async def release(params):
    path = os.environ.get("RELEASE_FILE")
    if path:
        open(path, "w").close()


async def main(url, calls):
    results = []
    async with streamable_http_client(url) as streams:
        async with ClientSession(streams[0], streams[1], logging_callback=release) as session:
            await session.initialize()
            listed = await session.list_tools()
            for name, arguments in calls:
                try:
                    result = await session.call_tool(name, arguments)
                    text = " ".join(c.text for c in result.content if hasattr(c, "text"))
                    results.append({"tool": name, "text": text, "is_error": bool(getattr(result, "is_error", False))})
                except MCPError as err:
                    results.append(
                        {"tool": name, "error": {"code": err.error.code, "message": err.error.message, "data": err.error.data}}
                    )
    return {"tools": sorted(t.name for t in listed.tools), "results": results}


print(json.dumps(asyncio.run(main(sys.argv[1], json.loads(os.environ["CALLS"])))))
