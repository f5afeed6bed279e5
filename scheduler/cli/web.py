"""``tomlflow web``: serve the dashboard and HTTP API on uvicorn."""

from __future__ import annotations

import ipaddress

import click

from scheduler.cli.common import ExitCode, config_option, out_console
from scheduler.config import load_config
from scheduler.errors import ConfigError


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default=None, help="Address to bind (default: [web] host, 127.0.0.1).")
@click.option(
    "--port", default=None, type=click.IntRange(1, 65535), help="Port (default: [web] port, 8080)."
)
@config_option
def web(host: str | None, port: int | None, config_path: str | None) -> int:
    """Serve the dashboard and the JSON API (no running scheduler needed to read)."""
    config = load_config(config_path)
    host = host or config.web.host
    port = port or config.web.port
    if not is_loopback(host) and not config.web.token:
        source = str(config.source) if config.source else "the configuration"
        raise ConfigError(source, f"binding {host} needs a token: set [web] token", "web.token")
    import uvicorn  # the server loads only for this command

    from scheduler.web.app import create_app

    app = create_app(config, warm=True)
    out_console().print(f"tomlflow web on http://{host}:{port}/ (Ctrl-C stops)", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return ExitCode.OK


COMMANDS = [web]
