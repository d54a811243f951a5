"""An MCP server built with the official Python SDK (`mcp`), serving
streamable HTTP over TLS on loopback, as a remote MCP server would. Run by
tests/src/mcp.rs as `mcp_server.py ADDRESS:PORT CERT KEY CALLS [json]`; with
`json` it answers each request with one JSON body instead of an SSE
stream (the SDK's `json_response`). Every tool call
it receives is appended to the file CALLS as one JSON line, so a test can
tell that a refused call never reached it.
"""

import json
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


@server.tool()
def search_issues(repo: str, query: str) -> str:
    """Search a repository's issues."""
    record("search_issues", {"repo": repo, "query": query})
    return f"3 issues in {repo} match {query!r}"


@server.tool()
def merge_pull_request(repo: str, number: int) -> str:
    """Merge a pull request."""
    record("merge_pull_request", {"repo": repo, "number": number})
    return f"merged {repo}#{number}"


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
