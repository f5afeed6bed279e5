"""Property: whatever one workflow file holds, every other file still loads, ``validate`` and
``refresh`` exit 0, 1 or 2 without a traceback, and no bad phase is left without a status.

Files are generated from the bundled workflows (``workflows/*.toml`` and the starter example)
by mutating keys, values, types, rules and bytes; the commands run in-process through
``scheduler.cli.main`` (and once as a subprocess, below).
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import tomllib
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime
from pathlib import Path
from typing import Any

import tomlkit
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from scheduler.cli import main
from scheduler.errors import RuleError
from scheduler.rules import parse_rule
from scheduler.store.db import Database
from scheduler.store.workflows import file_rows, phase_rows
from scheduler.validation import MAX_NAME_BYTES, MAX_RETRY
from tests.test_range_checks import HOSTILE

REPO = Path(__file__).resolve().parent.parent
SEEDS = [p.read_bytes() for p in sorted((REPO / "workflows").glob("*.toml"))] + [
    (REPO / "scheduler" / "starter" / "example.toml").read_bytes()
]
GOOD = b'[[phase]]\ntask = "good"\nrule = "cron=0 5 * * *"\ntemplate = "echo ok"\n'
KEYS = ["task", "Task", "rule", "depends_on", "dependsOn", "retry", "template", "templat", "x"]
RULE_KEYS = ["cron", "offset", "job", "retry_delay", "no_alert", "require", "files", "for",
             "by", "meta", "meta-file", "tz", "timeout", "retry_backoff", "retry_max_delay",
             "concurrency", "catchup", "manual", "sla", "zz"]  # fmt: skip
NASTY_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", "\0", "a\0b", "x" * 600, "é" * 300, "{nope}", "{yyyy-{x}", "'\"", "\n",
                     "%00", "%zz", ";", "0 0 30 2 *", "@every 1ns", "@every 99999999d",
                     "-99999999d", "9" * 5000, "Europe/Berlin", "../../etc/passwd"]),
)  # fmt: skip
VALUES = st.one_of(
    NASTY_TEXT,
    st.sampled_from([2**63, 2**31, -1, 10**4000, 0.5, True]),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(), max_size=2),
    st.just(datetime(2020, 1, 2, 3, 4)),
)
RULES = st.lists(st.tuples(st.sampled_from(RULE_KEYS), NASTY_TEXT), max_size=4).map(
    lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A bundled workflow file with its keys, values, types, rules or bytes changed."""
    seed = draw(st.sampled_from(SEEDS))
    how = draw(st.sampled_from(["value", "rule", "key", "bytes", "generated"]))
    if how == "bytes":
        return _bytes(draw, seed)
    phases: list[dict[str, Any]] = tomllib.loads(seed.decode())["phase"]
    if how == "generated":
        phases = [draw(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5))]
    for _ in range(draw(st.integers(1, 3))):
        phase = phases[draw(st.integers(0, len(phases) - 1))]
        # half the time a key the phase has (its value changes type or range), else any key
        key = draw(st.sampled_from(sorted(phase) or KEYS) | st.sampled_from(KEYS))
        if how == "rule":
            phase["rule"] = draw(RULES)
        elif how == "key" and phase:
            old = draw(st.sampled_from(sorted(phase)))
            phase[key] = phase.pop(old)
        else:
            phase[key] = draw(VALUES)
    return tomlkit.dumps({"phase": phases}).encode("utf-8", "surrogatepass")


def _bytes(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        if draw(st.booleans()):
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        else:
            del data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


def run(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue() + err.getvalue()


def site(root: Path, mutant: bytes) -> str:
    (root / "workflows").mkdir()
    (root / "workflows" / "a_good.toml").write_bytes(GOOD)
    (root / "workflows" / "m.toml").write_bytes(mutant)
    config = root / "tomlflow.toml"
    config.write_text(f'[scheduler]\nworkflows = "workflows"\ndatabase = "sqlite:///{root}/t.db"\n')
    return str(config)


def assert_no_bad_phase_without_status(url: str) -> None:
    db = Database(url)
    try:
        with db.read() as conn:
            files, phases = file_rows(conn), phase_rows(conn)
    finally:
        db.close()
    assert "a_good.toml" in files and not files["a_good.toml"].error
    assert [(p.task, p.status) for p in phases if p.file_path == "a_good.toml"] == [("good", "")]
    assert "m.toml" in files
    for phase in phases:
        if phase.status:
            continue
        # a clean phase holds only values the scheduler can use
        assert phase.task.partition(":")[0] and "\0" not in phase.task
        assert len(phase.task.encode()) <= MAX_NAME_BYTES
        assert 0 <= phase.retry <= MAX_RETRY
        assert "\0" not in phase.template + phase.rule
        try:
            parse_rule(phase.rule)
        except RuleError as exc:  # pragma: no cover - the failure message
            raise AssertionError(f"clean phase with a bad rule: {exc}") from None


ISSUE = b'[[phase]]\ntask = "a"\nrule = "cron=0 5 * * *"\nretry = 9223372036854775808\n'


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
@example(ISSUE)  # the integer no database holds, from the issue
@example(b'[[phase]]\ntask = "a"\nrule = "cron=0 5 * * *"\ntemplate = "x \\u0000"\n')
def test_any_file_leaves_the_others_loading_and_the_commands_standing(mutant: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = site(Path(folder), mutant)
        for command in ("validate", "refresh"):
            code, output = run(command, "--config", config)
            assert code in (0, 1, 2), output
            assert "Traceback" not in output
        assert_no_bad_phase_without_status(f"sqlite:///{folder}/t.db")


def test_validate_as_a_subprocess_reports_every_hostile_file_without_a_traceback(
    tmp_path: Path,
) -> None:
    config = site(tmp_path, GOOD.replace(b"good", b"other"))
    for name, text in HOSTILE.items():
        (tmp_path / "workflows" / name).write_text(f"[[phase]]\n{text}\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "scheduler", "validate", "--config", config],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    for name in HOSTILE:
        assert name in done.stdout
