"""A value is one argument: the template is split first, then each token is filled in inside
its argument, so a meta value or a file path never adds or splits arguments (SPEC §6)."""

from __future__ import annotations

import json
import shlex
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler import templates
from scheduler.cli import main
from scheduler.store.db import Database
from scheduler.store.history import Execution, Status
from scheduler.store.schema import executions
from tests.conftest import SITE_DATABASE, make_site

T = datetime(2024, 1, 2, 13, tzinfo=UTC)
NASTY = "/data/my file.csv; it's \"quoted\"\nand a second line"


@pytest.mark.parametrize(
    ("template", "meta", "args"),
    [
        ("cmd {meta:file}", {"file": "/data/my file.csv"}, ["cmd", "/data/my file.csv"]),
        ("cmd {meta:file}", {"file": NASTY}, ["cmd", NASTY]),
        ("cmd --in={meta:file}", {"file": "a b"}, ["cmd", "--in=a b"]),
        ("cmd '{meta:a} {meta:b}'", {"a": "x y", "b": "'"}, ["cmd", "x y '"]),
        ("cmd {meta:missing} x", {}, ["cmd", "", "x"]),
        ("cmd {yyyy}-{mm} {meta:v}", {"v": "$(rm -rf /)"}, ["cmd", "2024-01", "$(rm -rf /)"]),
        ("cmd {meta:v} # {meta:v}", {"v": "a b"}, ["cmd", "a b", "#", "{meta:v}"]),
    ],
)
def test_render_args_splits_the_template_before_filling_in_values(
    template: str, meta: dict[str, str], args: list[str]
) -> None:
    assert templates.render_args(template, T, meta) == args


def test_args_of_a_queued_info_keep_its_uuid() -> None:
    info = templates.render("cmd {meta:f} out-{uuid}.json {UUID}", T, {"f": "a b"})
    ident = info.split("out-")[1][:8]
    args = templates.args_of("cmd {meta:f} out-{uuid}.json {UUID}", info, T, {"f": "a b"})
    assert args == ["cmd", "a b", f"out-{ident}.json", ident]


def test_args_of_an_info_from_an_older_template_run_what_was_queued() -> None:
    assert templates.args_of("new {meta:f}", "old 'a b'", T, {"f": "x"}) == ["old", "a b"]


@pytest.mark.parametrize(
    "info",
    [
        "cmd 'a b' out-0123abcd.json 0123abce",  # the second {uuid} is another id
        "cmd 'a b' out-0123ABCD.json 0123ABCD",  # not what {uuid} renders (lowercase hex)
        "cmd 'a b' out-0123abc.json 0123abc",  # too short
        "cmd 'a c' out-0123abcd.json 0123abcd",  # another meta value
        "cmd 'a b' out-0123abcd.json 0123abcd x",  # more after it
    ],
)
def test_args_of_an_info_that_is_no_rendering_of_the_template_run_the_info(info: str) -> None:
    template = "cmd {meta:f} out-{uuid}.json {UUID}"
    assert templates.args_of(template, info, T, {"f": "a b"}) == shlex.split(info)


def test_an_edited_template_is_split_and_filled_as_it_now_reads() -> None:
    # Given a template already rendered and split once (each is parsed once, then reused)
    assert templates.render_args("cmd {meta:f}", T, {"f": "a b"}) == ["cmd", "a b"]

    # When it is edited, and the old one is asked for again with other values
    edited = templates.render_args("cmd '{meta:f} x' {yyyy}", T, {"f": "a b"})
    again = templates.render_args("cmd {meta:f}", T, {"f": "c"})

    # Then each gives its own arguments, with the values of this call
    assert edited == ["cmd", "a b x", "2024"]
    assert again == ["cmd", "c"]


# -- end to end: trigger --meta and a file trigger, run once, the command's own argv ---------

ECHO_ARGV = "import json, sys; print('ARGV=' + json.dumps(sys.argv[1:]))"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    template = f"{sys.executable} -c {json.dumps(ECHO_ARGV)} {{meta:file}} {{yyyy}}"
    workflow = textwrap.dedent(f"""
        [[phase]]
        task = "echo"
        rule = "manual=1&files={inbox}/*"
        template = {json.dumps(template)}
        """)
    return make_site(tmp_path, {"echo.toml": workflow}, monkeypatch=monkeypatch)


def argv_of_the_run(capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["run", "--once"]) == 0
    db = Database(f"sqlite:///{SITE_DATABASE}")
    try:
        with db.read() as conn:
            (row,) = [Execution.from_row(r) for r in conn.execute(select(executions))]
    finally:
        db.close()
    assert row.status is Status.COMPLETE
    capsys.readouterr()
    assert main(["logs", str(row.id)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "ARGV=" in x)
    return list(json.loads(line.split("ARGV=", 1)[1]))


def test_a_meta_value_with_a_space_is_one_argument(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = ["--meta", "file=/data/my file.csv"]
    assert main(["trigger", "echo", "--at", "2024-01-02", *meta]) == 0
    assert argv_of_the_run(capsys) == ["/data/my file.csv", "2024"]


def test_a_file_path_with_a_space_a_quote_and_a_newline_is_one_argument(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = site / "inbox" / "my 'odd\"\nfile 2024-03-04.csv"
    path.write_text("x\n")
    assert main(["file", str(path)]) == 0
    assert argv_of_the_run(capsys) == [str(path), "2024"]
