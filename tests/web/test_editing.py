"""Editing workflow files from the browser: every save through the editor; a refused edit
shows why and leaves the disk as it was."""

from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient

from scheduler.loader import md5_hex
from tests.web.conftest import ETL, csrf_of

HTML = {"accept": "text/html"}


def etl(site: Path) -> Path:
    return site / "workflows" / "etl.toml"


def test_edit_a_phase_through_the_form_keeps_comments(site: Path, client: TestClient) -> None:
    token = csrf_of(client, "/edit/phase?file=etl.toml&task=extract:orders")
    response = client.post(
        "/edit/phase",
        data={
            "csrf": token,
            "file": "etl.toml",
            "original": "extract:orders",
            "task": "extract:orders",
            "rule": "cron=0 6 * * *&offset=-24h",
            "template": "echo extract {yyyy}-{mm}-{dd}",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    text = etl(site).read_text()
    assert 'rule = "cron=0 6 * * *&offset=-24h"   # daily at five' in text
    assert text.startswith("# the orders pipeline\n")
    assert text.replace("0 6 * * *", "0 5 * * *") == ETL  # nothing else moved
    # the catalog was refreshed: the phase page shows the new rule at once
    assert "runs at 06:00 every day" in client.get("/phases/extract:orders", headers=HTML).text


def test_an_emptied_field_removes_the_key_and_a_new_phase_is_added(
    site: Path, client: TestClient
) -> None:
    token = csrf_of(client, "/edit/phase?file=etl.toml")
    client.post(
        "/edit/phase",
        data={
            "csrf": token,
            "file": "etl.toml",
            "original": "load",
            "task": "load",
            "depends_on": "extract",
            "retry": "",
            "template": "echo load {yyyy}-{mm}-{dd}",
        },
    )
    assert "retry" not in etl(site).read_text()
    client.post(
        "/edit/phase",
        data={
            "csrf": token,
            "file": "etl.toml",
            "original": "",
            "task": "report",
            "depends_on": "load",
            "template": "echo report",
        },
    )
    text = etl(site).read_text()
    assert text.endswith(
        '[[phase]]\ntask = "report"\ndepends_on = "load"\ntemplate = "echo report"\n'
    )


def test_an_invalid_phase_edit_is_refused_and_the_disk_is_unchanged(
    site: Path, client: TestClient
) -> None:
    token = csrf_of(client, "/edit/phase?file=etl.toml&task=load")
    before = etl(site).read_bytes()
    response = client.post(
        "/edit/phase",
        data={
            "csrf": token,
            "file": "etl.toml",
            "original": "load",
            "task": "load",
            "depends_on": "nothing-like-it",
            "template": "echo load",
        },
    )
    assert response.status_code == 400
    assert "parent task not found: nothing-like-it" in response.text
    assert "Not saved; the file is unchanged." in response.text
    assert etl(site).read_bytes() == before
    bad_retry = client.post(
        "/edit/phase",
        data={
            "csrf": token,
            "file": "etl.toml",
            "original": "load",
            "task": "load",
            "retry": "many",
        },
    )
    assert bad_retry.status_code == 400 and etl(site).read_bytes() == before


def test_edit_the_text(site: Path, client: TestClient) -> None:
    token = csrf_of(client, "/edit/text?file=etl.toml")
    new = ETL.replace("retry = 1", "retry = 3  # three tries")
    response = client.post(
        "/edit/text",
        data={"csrf": token, "file": "etl.toml", "text": new, "md5": md5_hex(ETL.encode())},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert etl(site).read_text() == new


def test_an_invalid_text_is_refused_with_every_message(site: Path, client: TestClient) -> None:
    token = csrf_of(client, "/edit/text?file=etl.toml")
    for text, message in (
        ("[[phase]\ntask = ", "invalid TOML"),
        (
            ETL.replace('depends_on = "extract"', 'depends_on = "nope"'),
            "load: parent task not found: nope",
        ),
        (ETL.replace("cron=0 5 * * *", "cron=0 5 * *"), "invalid cron"),
    ):
        response = client.post(
            "/edit/text", data={"csrf": token, "file": "etl.toml", "text": text, "md5": ""}
        )
        assert response.status_code == 400, text
        assert message in response.text
        assert etl(site).read_text() == ETL


def test_a_text_edit_over_a_change_on_disk_is_refused(site: Path, client: TestClient) -> None:
    token = csrf_of(client, "/edit/text?file=etl.toml")
    etl(site).write_text(ETL + "\n# changed by someone else\n")
    response = client.post(
        "/edit/text",
        data={"csrf": token, "file": "etl.toml", "text": ETL, "md5": md5_hex(ETL.encode())},
    )
    assert response.status_code == 400 and "changed on disk" in response.text
    assert etl(site).read_text().endswith("# changed by someone else\n")


def test_create_duplicate_and_delete_files(site: Path, client: TestClient) -> None:
    token = csrf_of(client, "/edit/new")
    created = client.post(
        "/edit/new", data={"csrf": token, "name": "sub/new"}, follow_redirects=False
    )
    assert created.status_code == 303
    assert (site / "workflows" / "sub" / "new.toml").read_text().startswith("# sub/new.toml")
    twice = client.post("/edit/new", data={"csrf": token, "name": "sub/new"})
    assert twice.status_code == 400 and "already exists" in twice.text
    escape = client.post("/edit/new", data={"csrf": token, "name": "../outside"})
    assert escape.status_code == 400 and not (site / "outside.toml").exists()
    copy = client.post("/edit/new", data={"csrf": token, "name": "copy", "source": "etl.toml"})
    assert copy.status_code == 200  # followed to the new file's page
    assert (site / "workflows" / "copy.toml").read_text() == ETL
    assert 'href="/workflows/copy.toml"' in client.get("/workflows", headers=HTML).text
    unconfirmed = client.post(
        "/edit/delete", data={"csrf": token, "file": "copy.toml", "confirm": "etl.toml"}
    )
    assert unconfirmed.status_code == 400 and (site / "workflows" / "copy.toml").exists()
    deleted = client.post(
        "/edit/delete",
        data={"csrf": token, "file": "copy.toml", "confirm": "copy.toml"},
        follow_redirects=False,
    )
    assert deleted.status_code == 303 and not (site / "workflows" / "copy.toml").exists()
    assert "copy.toml" not in client.get("/workflows", headers=HTML).text


def test_editing_never_reaches_outside_the_workflow_folder(site: Path, client: TestClient) -> None:
    token = csrf_of(client)
    before = (site / "tomlflow.toml").read_text()
    for name in ("../tomlflow.toml", "/etc/passwd", ".hidden.toml", "sub/../../tomlflow.toml"):
        assert client.get(f"/edit/text?file={name}", headers=HTML).status_code in (400, 404)
        response = client.post(
            "/edit/text", data={"csrf": token, "file": name, "text": "x=1", "md5": ""}
        )
        assert response.status_code == 400
        assert client.post(
            "/edit/delete", data={"csrf": token, "file": name, "confirm": name}
        ).status_code in (400, 409)
    assert (site / "tomlflow.toml").read_text() == before
