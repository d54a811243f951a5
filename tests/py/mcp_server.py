"""An MCP server built with the official Python SDK (`mcp`), serving
streamable HTTP over TLS on loopback, as a remote MCP server would. Run by
tests/src/mcp.rs as `mcp_server.py ADDRESS:PORT CERT KEY CALLS [json]`; with
`json` it answers each request with one JSON body instead of an SSE
stream (the SDK's `json_response`). Every tool call
it receives is appended to the file CALLS as one JSON line, so a test can
tell that a refused call never reached it.

SEARCH_DESCRIPTION, when set, is `search_issues`'s description: a server
that changed a tool's definition. STREAM_TOOL=1 adds `watch_build`, which
sends a log message at once and then waits (up to 30 s) for the file
CALLS.go to appear before answering: whether its answer says `released`
tells whether the client saw that first message while the call was still
running.
"""

import asyncio
import json
import os
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

address, cert, key, calls = sys.argv[1:5]
host, port = address.rsplit(":", 1)
json_response = sys.argv[5:6] == ["json"]
server = MCPServer("issues")


def record(tool, arguments):
    with open(calls, "a") as out:
        out.write(json.dumps({"tool": tool, "arguments": arguments}) + "\n")


@server.tool(description=os.environ.get("SEARCH_DESCRIPTION", "Search a repository's issues."))
def search_issues(repo: str, query: str) -> str:
    record("search_issues", {"repo": repo, "query": query})
    return f"3 issues in {repo} match {query!r}"


@server.tool()
def merge_pull_request(repo: str, number: int) -> str:
    """Merge a pull request."""
    record("merge_pull_request", {"repo": repo, "number": number})
    return f"merged {repo}#{number}"


if os.environ.get("STREAM_TOOL") == "1":
    from mcp.server.mcpserver import Context

    @server.tool()
    async def watch_build(repo: str, ctx: Context) -> str:
        """Follow a repository's build."""
        record("watch_build", {"repo": repo})
        await ctx.info(f"build of {repo} started")
        for _ in range(300):
            if os.path.exists(calls + ".go"):
                return "released"
            await asyncio.sleep(0.1)
        return "not released"


# It answers for the public name the client uses, which only resolves to
# loopback through tollgate.
app = server.streamable_http_app(
    json_response=json_response,
    transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False)
)
uvicorn.run(
    app,
    host=host.strip("[]"),
    port=int(port),
    ssl_certfile=cert,
    ssl_keyfile=key,
    log_level="warning",
)
