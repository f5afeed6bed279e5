"""The spool folder: where it is, what a receipt is, what release and sweep delete."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scheduler.config import Config, parse_config
from scheduler.errors import ConfigError
from scheduler.executors import Result
from scheduler.executors.command import exit_code_of
from scheduler.executors.spool import Spool


def test_spool_defaults_beside_a_sqlite_file_else_in_the_config_folder(tmp_path: Path) -> None:
    config = parse_config({"scheduler": {"database": "sqlite:///data/t.db"}}, tmp_path / "c.toml")
    assert config.spool_dir == tmp_path / "data" / "t.db.spool"

    server = {"scheduler": {"database": "postgresql+psycopg://u@h/db"}}
    assert parse_config(server, tmp_path / "c.toml").spool_dir == tmp_path / ".tomlflow-spool"

    chosen = parse_config({"scheduler": {"spool": "receipts"}}, tmp_path / "c.toml")
    assert chosen.spool_dir == tmp_path / "receipts"
    assert Config(database="postgresql://u@h/db").spool_dir == Path.cwd() / ".tomlflow-spool"


def test_output_caps_are_read_and_checked(tmp_path: Path) -> None:
    keys = {"output_max_lines": 100, "output_max_bytes": 2048, "output_max_line": 512}
    config = parse_config({"scheduler": keys}, tmp_path / "c.toml")
    assert (config.output_max_lines, config.output_max_bytes, config.output_max_line) == (
        100,
        2048,
        512,
    )
    with pytest.raises(ConfigError, match="output_max_bytes"):
        parse_config({"scheduler": {"output_max_bytes": 0}}, tmp_path / "c.toml")


def test_a_receipt_counts_only_once_written_whole(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.ensure()
    rc = Path(spool.prefix(7) + ".rc")
    assert spool.receipt(7) is None
    rc.write_text("13")  # the supervisor was stopped mid-write: no newline yet
    assert spool.receipt(7) is None
    rc.write_text("0\n")
    receipt = spool.receipt(7)
    assert receipt is not None and receipt.status == 0


def test_stop_reason_round_trips(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.ensure()
    spool.write_stop(3, Result.CANCELLED, "cancelled by user")
    assert spool.stop(3) == (Result.CANCELLED, "cancelled by user")
    assert spool.stop(4) is None


def test_release_and_sweep_delete_only_what_they_are_told(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    for eid in (1, 2, 3):
        out, err = spool.open_output(eid)
        os.close(out)
        os.close(err)
    assert (tmp_path / "spool").stat().st_mode & 0o777 == 0o700

    spool.release([1])
    assert spool.ids() == {2, 3}
    assert spool.sweep(keep=[3]) == 1
    assert spool.ids() == {3}


@pytest.mark.parametrize(
    ("status", "code"), [(0, 0), (1, 1), (127, 127), (128, 128), (137, -9), (143, -15), (200, 200)]
)
def test_statuses_above_128_read_as_signals_when_they_name_one(status: int, code: int) -> None:
    assert exit_code_of(status) == code
