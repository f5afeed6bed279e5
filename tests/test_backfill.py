"""Backfill, ported from flowlord's backload table, through the command line as a user runs it.

The workflow mirrors flowlord's ``f3.toml`` fixture; ``presidents.json`` and ``kv.json`` are the
JSON-lines meta-files of its cases, written here. Dry runs print every task with ``--json``.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from scheduler import backfill
from scheduler.cli import main
from scheduler.rules import BatchBy
from scheduler.store.db import Database
from scheduler.store.history import Execution
from scheduler.store.schema import execution_logs, executions
from tests.conftest import make_site

PY = sys.executable

F3 = """
[[phase]]
task = "task1"
rule = "cron=0 0 * * *"
template = "?date={yyyy}-{mm}-{dd}"

[[phase]]
task = "hourly"
rule = "cron=0 * * * *&by=hour"
template = "?day={YYYY}-{MM}-{DD}T{HH}"

[[phase]]
task = "monthly"
rule = "cron=0 0 1 * *"
template = "?table=exp.tbl_{YYYY}_{MM}"

[[phase]]
task = "meta-template"
rule = "cron=0 0 * * *"
template = "{meta:file}?date={YYYY}-{mm}-{dd}&value={meta:value}"

[[phase]]
task = "batch-president"
rule = "cron=0 0 * * *&meta-file=presidents.json"
template = "?president={meta:name}&start={meta:start}&end={meta:end}"

[[phase]]
task = "b-meta"
rule = "cron=0 0 * * *&meta=key:a,b|val:1,2"
template = "?key={meta:key}&val={meta:val}"

[[phase]]
task = "sql:load"
rule = "cron=0 0 * * *"
template = "./file.txt?ts={YYYY}-{MM}-{DD}"
"""

PRESIDENTS = [
    {"name": "george washington", "start": 1789, "end": 1797},
    {"name": "john adams", "start": 1797, "end": 1801},
    {"name": "thomas jefferson", "start": 1801, "end": 1809},
    {"name": "james madison", "start": 1809, "end": 1817},
]
KV = [{"key": "fruit", "val": "apple"}, {"key": "animal", "val": "dog"}]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config, the f3.toml workflow with its meta-file, and kv.json in the working dir."""
    (tmp_path / "kv.json").write_text(_lines(KV))
    (tmp_path / "presidents.json").write_text(_lines(PRESIDENTS))
    workflows = {"f3.toml": F3, "presidents.json": _lines(PRESIDENTS)}
    return make_site(tmp_path, workflows, "max_workers = 2\n", monkeypatch)


