"""``tomlflow mcp``: the read-only tools of ``tomlflow ask`` as an MCP server on stdio.

An MCP client (Claude Desktop, Claude Code) starts ``tomlflow mcp --config ...`` and talks
JSON-RPC over its stdin/stdout, so nothing else may be printed to stdout while it runs. Tools
run in a worker thread: a slow query never stalls the protocol loop.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anyio
import anyio.to_thread
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from scheduler.ai.tools import Toolbox

log = logging.getLogger(__name__)

SERVER_NAME = "tomlflow"
INSTRUCTIONS = (
    "Read-only access to a tomlflow scheduler's database: phases, executions, logs, "
    "dependencies and statistics. Times are UTC ISO 8601 text."
)


def build_server(toolbox: Toolbox) -> Server[Any]:
    """An MCP server whose tools are ``toolbox``'s, with the same names and schemas."""
    tools = [
        types.Tool(name=d["name"], description=d["description"], input_schema=d["input_schema"])
        for d in toolbox.definitions()
    ]

    async def list_tools(_ctx: Any, _params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(_ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = dict(params.arguments or {})
        result = await anyio.to_thread.run_sync(toolbox.call, params.name, arguments)
        log.info("tool %s: %s", params.name, result.summary())
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=result.text)], is_error=result.is_error
        )

    return Server(SERVER_NAME, version=_version(), instructions=INSTRUCTIONS,
                  on_list_tools=list_tools, on_call_tool=call_tool)


def serve(toolbox: Toolbox) -> None:
    """Serve on stdin/stdout until the client closes them."""
    server = build_server(toolbox)

    async def run() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    anyio.run(run)


def _version() -> str:
    try:
        return version("tomlflow")
    except PackageNotFoundError:
        return "0"
