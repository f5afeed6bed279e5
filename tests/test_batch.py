"""Batches: where a rule's meta-file is found (beside the workflow file, then the working
directory, as flowlord looks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler import batch
from scheduler.errors import WorkflowError
from scheduler.rules import parse_rule

RULE = parse_rule("cron=0 0 * * *&meta-file=test/rows.json")


def rows_file(folder: Path, value: str) -> None:
    (folder / "test").mkdir(parents=True, exist_ok=True)
    (folder / "test" / "rows.json").write_text(f'{{"name": "{value}"}}\n', encoding="utf-8")


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A workflow folder and a different working directory (the test runs in it)."""
    workflows, cwd = tmp_path / "workflows", tmp_path / "cwd"
    workflows.mkdir()
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return workflows, cwd


def test_a_meta_file_beside_the_workflow_file_comes_first(places: tuple[Path, Path]) -> None:
    workflows, cwd = places
    rows_file(workflows, "beside")
    rows_file(cwd, "cwd")
    assert batch.rows_for(RULE, workflows) == [{"name": "beside"}]


def test_a_meta_file_is_found_from_the_working_directory_as_flowlord_does(
    places: tuple[Path, Path],
) -> None:
    # given a flowlord folder whose meta-file path is relative to where the scheduler runs
    workflows, cwd = places
    rows_file(cwd, "cwd")
    assert batch.rows_for(RULE, workflows) == [{"name": "cwd"}]


def test_a_missing_meta_file_names_both_paths_tried(places: tuple[Path, Path]) -> None:
    workflows, cwd = places
    with pytest.raises(WorkflowError) as caught:
        batch.rows_for(RULE, workflows)
    message = str(caught.value)
    assert str(workflows / "test" / "rows.json") in message
    assert str(cwd / "test" / "rows.json") in message


def test_an_absolute_meta_file_is_read_where_it_says(places: tuple[Path, Path]) -> None:
    workflows, cwd = places
    rows_file(cwd, "absolute")
    rule = parse_rule(f"cron=0 0 * * *&meta-file={cwd / 'test' / 'rows.json'}")
    assert batch.rows_for(rule, workflows) == [{"name": "absolute"}]
