"""What every command shares: lazy loading, --config before or after, one-line filesystem errors."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from scheduler.cli import COMMAND_TABLE, main
from scheduler.store.db import Database
from tests.conftest import SITE_DATABASE, make_site

REPO = Path(__file__).resolve().parent.parent

ONE_PHASE = '[[phase]]\ntask = "hello"\nrule = "cron=0 6 * * *"\ntemplate = "echo hi"\n'

HEAVY = ("sqlalchemy", "networkx", "rich", "anthropic", "mcp", "scheduler.engine")


def loaded_after(argv: list[str]) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``argv``."""
    code = (
        "import sys\nfrom scheduler.cli import main\n"
        f"main({argv!r})\n"
        f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("LOADED"))
    return list(json.loads(line.removeprefix("LOADED ").replace("'", '"')))


@pytest.mark.parametrize("argv", [["--version"], ["--help"]])
def test_version_and_help_load_no_command_module(argv: list[str]) -> None:
    # given a fresh interpreter, when it answers --version or --help, then no heavy module loaded
    assert loaded_after(argv) == []


def test_the_command_table_names_every_command_of_every_module() -> None:
    # given each module the table points to, then its COMMANDS are exactly the table's entries
    registered = {}
    for module in {entry.module for entry in COMMAND_TABLE.values()}:
        for command in importlib.import_module(f"scheduler.cli.{module}").COMMANDS:
            registered[command.name] = (module, command)
    assert set(registered) == set(COMMAND_TABLE)
    for name, entry in COMMAND_TABLE.items():
        module, command = registered[name]
        assert module == entry.module
        found = getattr(importlib.import_module(f"scheduler.cli.{module}"), entry.attribute)
        assert found is command
        assert isinstance(command, click.Command)


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMAND_TABLE:
        assert f"\n  {name} " in out


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A site in tmp_path/site, while the tests work in an empty tmp_path/cwd."""
    site = make_site(tmp_path / "site", {"one.toml": ONE_PHASE})
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.delenv("TOMLFLOW_CONFIG", raising=False)
    Database(f"sqlite:///{site / SITE_DATABASE}").close()
    return site / "tomlflow.toml"


@pytest.mark.parametrize("before", [True, False])
def test_config_works_before_and_after_the_command(
    elsewhere: Path, before: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ["--config", str(elsewhere)]
    argv = [*config, "phases", "--json"] if before else ["phases", "--json", *config]
    assert main(argv) == 0
    assert [p["task"] for p in json.loads(capsys.readouterr().out)["phases"]] == ["hello"]


def test_config_after_the_command_wins(
    elsewhere: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(tmp_path / "nowhere.toml"), "phases", "--config",
                 str(elsewhere)]) == 0
    assert "hello" in capsys.readouterr().out


# -- filesystem errors: one line naming the path, exit 2 --------------------------------------
# Tests run as root, where permission bits stop nothing: they aim at /proc and at paths below
# a regular file instead.


def assert_one_line_error(capsys: pytest.CaptureFixture[str], *expected: str) -> None:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ")
    for text in expected:
        assert text in err


def test_init_into_proc_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "/proc/x"]) == 2
    assert_one_line_error(capsys, "/proc/x")


def test_init_into_a_folder_that_refuses_files_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # /proc/self exists but no file can be created in it
    assert main(["init", "/proc/self"]) == 2
    assert_one_line_error(capsys, "/proc/self/tomlflow.toml")


def test_init_below_a_regular_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "plain").write_text("")
    assert main(["init", str(tmp_path / "plain" / "site")]) == 2
    assert_one_line_error(capsys, str(tmp_path / "plain" / "site"), "Not a directory")


def test_workflow_new_in_a_folder_below_a_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    site = make_site(tmp_path, {}, monkeypatch=monkeypatch)
    (site / "plain").write_text("")
    (site / "tomlflow.toml").write_text('[scheduler]\nworkflows = "plain/workflows"\n')
    assert main(["workflow", "new", "etl"]) == 2
    assert_one_line_error(capsys, "plain/workflows", "Not a directory")


def test_phase_add_into_a_folder_that_cannot_be_written_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    site = make_site(tmp_path, {"one.toml": ONE_PHASE}, monkeypatch=monkeypatch)
    folder = str(site / "workflows")
    real_open = os.open

    def refusing_open(path: str | os.PathLike[str], flags: int, *args: int) -> int:
        # As root no folder refuses a new file, so refuse the ones phase add creates here.
        if str(path).startswith(folder) and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing_open)
    assert main(["phase", "add", "one.toml", "--task", "bye", "--depends-on", "hello",
                 "--template", "echo bye"]) == 2
    assert_one_line_error(capsys, folder, "Permission denied")
    assert (site / "workflows" / "one.toml").read_text() == ONE_PHASE


def test_tomlflow_alone_prints_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("Usage: tomlflow") and "Commands:" in captured.out
    assert captured.err == ""


def test_a_command_missing_from_the_table_is_still_found(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a module's command the table does not name (a new one someone forgot to list)
    import scheduler.cli as cli_package

    table = {k: v for k, v in COMMAND_TABLE.items() if k != "fmt"}
    monkeypatch.setattr(cli_package, "COMMAND_TABLE", table)
    group = cli_package.LazyGroup(name="tomlflow")
    # then the group still finds it in its module's COMMANDS, and unknown names stay unknown
    with click.Context(group) as ctx:
        found = group.get_command(ctx, "fmt")
        assert found is not None and found.name == "fmt"
        assert group.get_command(ctx, "nosuch") is None


def test_config_before_a_command_of_a_group(elsewhere: Path) -> None:
    # `workflow new` sits one group deeper; the option given first still reaches it
    assert main(["--config", str(elsewhere), "workflow", "new", "etl"]) == 0
    assert (elsewhere.parent / "workflows" / "etl.toml").is_file()
