"""``tomlflow worker``: a Celery worker that runs phases sent by a scheduler with
``[executor] kind = "celery"``. It reads ``[executor] broker``/``backchannel`` from the
configuration and needs no database."""

from __future__ import annotations

import os

import click

from scheduler.cli.common import config_option
from scheduler.config import load_config
from scheduler.executors.backchannel import DEFAULT_QUEUE, redact


def _queues(_ctx: click.Context, _param: click.Parameter, value: str) -> list[str]:
    queues = [q.strip() for q in value.split(",") if q.strip()]
    if not queues:
        raise click.BadParameter("name at least one queue")
    return queues


@click.command()
@config_option
@click.option(
    "--queues",
    default=DEFAULT_QUEUE,
    show_default=True,
    callback=_queues,
    help="Comma-separated Celery queues to read (a topic's queue is named after the topic).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Phases run at once (default: the number of CPUs).",
)
@click.pass_context
def worker(
    ctx: click.Context, config_path: str | None, queues: list[str], concurrency: int | None
) -> int:
    """Run phases sent by the scheduler, as a Celery worker (until Ctrl-C)."""
    config = load_config(config_path)
    from scheduler.executors import worker as celery_worker  # loads Celery: only when used

    slots = concurrency or os.cpu_count() or 2
    broker = redact(config.executor.broker)
    click.echo(f"worker: queues {', '.join(queues)}, {slots} at once, broker {broker}", err=True)
    verbose = ctx.find_root().params.get("verbose", 0)
    return celery_worker.serve(config, queues, slots, verbose)


COMMANDS = [worker]
