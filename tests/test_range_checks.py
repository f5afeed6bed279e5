"""One bad value never stops the others: a folder of hostile workflow files refreshes into the
store (SQLite, and PostgreSQL under .ci/postgres), every other file loads, and every bad phase
carries a status."""

from __future__ import annotations

import pytest

from scheduler.catalog import Catalog
from scheduler.store.workflows import file_rows
from scheduler.validation import Severity
from tests.conftest import WriteWorkflow

GOOD = '[[phase]]\ntask = "good"\nrule = "cron=0 5 * * *"\ntemplate = "echo ok"\n'

# Each holds one phase "bad" (or a phase without a usable task) whose value the database could
# not hold, or that would overflow later; today's first one stopped every file from loading.
HOSTILE = {
    "retry_int64.toml": 'task = "bad"\nrule = "cron=0 5 * * *"\nretry = 9223372036854775808',
    "retry_int32.toml": 'task = "bad"\nrule = "cron=0 5 * * *"\nretry = 2147483648',
    "retry_float.toml": 'task = "bad"\nrule = "cron=0 5 * * *"\nretry = 1.5',
    "retry_table.toml": 'task = "bad"\nrule = "cron=0 5 * * *"\nretry = {a = 1}',
    "nul_template.toml": 'task = "bad"\nrule = "cron=0 5 * * *"\ntemplate = "echo \\u0000"',
    "nul_job.toml": 'task = "bad"\nrule = "cron=0 5 * * *&job=%00"',
    "nul_task.toml": 'task = "b\\u0000d"\nrule = "cron=0 5 * * *"',
    "nul_rule.toml": 'task = "bad"\nrule = "cron=0 5 * * *&x\\u0000=1"',
    "long_task.toml": f'task = "{"t" * 600}"\nrule = "cron=0 5 * * *"',
    "long_job.toml": f'task = "bad"\nrule = "cron=0 5 * * *&job={"j" * 600}"',
    "long_parent.toml": f'task = "bad"\ndepends_on = "{"p" * 600}"',
    "long_rule.toml": f'task = "bad"\nrule = "{"x;" * 5000}"',
    "offset.toml": 'task = "bad"\nrule = "cron=0 5 * * *&offset=-99999999d"',
    "every.toml": 'task = "bad"\nrule = "cron=@every 999999999d"',
    "for.toml": 'task = "bad"\nrule = "cron=0 5 * * *&for=-36000d&by=hour"',
    "timeout.toml": 'task = "bad"\nrule = "cron=0 5 * * *&timeout=99999999d"',
    "concurrency.toml": f'task = "bad"\nrule = "cron=0 5 * * *&concurrency={"9" * 5000}"',
    "digits.toml": f'task = "bad"\nrule = "cron=0 5 * * *"\nretry = {"9" * 5000}',
    "notask.toml": 'rule = "cron=0 5 * * *"',
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_value_is_a_status_and_every_other_file_loads(
    catalog: Catalog, write_workflow: WriteWorkflow, name: str
) -> None:
    # given a good file beside one hostile file, when refreshed, then both are in the store
    write_workflow("a_good.toml", GOOD)
    write_workflow(name, f"[[phase]]\n{HOSTILE[name]}\n")
    result = catalog.refresh()
    assert set(result.changed) == {"a_good.toml", name}
    specs = {(s.file_path, s.task): s for s in catalog.phases()}
    assert specs[("a_good.toml", "good")].status == ""
    with catalog.db.read() as conn:
        broken = {key: row.error for key, row in file_rows(conn).items() if row.error}
    bad = [s for (file, _), s in specs.items() if file == name]
    # then the hostile file is either unreadable as TOML (a file error) or its phase says why
    assert broken.get(name) or (len(bad) == 1 and bad[0].severity is Severity.ERROR)
    assert not bad or bad[0].status.startswith(("invalid", "missing key: task"))
