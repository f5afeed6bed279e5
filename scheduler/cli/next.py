"""``tomlflow next``: the next fire times of cron phases, from the functions the engine uses."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import click

from scheduler import planner
from scheduler.cli.common import (
    ExitCode,
    config_option,
    file_option,
    find_phase,
    json_option,
    open_app,
    print_json,
)
from scheduler.store import history
from scheduler.tasktime import from_iso, iso
from scheduler.validation import PhaseSpec


@click.command(name="next")
@click.argument("task", required=False)
@click.option("-n", "count", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="How many fire times per phase.")  # fmt: skip
@file_option
@config_option
@json_option
def next_fires(
    task: str | None, count: int, file_path: str | None, config_path: str | None, as_json: bool
) -> int:
    """The next fire times of each cron phase (or of TASK), in its zone and in UTC."""
    with open_app(config_path) as app:
        if task:
            specs = [find_phase(app, task, file_path)]
        else:
            app.catalog.refresh()
            specs = [s for s in app.catalog.phases() if _on_a_clock(s)]
        with app.db.read() as conn:
            states = history.phase_states(conn)
        default_tz = app.config.timezone
    now = datetime.now(UTC)
    outlooks = [
        _outlook(s, states.get((s.file_path, s.task)), now, count, default_tz) for s in specs
    ]
    if as_json:
        print_json(outlooks)
    else:
        for outlook in outlooks:
            _echo(outlook)
    return ExitCode.OK


def _on_a_clock(spec: PhaseSpec) -> bool:
    """Phases a user asks ``next`` about: those whose rule names a cron or ``manual``."""
    return spec.rule is not None and bool(spec.rule.cron_text or spec.rule.manual)


def _outlook(
    spec: PhaseSpec, state: history.PhaseState | None, now: datetime, n: int, default_tz: str
) -> dict[str, object]:
    rule = spec.rule
    zone = (rule.tz if rule else "") or default_tz
    fires = planner.upcoming(spec, state, now, n, default_tz)
    return {
        "file_path": spec.file_path,
        "task": spec.task,
        "cron": rule.cron_text if rule else "",
        "tz": zone,
        "schedule": _schedule(spec, state),
        "fires": [
            {
                "local": f.scheduled.astimezone(ZoneInfo(zone)).isoformat(),
                "utc": iso(f.scheduled),
                "late": f.late,
            }
            for f in fires
        ],
    }


def _schedule(spec: PhaseSpec, state: history.PhaseState | None) -> str:
    """``cron``, or why the phase has no fire times: paused, manual, never fires, ..."""
    rule = spec.rule
    if not spec.runnable or rule is None:
        return "error"
    if rule.manual:
        return "manual"
    if rule.never_fires:
        return "never fires"
    if rule.cron is None:
        return "not on a clock"
    return "paused" if state is not None and state.paused else "cron"


_SAYS = {
    "error": "has errors, never fires until they are fixed",
    "manual": "manual: runs only when triggered, backfilled, retried or file-matched",
    "never fires": "never fires: its cron matches no time",
    "not on a clock": "no cron: fires on depends_on or files",
    "paused": "paused: fires nothing until resumed",
}


def _echo(outlook: dict[str, object]) -> None:
    head = f"{outlook['file_path']} [{outlook['task']}]"
    if outlook["cron"]:
        head += f" cron={outlook['cron']} tz={outlook['tz']}"
    schedule = str(outlook["schedule"])
    if schedule != "cron":
        click.echo(f"{head}: {_SAYS[schedule]}")
        return
    click.echo(head)
    fires = outlook["fires"]
    assert isinstance(fires, list)
    zone = ZoneInfo(str(outlook["tz"]))
    for fire in fires:
        local = from_iso(fire["utc"]).astimezone(zone)
        late = "  (missed: fires at the next tick)" if fire["late"] else ""
        utc = fire["utc"][:19].replace("T", " ")
        click.echo(f"  {local:%Y-%m-%d %H:%M:%S %Z}  = {utc} UTC{late}")


COMMANDS = [next_fires]
