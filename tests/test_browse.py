"""store/browse: the dashboard's and `history`'s read queries, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.store import browse, history
from scheduler.store.browse import RunFilter
from scheduler.store.db import Database
from scheduler.store.history import Finish, LogRow, NewAlert, NewExecution, Status, Trigger
from scheduler.tasktime import iso

T0 = datetime(2024, 1, 2, 10, 0, tzinfo=UTC)


def add(
    db: Database,
    task: str,
    created: datetime,
    *,
    trigger: Trigger = Trigger.CRON,
    task_time: datetime | None = None,
    chain: str = "c",
    file_path: str = "a.toml",
    attempt: int = 1,
) -> int:
    row = NewExecution(
        chain, file_path, task, task_time or created, trigger, "echo", {}, created, attempt=attempt
    )
    with db.write() as conn:
        history.insert_executions(conn, [row], created)
        return history.list_executions(conn, limit=1)[0].id


def end(
    db: Database, execution_id: int, status: Status, started: datetime, seconds: float = 1.0
) -> None:
    with db.write() as conn:
        history.mark_running(conn, [execution_id], started)
        history.record_finishes(
            conn,
            [Finish(execution_id, status, "", 0, started, started + timedelta(seconds=seconds))],
        )


@pytest.mark.parametrize("cap", [10_000, 2])
@pytest.mark.parametrize("where", [RunFilter(), RunFilter(task="t")])
def test_list_runs_pages_by_id_both_ways(
    db: Database, monkeypatch: pytest.MonkeyPatch, cap: int, where: RunFilter
) -> None:
    # a cap of 2 makes the filter "dense": the page is read in id order, not from its ids
    monkeypatch.setattr(browse, "COUNT_CAP", cap)
    ids = [add(db, "t", T0 + timedelta(minutes=i)) for i in range(7)]
    other = add(db, "other", T0 - timedelta(days=1))
    newest_first = sorted(ids + ([other] if where.task is None else []), reverse=True)
    with db.read() as conn:
        first = browse.list_runs(conn, where, 3)
        second = browse.list_runs(conn, where, 3, before=first.older)
        last = browse.list_runs(conn, where, 3, before=second.older)
        back = browse.list_runs(conn, where, 3, after=second.newer)
    assert [r.id for r in first.rows] == newest_first[:3] and first.newer is None
    assert [r.id for r in second.rows] == newest_first[3:6]
    assert second.newer == newest_first[3]
    assert [r.id for r in last.rows] == newest_first[6:] and last.older is None
    assert [r.id for r in back.rows] == newest_first[:3]
    assert back.newer is None and back.older == first.older
    assert first.total == min(len(newest_first), cap + 1)


def test_filters_combine(db: Database) -> None:
    a = add(db, "a", T0, trigger=Trigger.MANUAL, task_time=T0 - timedelta(days=1))
    add(db, "a", T0 + timedelta(hours=1), task_time=T0)
    b = add(db, "b", T0 + timedelta(hours=2), file_path="b.toml")
    end(db, b, Status.ERROR, T0 + timedelta(hours=2))

    def ids(where: RunFilter) -> list[int]:
        with db.read() as conn:
            return [r.id for r in browse.list_runs(conn, where).rows]

    assert ids(RunFilter(task="a", trigger=Trigger.MANUAL)) == [a]
    assert ids(RunFilter(status=Status.ERROR)) == [b]
    assert ids(RunFilter(file_path="b.toml")) == [b]
    assert ids(RunFilter(since=T0 + timedelta(minutes=30), until=T0 + timedelta(hours=2))) == [
        a + 1
    ]
    assert ids(RunFilter(tt_to=T0)) == [a]


def test_count_stops_at_the_cap(db: Database) -> None:
    for i in range(5):
        add(db, "t", T0 + timedelta(minutes=i))
    with db.read() as conn:
        assert browse.count_runs(conn, RunFilter(), cap=3) == 4  # "more than 3"
        assert browse.count_runs(conn, RunFilter(task="t"), cap=10) == 5
        assert browse.count_runs(conn, RunFilter(task="x")) == 0


def test_iter_runs_reads_everything_in_batches_up_to_the_cap(db: Database) -> None:
    ids = [add(db, "t", T0 + timedelta(seconds=i)) for i in range(12)]
    with db.read() as conn:
        assert [r.id for r in browse.iter_runs(conn, RunFilter(), cap=100)] == ids[::-1]
        assert len(list(browse.iter_runs(conn, RunFilter(), cap=5))) == 5


def test_hourly_and_daily_counts(db: Database) -> None:
    done = add(db, "t", T0)
    add(db, "t", T0 + timedelta(minutes=10))
    add(db, "t", T0 + timedelta(hours=1))
    add(db, "t", T0 + timedelta(days=1))
    end(db, done, Status.COMPLETE, T0)
    with db.read() as conn:
        hours = browse.hourly_counts(conn, T0, T0 + timedelta(days=1))
        days = browse.daily_totals(conn, T0 - timedelta(days=1), T0 + timedelta(days=2))
    assert hours.counts == {
        "2024-01-02T10": {"complete": 1, "queued": 1},
        "2024-01-02T11": {"queued": 1},
    }
    assert hours.by_status() == {"complete": 1, "queued": 2}
    assert days == {"2024-01-02": 3, "2024-01-03": 1}


def test_attempts_chain_children_and_log_search(db: Database) -> None:
    first = add(db, "t", T0, chain="x")
    end(db, first, Status.ERROR, T0)
    second = add(db, "t", T0 + timedelta(minutes=1), chain="x", task_time=T0, attempt=2)
    with db.read() as conn:
        execution = history.get_execution(conn, second)
        assert execution is not None
        assert [e.id for e in browse.attempts_of(conn, execution)] == [first, second]
        assert [e.id for e in browse.chain_of(conn, "x")] == [first, second]
    with db.write() as conn:
        history.insert_logs(
            conn,
            [
                LogRow(first, i, T0, "stdout", text)
                for i, text in enumerate(["Starting", "50% done", "disk FULL", "stopped"])
            ],
        )
    with db.read() as conn:
        assert [x.line for x in browse.log_lines(conn, first, search="full")] == ["disk FULL"]
        assert [x.line for x in browse.log_lines(conn, first, search="50%")] == ["50% done"]
        assert [x.seq for x in browse.log_lines(conn, first, after_seq=1)] == [2, 3]
        assert browse.log_count(conn, first) == 4


def test_alerts_by_day_and_recent_failures(db: Database) -> None:
    failed = add(db, "t", T0)
    end(db, failed, Status.ERROR, T0)
    with db.write() as conn:
        for when in (T0, T0 + timedelta(days=1)):
            history.insert_alerts(
                conn, [NewAlert(failed, "c", "a.toml", "t", None, "failed", iso(when))], when
            )
    with db.read() as conn:
        day = browse.list_alerts(conn, day="2024-01-02")
        assert [a.msg for a in day] == [iso(T0)]
        assert len(browse.list_alerts(conn)) == 2
        assert [e.id for e in browse.recent_failures(conn)] == [failed]


def test_phase_counts_last_success_and_lateness(db: Database) -> None:
    ok = add(db, "t", T0)
    end(db, ok, Status.COMPLETE, T0 + timedelta(seconds=4))
    bad = add(db, "t", T0 + timedelta(minutes=1))
    end(db, bad, Status.ERROR, T0 + timedelta(minutes=1))
    with db.read() as conn:
        counts = browse.phase_counts(conn)[("a.toml", "t")]
        assert (counts.runs, counts.complete, counts.failed) == (2, 1, 1)
        assert counts.success_rate == 50.0
        assert browse.phase_counts_of(conn, "a.toml", "t") == counts
        assert sorted(browse.cron_lateness(conn, T0 - timedelta(hours=1))) == [0.0, 4.0]


def test_table_rows_and_size(db: Database) -> None:
    add(db, "t", T0)
    with db.read() as conn:
        rows = browse.table_rows(conn)
        size = browse.database_bytes(conn)
    assert rows["executions"] == 1 and rows["schema_version"] >= 1
    assert size is not None and size > 0


def test_export_row_is_flat_with_iso_times(db: Database) -> None:
    run = add(db, "t", T0)
    end(db, run, Status.COMPLETE, T0, seconds=2.5)
    with db.read() as conn:
        execution = history.get_execution(conn, run)
    assert execution is not None
    row = browse.export_row(execution)
    assert list(row) == list(browse.EXPORT_COLUMNS)
    assert row["created_at"] == "2024-01-02T10:00:00.000000Z" and row["duration_seconds"] == 2.5
