"""Executors against real processes (``sys.executable -c ...``) and real threads."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.errors import ExecutorError
from scheduler.executors import (
    Caps,
    InProcessExecutor,
    Launch,
    LocalExecutor,
    Orphan,
    Outcome,
    Reply,
    Result,
)
from scheduler.executors.command import replay
from scheduler.executors.output import size_text

T0 = datetime(2024, 3, 31, 1, 30, tzinfo=UTC)
PY = sys.executable


def clock() -> datetime:
    return T0


def launch(execution_id: int = 1, command: Sequence[str] | str = (), **kw: object) -> Launch:
    fields: dict[str, object] = {
        "task_id": "chain-1",
        "topic": "ingest",
        "job": "daily",
        "info": "ingest?day=2024-03-31",
        "task_time": T0,
        "attempt": 2,
        "meta": {"file": "a b.csv"},
    }
    fields.update(kw)
    return Launch(execution_id, command=command, **fields)  # type: ignore[arg-type]


def py(code: str, execution_id: int = 1, **kw: object) -> Launch:
    return launch(execution_id, [PY, "-c", code], **kw)


@pytest.fixture
def local() -> Iterator[LocalExecutor]:
    executor = LocalExecutor(max_workers=4, now=clock, kill_grace=0.3)
    yield executor
    executor.shutdown(grace=0)


def run_one(executor: LocalExecutor | InProcessExecutor, item: Launch) -> Outcome:
    executor.submit(item)
    outcomes = executor.collect(timeout=10)
    assert [o.execution_id for o in outcomes] == [item.execution_id]
    return outcomes[0]


def lines(outcome: Outcome, stream: str | None = None) -> list[str]:
    return [log.line for log in outcome.logs if stream in (None, log.stream)]


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie awaiting its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, within: float = 2.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


# --- results from exit codes and signals ---------------------------------------------------


@pytest.mark.parametrize(
    ("code", "result", "msg", "exit_code"),
    [
        ("pass", Result.COMPLETE, "", 0),
        (
            "import sys; sys.stderr.write('first\\nlast\\n\\n'); sys.exit(1)",
            Result.ERROR,
            "exit code 1: last",
            1,
        ),
        ("raise SystemExit(3)", Result.ERROR, "exit code 3", 3),
        ("import os; os.kill(os.getpid(), 9)", Result.ERROR, "killed by signal 9", -9),
    ],
)
def test_exit_status_decides_result(
    local: LocalExecutor, code: str, result: Result, msg: str, exit_code: int
) -> None:
    outcome = run_one(local, py(code))

    assert (outcome.result, outcome.msg, outcome.exit_code) == (result, msg, exit_code)


def test_output_lines_are_logged_in_order_with_clock_times(local: LocalExecutor) -> None:
    code = "import sys; print('out 1'); print('out 2', flush=True); sys.stderr.write('err')"

    outcome = run_one(local, py(code, execution_id=7))

    assert sorted(lines(outcome)) == ["err", "out 1", "out 2"]
    assert lines(outcome, "stdout") == ["out 1", "out 2"]
    assert [log.seq for log in outcome.logs] == [1, 2, 3]
    assert {(log.execution_id, log.ts) for log in outcome.logs} == {(7, T0)}
    assert (outcome.started_at, outcome.ended_at) == (T0, T0)


def test_undecodable_bytes_are_replaced(local: LocalExecutor) -> None:
    outcome = run_one(local, py("import sys; sys.stdout.buffer.write(b'a\\xffb\\r\\n')"))

    assert lines(outcome) == ["a\ufffdb"]


# --- __WF_EVENT__ ----------------------------------------------------------------------------


def test_events_set_result_msg_and_merged_meta(local: LocalExecutor) -> None:
    code = (
        "import sys\n"
        'print(\'__WF_EVENT__:{"meta": {"file": "a.csv", "rows": 3}}\')\n'
        'sys.stderr.write(\'__WF_EVENT__:{"result": "warn", "msg": "late", '
        '"meta": {"file": "b.csv"}}\\n\')\n'
        "sys.exit(4)\n"
    )

    outcome = run_one(local, py(code))

    assert (outcome.result, outcome.msg, outcome.exit_code) == (Result.WARN, "late", 4)
    assert outcome.meta == {"file": "b.csv", "rows": "3"}


def test_event_msg_without_result_keeps_exit_rule(local: LocalExecutor) -> None:
    code = 'print(\'__WF_EVENT__:{"msg": "hi"}\'); raise SystemExit(2)'

    outcome = run_one(local, py(code))

    assert (outcome.result, outcome.msg) == (Result.ERROR, "exit code 2")


@pytest.mark.parametrize(
    ("payload", "warning"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"result": "great"}', "unknown result 'great'"),
        ('{"meta": "x"}', "meta is not an object"),
    ],
)
def test_bad_event_is_logged_with_warning_not_fatal(
    local: LocalExecutor, payload: str, warning: str
) -> None:
    outcome = run_one(local, py(f"print({'__WF_EVENT__:' + payload!r})"))

    assert outcome.result is Result.COMPLETE
    assert lines(outcome, "stdout") == ["__WF_EVENT__:" + payload]
    [system] = lines(outcome, "system")
    assert warning in system


def test_line_cap_keeps_first_and_last_halves_and_honours_events() -> None:
    executor = LocalExecutor(max_workers=1, now=clock, caps=Caps(lines=5))
    event = '__WF_EVENT__:{"result": "alert", "msg": "done"}'
    code = f"for i in range(200_000): print(i)\nprint({event!r})\n"
    try:
        outcome = run_one(executor, py(code))
    finally:
        executor.shutdown(grace=0)

    assert (outcome.result, outcome.msg) == (Result.ALERT, "done")
    omitted = sum(len(str(i)) + 1 for i in range(2, 199_998))
    marker = f"... 199996 lines ({size_text(omitted)}) omitted ..."
    assert lines(outcome) == ["0", "1", marker, "199998", "199999", event]
    assert [x.stream for x in outcome.logs][2] == "system"
    assert [x.seq for x in outcome.logs] == [1, 2, 3, 4, 5, 6]


def test_byte_cap_keeps_first_and_last_halves_by_size() -> None:
    # 100 lines of 99 characters + newline = 10,000 bytes, against a 2,000-byte cap
    executor = LocalExecutor(max_workers=1, now=clock, caps=Caps(bytes=2_000))
    try:
        outcome = run_one(executor, py("for i in range(100): print(f'{i:02d}' + 'x' * 97)"))
    finally:
        executor.shutdown(grace=0)

    kept = lines(outcome)
    assert [x[:2] for x in kept[:10]] == [f"{i:02d}" for i in range(10)]
    assert kept[10] == "... 80 lines (8 KB) omitted ..."
    assert [x[:2] for x in kept[11:]] == [f"{i:02d}" for i in range(90, 100)]


def test_a_runaway_output_does_not_fill_the_disk_and_a_replay_skips_what_was_freed() -> None:
    # 300,000 lines of 100 bytes (30 MB) against a 1 MB byte cap
    executor = LocalExecutor(max_workers=1, now=clock, caps=Caps(bytes=1_000_000, line=1_000))
    code = "import sys\nfor i in range(300_000): sys.stdout.write(f'{i:099d}\\n')"
    try:
        outcome = run_one(executor, py(code))
        out = Path(executor.spool.prefix(1) + ".out")
        size, used = out.stat().st_size, out.stat().st_blocks * 512
        replayed = replay(
            Orphan(1, None, T0), executor.spool, T0, Caps(bytes=1_000_000, line=1_000)
        )
    finally:
        executor.shutdown(grace=0)

    assert size == 30_000_000
    assert used < 5_000_000  # the consumed middle was freed while the command ran
    kept = lines(outcome)
    assert kept[0] == f"{0:099d}" and kept[-1] == f"{299_999:099d}"
    assert "lines (" in kept[len(kept) // 2 - 1] + kept[len(kept) // 2]
    # a scheduler that died would find the head and the last lines, the freed middle skipped
    again = lines(replayed)
    assert again[0] == kept[0]
    assert again[-4_000:] == kept[-4_000:]
    assert all(line == "" or line[0] != "\0" for line in again)


def test_a_50_mb_line_is_cut_and_never_stored_whole() -> None:
    executor = LocalExecutor(max_workers=1, now=clock, caps=Caps(line=65_536))
    code = "import sys; sys.stdout.write('y' * 50_000_000 + '\\nnext\\n')"
    try:
        outcome = run_one(executor, py(code))
    finally:
        executor.shutdown(grace=0)

    first, second = lines(outcome)
    assert first == "y" * 65_536 + " ... [line cut: 50 MB more]"
    assert second == "next"


def test_timeout_kills_a_setsid_grandchild_through_its_environment(local: LocalExecutor) -> None:
    # A grandchild in a session of its own escapes the process group, not the execution's tag
    code = "setsid sleep 30 & echo $!; sleep 30"

    outcome = run_one(local, launch(1, code, shell=True, timeout=timedelta(milliseconds=500)))

    assert (outcome.result, outcome.msg) == (Result.ERROR, "timeout after 500ms")
    assert wait_gone(int(lines(outcome, "stdout")[0]))


def test_cancel_kills_a_setsid_grandchild_too(local: LocalExecutor) -> None:
    local.submit(launch(4, "setsid sleep 30 & echo $!; sleep 30", shell=True))
    while not (local.spool.has_output(4) and Path(local.spool.prefix(4) + ".out").read_text()):
        time.sleep(0.01)
    grandchild = int(Path(local.spool.prefix(4) + ".out").read_text())

    local.cancel(4, "cancelled by user")
    [outcome] = local.collect(timeout=5)

    assert (outcome.result, outcome.msg) == (Result.CANCELLED, "cancelled by user")
    assert wait_gone(grandchild)


def test_a_shell_exit_still_leaves_a_receipt(local: LocalExecutor) -> None:
    outcome = run_one(local, launch(1, "echo before; exit 7; echo after", shell=True))

    assert (outcome.result, outcome.exit_code, lines(outcome)) == (
        Result.ERROR,
        7,
        ["before"],
    )


# --- environment, shell, start failures ----------------------------------------------------


def test_environment_carries_launch_identity_and_meta(
    local: LocalExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("TOMLFLOW_")]:
        monkeypatch.delenv(name)  # the launch's own variables only, whatever this shell has set
    code = (
        "import os, json\n"
        "print(json.dumps({k: v for k, v in os.environ.items()"
        " if k.startswith('TOMLFLOW_') or k == 'EXTRA'}))\n"
    )

    outcome = run_one(local, py(code, execution_id=42, env={"EXTRA": "x"}))

    env = json.loads(lines(outcome, "stdout")[0])
    assert json.loads(env.pop("TOMLFLOW_META")) == {"file": "a b.csv"}
    assert env == {
        "EXTRA": "x",
        "TOMLFLOW_EXECUTION_ID": "42",
        "TOMLFLOW_SPOOL": str(local.spool.path),
        "TOMLFLOW_TASK_ID": "chain-1",
        "TOMLFLOW_TOPIC": "ingest",
        "TOMLFLOW_JOB": "daily",
        "TOMLFLOW_INFO": "ingest?day=2024-03-31",
        "TOMLFLOW_TASK_TIME": "2024-03-31T01:30:00+00:00",
        "TOMLFLOW_ATTEMPT": "2",
    }


def test_task_time_absent_is_empty(local: LocalExecutor) -> None:
    code = "import os; print(repr(os.environ['TOMLFLOW_TASK_TIME']))"

    outcome = run_one(local, py(code, task_time=None))

    assert lines(outcome) == ["''"]


def test_argv_is_not_interpreted_by_a_shell(local: LocalExecutor) -> None:
    argv = [PY, "-c", "import sys; print(sys.argv[1])", "a; echo injected $HOME"]

    outcome = run_one(local, launch(1, argv))

    assert lines(outcome) == ["a; echo injected $HOME"]


def test_shell_true_runs_through_the_shell(local: LocalExecutor) -> None:
    outcome = run_one(local, launch(1, "echo a; echo b >&2; exit 5", shell=True))

    assert lines(outcome, "stdout") == ["a"]
    assert (outcome.result, outcome.msg) == (Result.ERROR, "exit code 5: b")


def test_string_without_shell_is_split_like_a_command_line(local: LocalExecutor) -> None:
    command = f"{PY} -c 'import sys; print(sys.argv[1:])' 'x y' ';'"

    outcome = run_one(local, launch(1, command))

    assert lines(outcome) == ["['x y', ';']"]


@pytest.mark.parametrize(
    ("command", "cwd", "msg"),
    [
        (["no-such-program-xyz", "a"], None, "command not found: no-such-program-xyz"),
        ([], None, "empty command"),
        ("   ", None, "empty command"),
        ("echo 'unclosed", None, "cannot split command: No closing quotation"),
        ([PY, "-c", "pass"], "/no/such/dir", "bad working directory /no/such/dir"),
    ],
)
def test_start_failure_is_an_error_outcome(
    local: LocalExecutor, command: Sequence[str] | str, cwd: str | None, msg: str
) -> None:
    outcome = run_one(local, launch(1, command, cwd=cwd))

    assert outcome.result is Result.ERROR
    assert outcome.msg.startswith(msg)
    assert (outcome.pid, outcome.exit_code) == (None, None)
    assert local.started() == [(1, None, T0)]


def test_permission_denied_is_an_error_outcome(local: LocalExecutor, tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")

    outcome = run_one(local, launch(1, [str(script)]))

    assert (outcome.result, outcome.msg) == (Result.ERROR, f"permission denied: {script}")


def test_a_program_is_looked_up_afresh_when_it_appears_or_goes(
    local: LocalExecutor, tmp_path: Path
) -> None:
    # Given a PATH folder where the program is missing, then present, then gone again
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "tomlflow-test-tool"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def start(execution_id: int) -> Outcome:
        return run_one(local, launch(execution_id, ["tomlflow-test-tool"], env=env))

    # When / then: each start sees the folder as it is at that moment
    assert start(1).msg == "command not found: tomlflow-test-tool"
    program.write_text("#!/bin/sh\necho here\n")
    program.chmod(0o755)
    assert (start(2).result, lines(start(3))) == (Result.COMPLETE, ["here"])
    program.unlink()
    assert start(4).msg == "command not found: tomlflow-test-tool"


# --- timeout, cancel, leftovers ------------------------------------------------------------

SPAWN_GRANDCHILD = (
    "import subprocess, sys, time\n"
    "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
    "print(g.pid, flush=True)\n"
    "time.sleep(30)\n"
)


def test_timeout_kills_child_and_grandchild(local: LocalExecutor) -> None:
    started = time.monotonic()

    outcome = run_one(local, py(SPAWN_GRANDCHILD, timeout=timedelta(milliseconds=700)))

    assert time.monotonic() - started < 3
    assert (outcome.result, outcome.msg) == (Result.ERROR, "timeout after 700ms")
    assert outcome.exit_code == -15
    assert lines(outcome, "system") == ["timeout after 700ms"]
    grandchild = int(lines(outcome, "stdout")[0])
    assert outcome.pid is not None
    assert wait_gone(outcome.pid)
    assert wait_gone(grandchild)


def test_timeout_escalates_to_sigkill_when_sigterm_is_ignored(local: LocalExecutor) -> None:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )

    outcome = run_one(local, py(code, timeout=timedelta(seconds=0.5)))

    assert (outcome.result, outcome.exit_code) == (Result.ERROR, -9)


def test_cancel_running_kills_group_and_reports_reason(local: LocalExecutor) -> None:
    local.submit(py(SPAWN_GRANDCHILD, execution_id=5))
    while not local.started():
        time.sleep(0.01)

    local.cancel(5, "cancelled by alice")
    [outcome] = local.collect(timeout=5)

    assert (outcome.result, outcome.msg) == (Result.CANCELLED, "cancelled by alice")
    assert outcome.pid is not None
    assert wait_gone(outcome.pid)


def test_cancel_waiting_launch_reports_without_starting() -> None:
    executor = LocalExecutor(max_workers=1, now=clock)
    try:
        executor.submit(py("import time; time.sleep(0.3)", execution_id=1))
        executor.submit(py("print('never')", execution_id=2))
        executor.cancel(2, "not needed")
        executor.cancel(99, "unknown ids are ignored")
        first = executor.collect(timeout=5)
        second = executor.collect(timeout=5)
    finally:
        executor.shutdown(grace=0)

    assert [(o.execution_id, o.result, o.msg, o.pid) for o in first] == [
        (2, Result.CANCELLED, "not needed", None)
    ]
    assert [(o.execution_id, o.result) for o in second] == [(1, Result.COMPLETE)]
    assert [s[0] for s in executor.started()] == [1]


def test_what_a_command_leaves_in_its_process_group_is_killed_when_it_ends(
    local: LocalExecutor,
) -> None:
    code = (
        "import subprocess, sys\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "print(g.pid, flush=True)\n"
    )

    started = time.monotonic()
    outcome = run_one(local, py(code))

    assert time.monotonic() - started < 3
    assert outcome.result is Result.COMPLETE
    assert wait_gone(int(lines(outcome, "stdout")[0]))


def test_exit_is_noticed_without_pidfd(
    local: LocalExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError("pidfd not supported")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)

    outcome = run_one(local, py("import sys; print('x'); sys.exit(6)"))

    assert (outcome.result, outcome.exit_code, lines(outcome)) == (Result.ERROR, 6, ["x"])


# --- capacity, bookkeeping, shutdown -------------------------------------------------------


def test_max_workers_bounds_concurrency() -> None:
    executor = LocalExecutor(max_workers=2, now=clock)
    code = "import time; a = time.time(); time.sleep(0.3); print(a, time.time())"
    try:
        for i in range(4):
            executor.submit(py(code, execution_id=i))
        assert executor.running() == 4
        outcomes = executor.collect(timeout=5)
        while executor.running():
            outcomes += executor.collect(timeout=5)
    finally:
        executor.shutdown(grace=0)

    spans = [tuple(map(float, lines(o)[0].split())) for o in outcomes]
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    overlap = [sum(step for _, step in edges[: i + 1]) for i in range(len(edges))]
    assert max(overlap) == 2
    assert executor.running() == 0


def test_started_reports_each_start_once_with_pid(local: LocalExecutor) -> None:
    outcome = run_one(local, py("pass", execution_id=3))

    assert local.started() == [(3, outcome.pid, T0)]
    assert local.started() == []


def test_collect_returns_at_once_when_nothing_in_flight(local: LocalExecutor) -> None:
    started = time.monotonic()

    assert local.collect(timeout=None) == []
    assert local.collect(timeout=5) == []
    assert time.monotonic() - started < 0.5


def test_duplicate_in_flight_id_is_refused(local: LocalExecutor) -> None:
    local.submit(py("import time; time.sleep(0.2)", execution_id=1))

    with pytest.raises(ExecutorError, match="already in flight"):
        local.submit(py("pass", execution_id=1))


def test_shutdown_waits_grace_then_cancels_rest() -> None:
    executor = LocalExecutor(max_workers=2, now=clock, kill_grace=0.3)
    executor.submit(py("import time; time.sleep(0.1)", execution_id=1))
    executor.submit(py("import time; time.sleep(30)", execution_id=2))
    executor.submit(py("pass", execution_id=3))
    seen: list[object] = []
    while len(seen) < 2:  # both workers busy, so 3 is still waiting
        seen += executor.started()
        time.sleep(0.01)

    outcomes = executor.shutdown(grace=0.6)

    by_id = {o.execution_id: (o.result, o.msg) for o in outcomes}
    assert by_id == {
        1: (Result.COMPLETE, ""),
        2: (Result.CANCELLED, "executor shut down: still running after 600ms"),
        3: (Result.CANCELLED, "executor shut down before it started"),
    }
    with pytest.raises(ExecutorError, match="shut down"):
        executor.submit(py("pass", execution_id=4))


# --- InProcessExecutor -----------------------------------------------------------------------


def boom(item: Launch) -> None:
    raise ValueError(f"bad input {item.info}")


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        (lambda item: None, (Result.COMPLETE, "", {})),
        (lambda item: Result.WARN, (Result.WARN, "", {})),
        (
            lambda item: Reply(Result.ALERT, "hot", {"k": item.job}),
            (Result.ALERT, "hot", {"k": "daily"}),
        ),
        (boom, (Result.ERROR, "ValueError: bad input ingest?day=2024-03-31", {})),
        (
            lambda item: 3,
            (Result.ERROR, "TypeError: callable returned int; expected Result, Reply or None", {}),
        ),
    ],
)
def test_in_process_results(func: object, expected: tuple[Result, str, dict[str, str]]) -> None:
    executor = InProcessExecutor(max_workers=2, now=clock)

    outcome = run_one(executor, launch(9, callable=func))
    executor.shutdown(grace=0)

    assert (outcome.result, outcome.msg, dict(outcome.meta)) == expected
    assert (outcome.pid, outcome.exit_code, outcome.started_at) == (None, None, T0)
    assert executor.started() == [(9, None, T0)]


def test_in_process_timeout_and_cancel_report_at_once() -> None:
    executor = InProcessExecutor(max_workers=2, now=clock)
    slow = launch(1, callable=lambda item: time.sleep(1), timeout=timedelta(milliseconds=200))
    stuck = launch(2, callable=lambda item: time.sleep(1))
    executor.submit(slow)
    executor.submit(stuck)
    executor.cancel(2, "stop")

    outcomes = executor.collect(timeout=None)
    outcomes += executor.collect(timeout=None)
    executor.shutdown(grace=0)

    by_id = {o.execution_id: (o.result, o.msg) for o in outcomes}
    assert by_id == {1: (Result.ERROR, "timeout after 200ms"), 2: (Result.CANCELLED, "stop")}
    assert executor.running() == 0
