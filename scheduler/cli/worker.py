"""``tomlflow worker``: a Celery worker that runs phases sent by a scheduler with
``[executor] kind = "celery"``. It reads ``[executor] broker``/``backchannel`` from the
configuration and needs no database."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import click

from scheduler.cli.common import config_option
from scheduler.clock import Clock
from scheduler.config import Config, load_config
from scheduler.errors import ExecutorError
from scheduler.executors import Executor
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
    celery_worker = _celery_module("scheduler.executors.worker")
    slots = concurrency or os.cpu_count() or 2
    broker = redact(config.executor.broker)
    click.echo(f"worker: queues {', '.join(queues)}, {slots} at once, broker {broker}", err=True)
    verbose = ctx.find_root().params.get("verbose", 0)
    code: int = celery_worker.serve(config, queues, slots, verbose)
    return code


def _celery_module(name: str) -> ModuleType:
    """Import a module that needs Celery (loaded only when used); a missing install is one
    line saying what to install."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ExecutorError(
            f"the celery executor needs Celery and redis: pip install 'tomlflow[celery]' ({exc})"
        ) from None


def celery_executor(config: Config, clock: Clock) -> Executor:
    """The scheduler's executor for ``[executor] kind = "celery"``."""
    module = _celery_module("scheduler.executors.celery")
    executor: Executor = module.CeleryExecutor(config, clock.now)
    return executor


COMMANDS = [worker]