def _lines(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def dry_run(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code = main(["backfill", *args, "--config", "tomlflow.toml", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data: dict[str, Any] = json.loads(captured.out)
    return data


def meta(cron: str, **extra: str) -> dict[str, str]:
    return {"cron": cron, "workflow": "f3.toml", **extra}


META_TEMPLATE = ("--meta", "file=s3://task-bucket/data/f.txt", "--meta", "value=apple")
BOB_ALBERT = ("--meta", "name=bob,albert", "--meta", "start=1111,1120", "--meta", "end=1120,1130")
PRESIDENT_1 = {"name": "george washington", "start": "1789", "end": "1797"}
PRESIDENT_4 = {"name": "james madison", "start": "1809", "end": "1817"}

# (case, arguments, count, (first info, first meta), (last info, last meta))
BACKLOAD_TABLE = [
    (
        "from_cache",
        ["task1", "--at", "2022-06-12"],
        1,
        ("?date=2022-06-12", meta("2022-06-12T00")),
        None,
    ),
    (
        "hourly",
        ["hourly", "--by", "hour", "--from", "2020-01-01T00", "--to", "2020-01-02T23"],
        48,
        ("?day=2020-01-01T00", meta("2020-01-01T00")),
        ("?day=2020-01-02T23", meta("2020-01-02T23")),
    ),
    (
        "daily",
        ["task1", "--by", "day", "--from", "2020-01-01", "--to", "2020-02-01"],
        32,
        ("?date=2020-01-01", meta("2020-01-01T00")),
        ("?date=2020-02-01", meta("2020-02-01T00")),
    ),
    (
        "monthly",
        ["monthly", "--by", "month", "--from", "2020-01-01", "--to", "2020-12-12"],
        12,
        ("?table=exp.tbl_2020_01", meta("2020-01-01T00")),
        ("?table=exp.tbl_2020_12", meta("2020-12-01T00")),
    ),
    (
        "weekly",
        ["task1", "--by", "week", "--from", "2020-01-01", "--to", "2020-02-01"],
        5,
        ("?date=2020-01-01", meta("2020-01-01T00")),
        ("?date=2020-01-29", meta("2020-01-29T00")),
    ),
    (
        "backwards",
        ["monthly", "--by", "month", "--from", "2021-01-01", "--to", "2020-10-01"],
        4,
        ("?table=exp.tbl_2021_01", meta("2021-01-01T00")),
        ("?table=exp.tbl_2020_10", meta("2020-10-01T00")),
    ),
    (
        "to_only",
        ["task1", "--to", "2022-12-01"],
        1,
        ("?date=2022-12-01", meta("2022-12-01T00")),
        None,
    ),
    (
        "from_only",
        ["task1", "--from", "2022-12-01"],
        1,
        ("?date=2022-12-01", meta("2022-12-01T00")),
        None,
    ),
    (
        "meta_template",
        [*("meta-template", "--at", "2020-02-20"), *META_TEMPLATE],
        1,
        (
            "s3://task-bucket/data/f.txt?date=2020-02-20&value=apple",
            meta("2020-02-20T00", file="s3://task-bucket/data/f.txt", value="apple"),
        ),
        None,
    ),
    (
        "meta_file",
        ["meta-template", "--at", "2020-02-20", "--meta-file", "presidents.json"],
        4,
        ("?date=2020-02-20&value=", meta("2020-02-20T00", **PRESIDENT_1)),
        ("?date=2020-02-20&value=", meta("2020-02-20T00", **PRESIDENT_4)),
    ),
    (
        "meta_default",
        ["batch-president", "--at", "2020-02-20"],
        4,
        (
            "?president=george washington&start=1789&end=1797",
            meta("2020-02-20T00", **PRESIDENT_1),
        ),
        ("?president=james madison&start=1809&end=1817", meta("2020-02-20T00", **PRESIDENT_4)),
    ),
    (
        "override_file",
        ["b-meta", "--at", "2020-02-20", "--meta-file", "kv.json"],
        2,
        ("?key=fruit&val=apple", meta("2020-02-20T00", key="fruit", val="apple")),
        ("?key=animal&val=dog", meta("2020-02-20T00", key="animal", val="dog")),
    ),
    (
        "override_meta",
        [*("batch-president", "--at", "2020-02-20"), *BOB_ALBERT],
        2,
        (
            "?president=bob&start=1111&end=1120",
            meta("2020-02-20T00", name="bob", start="1111", end="1120"),
        ),
        (
            "?president=albert&start=1120&end=1130",
            meta("2020-02-20T00", name="albert", start="1120", end="1130"),
        ),
    ),
    (
        "phase_meta_default",
        ["b-meta", "--at", "2020-02-20"],
        2,
        ("?key=a&val=1", meta("2020-02-20T00", key="a", val="1")),
        ("?key=b&val=2", meta("2020-02-20T00", key="b", val="2")),
    ),
    (
        "with_job",
        ["sql:load", "--at", "2022-12-01"],
        1,
        ("./file.txt?ts=2022-12-01", meta("2022-12-01T00", job="load")),
        None,
    ),
]


@pytest.mark.parametrize(
    ("args", "count", "first", "last"),
    [case[1:] for case in BACKLOAD_TABLE],
    ids=[case[0] for case in BACKLOAD_TABLE],
)
def test_backload_table(
    site: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    count: int,
    first: tuple[str, dict[str, str]],
    last: tuple[str, dict[str, str]] | None,
) -> None:
    # given flowlord's f3.toml, when a backfill is dry-run, then its tasks are flowlord's
    data = dry_run(capsys, *args)
    tasks = data["tasks"]
    assert data["count"] == len(tasks) == count
    assert (tasks[0]["info"], tasks[0]["meta"]) == first
    if last is not None:
        assert (tasks[-1]["info"], tasks[-1]["meta"]) == last
    # each task is its own chain, and nothing was queued
    assert len({t["task_id"] for t in tasks}) == count
    assert data["executed"] is False
    assert _rows(site) == []


def test_backwards_range_is_newest_first(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = dry_run(capsys, "monthly", "--by", "month", "--from", "2021-01-01", "--to", "2020-10-01")
    assert [t["info"][-7:] for t in data["tasks"]] == ["2021_01", "2020_12", "2020_11", "2020_10"]


def test_meta_file_rows_repeat_for_every_step(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given 2 rows and 3 days, then 6 tasks, time-major, rows in file order
    data = dry_run(
        capsys, "b-meta", "--from", "2020-01-01", "--to", "2020-01-03", "--meta-file", "kv.json"
    )
    assert [(t["task_time"][:10], t["meta"]["key"]) for t in data["tasks"]] == [
        ("2020-01-01", "fruit"), ("2020-01-01", "animal"),
        ("2020-01-02", "fruit"), ("2020-01-02", "animal"),
        ("2020-01-03", "fruit"), ("2020-01-03", "animal"),
    ]  # fmt: skip


def test_no_time_given_uses_now(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = datetime.now(UTC)
    data = dry_run(capsys, "batch-president")
    after = datetime.now(UTC)
    assert data["count"] == 4
    stamps = {t["meta"]["cron"] for t in data["tasks"]}
    assert stamps <= {before.strftime("%Y-%m-%dT%H"), after.strftime("%Y-%m-%dT%H")}
    assert data["tasks"][0]["info"] == "?president=george washington&start=1789&end=1797"


def test_by_defaults_to_the_rules_by(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # given a phase whose rule says by=hour, when no --by is given, then it steps by hour
    data = dry_run(capsys, "hourly", "--from", "2020-01-01T00", "--to", "2020-01-01T05")
    assert data["by"] == "hour"
    assert data["count"] == 6


def test_empty_meta_file_means_no_tasks(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (site / "empty.json").write_text("")
    data = dry_run(capsys, "task1", "--at", "2020-01-01", "--meta-file", "empty.json")
    assert data["count"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["unknown", "--at", "2020-01-01"], "no phase with task 'unknown'"),
        (["b-meta", "--meta", "k=v", "--meta-file", "kv.json"], "meta and meta-file both used"),
        (["task1", "--meta", "a=1,2", "--meta", "b=1"], "inconsistent lengths in meta: 1 != 2"),
        (["task1", "--meta", "novalue"], "is not KEY=VALUE"),
        (["task1", "--at", "2022-120-01"], "invalid time '2022-120-01'"),
        (["task1", "--by", "fortnight"], "invalid step 'fortnight'"),
        (["task1", "--meta-file", "missing.json"], "missing.json: cannot read meta-file"),
        (["task1", "--from", "2000-01-01", "--to", "2100-01-01", "--by", "hour"], "more than"),
    ],
    ids=[
        "phase_not_found",
        "meta_and_meta_file",
        "lengths",
        "not_kv",
        "bad_time",
        "bad_by",
        "missing_file",
        "too_many",
    ],
)
def test_bad_input_exits_2_with_one_line(
    site: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["backfill", *args, "--config", "tomlflow.toml"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert _rows(site) == []


def test_text_output_names_count_first_and_last(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["backfill", "task1", "--from", "2020-01-01", "--to", "2020-02-01"]
    assert main([*args, "--config", "tomlflow.toml"]) == 0
    out = capsys.readouterr().out
    assert "dry run: would queue 32 tasks of f3.toml [task1] by day" in out
    assert "first 2020-01-01T00:00:00.000000Z  ?date=2020-01-01" in out
    assert "last  2020-02-01T00:00:00.000000Z  ?date=2020-02-01" in out


# -- executing --------------------------------------------------------------------------------

ECHO = f"""
[[phase]]
task = "echo"
rule = "cron=0 0 1 1 *"
template = "{PY} -c 'import sys; print(sys.argv[1:])' {{yyyy}}-{{mm}}-{{dd}} {{meta:key}}"

[[phase]]
task = "after"
depends_on = "echo"
template = "{PY} -c 'print(\\"child\\")'"
"""


def _rows(site: Path) -> list[Execution]:
    db = Database(f"sqlite:///{site / 'tomlflow.db'}")
    try:
        with db.read() as conn:
            return [
                Execution.from_row(r)
                for r in conn.execute(select(executions).order_by(executions.c.id))
            ]
    finally:
        db.close()


def _stdout(site: Path, execution_id: int) -> list[str]:
    db = Database(f"sqlite:///{site / 'tomlflow.db'}")
    try:
        with db.read() as conn:
            query = select(execution_logs.c.line).where(
                execution_logs.c.execution_id == execution_id, execution_logs.c.stream == "stdout"
            )
            return list(conn.scalars(query))
    finally:
        db.close()


def test_execute_queues_in_one_go_and_run_once_runs_them_newest_first(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a phase with a child, when 3 days are backfilled backwards with --execute
    (site / "workflows" / "echo.toml").write_text(ECHO)
    args = ["backfill", "echo", "--from", "2024-01-03", "--to", "2024-01-01", "--meta", "key=k"]
    assert main([*args, "--execute", "--config", "tomlflow.toml"]) == 0
    assert "queued 3 tasks of echo.toml [echo] by day" in capsys.readouterr().out
    queued = _rows(site)
    # then three queued backfill rows, newest first, one chain each
    assert [(r.status.value, r.trigger.value) for r in queued] == [("queued", "backfill")] * 3
    assert [r.task_time for r in queued] == [datetime(2024, 1, d, tzinfo=UTC) for d in (3, 2, 1)]
    assert len({r.task_id for r in queued}) == 3
    assert queued[0].meta == {"cron": "2024-01-03T00", "key": "k", "workflow": "echo.toml"}
    # when the scheduler makes one pass, then each ran with its own date and released its child
    assert main(["run", "--once", "--config", "tomlflow.toml"]) == 0
    done = _rows(site)
    assert [r.status.value for r in done] == ["complete"] * 6
    for row in queued:
        assert _stdout(site, row.id) == [f"['{row.task_time:%Y-%m-%d}', 'k']"]
        children = [r for r in done if r.parent_execution_id == row.id]
        assert [(c.task, c.task_id, c.task_time) for c in children] == [
            ("after", row.task_id, row.task_time)
        ]


# -- the pure parts ---------------------------------------------------------------------------

NOW = datetime(2024, 5, 6, 7, 8, tzinfo=UTC)
T1 = datetime(2020, 1, 1, tzinfo=UTC)
T2 = datetime(2020, 2, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "at", "expected"),
    [
        (None, None, None, (NOW, NOW)),
        (T1, None, None, (T1, T1)),
        (None, T2, None, (T2, T2)),
        (T1, T2, None, (T1, T2)),
        (T2, T1, None, (T2, T1)),
        (T1, T2, T1 + timedelta(days=3), (T1 + timedelta(days=3),) * 2),
    ],
)
def test_time_range_defaults(
    start: datetime | None,
    end: datetime | None,
    at: datetime | None,
    expected: tuple[datetime, datetime],
) -> None:
    assert backfill.time_range(start, end, at, NOW) == expected


@pytest.mark.parametrize(
    ("text", "by"),
    [
        ("hour", BatchBy.HOUR),
        ("Hourly", BatchBy.HOUR),
        ("DAY", BatchBy.DAY),
        ("daily", BatchBy.DAY),
        ("week", BatchBy.WEEK),
        ("monthly", BatchBy.MONTH),
    ],
)
def test_parse_by_accepts_flowlord_spellings(text: str, by: BatchBy) -> None:
    assert backfill.parse_by(text) is by


@pytest.mark.parametrize(
    ("items", "rows"),
    [
        ([], []),
        (["key=value"], [{"key": "value"}]),
        (
            ["name=alice,bob", "age=25,30"],
            [{"name": "alice", "age": "25"}, {"name": "bob", "age": "30"}],
        ),
        (["name=alice", "name=bob"], [{"name": "alice"}, {"name": "bob"}]),
        (["url=s3://b/k?x=1"], [{"url": "s3://b/k?x=1"}]),
    ],
)
def test_meta_options_become_rows(items: list[str], rows: list[dict[str, str]]) -> None:
    assert backfill.parse_meta_options(items) == rows
