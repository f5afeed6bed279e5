"""Safe by default: loopback unless a token is set, the token on every request, CSRF on every
state change, and everything a user controls escaped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from scheduler.cli import main
from scheduler.cli.web import is_loopback
from scheduler.config import load_config
from scheduler.store import history
from scheduler.store.history import LogRow
from scheduler.web.app import create_app
from tests.conftest import make_site
from tests.web.conftest import ETL, at, csrf_of

HTML = {"accept": "text/html"}
XSS = "<script>alert(1)</script>"


# -- binding -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("192.168.1.4", False),
        ("example.org", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_web_refuses_a_public_address_without_a_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a configuration without [web] token, when binding 0.0.0.0, then exit 2, one line
    site = make_site(tmp_path, {"etl.toml": ETL})
    code = main(["web", "--host", "0.0.0.0", "--config", str(site / "tomlflow.toml")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "web.token" in err and "Traceback" not in err


def test_web_config_table_is_read(tmp_path: Path) -> None:
    site = make_site(tmp_path, {}, '[web]\nhost = "0.0.0.0"\nport = 9999\ntoken = "s3cret"\n')
    web = load_config(str(site / "tomlflow.toml")).web
    assert (web.host, web.port, web.token) == ("0.0.0.0", 9999, "s3cret")


def test_web_config_rejects_unknown_keys_and_bad_ports(tmp_path: Path) -> None:
    site = make_site(tmp_path, {}, "[web]\nport = 70000\n")
    assert main(["web", "--config", str(site / "tomlflow.toml")]) == 2
    site = make_site(tmp_path, {}, "[web]\nbind = 1\n")
    assert main(["web", "--config", str(site / "tomlflow.toml")]) == 2


# -- token ---------------------------------------------------------------------------------------


@pytest.fixture
def guarded(tmp_path: Path) -> TestClient:
    site = make_site(tmp_path, {"etl.toml": ETL}, '[web]\ntoken = "s3cret"\n')
    return TestClient(create_app(load_config(str(site / "tomlflow.toml"))))


def test_without_the_token_pages_redirect_to_login_and_the_api_answers_401(
    guarded: TestClient,
) -> None:
    page = guarded.get("/runs?status=error", headers=HTML, follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fruns%3Fstatus%3Derror"
    api = guarded.get("/api/runs")
    assert api.status_code == 401 and api.json() == {"error": "a token is required"}
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/healthz").status_code == 200  # load balancers need no token


def test_a_bearer_token_opens_everything(guarded: TestClient) -> None:
    ok = {"authorization": "Bearer s3cret"}
    assert guarded.get("/api/runs", headers=ok).status_code == 200
    assert guarded.get("/", headers={**ok, **HTML}).status_code == 200
    assert guarded.get("/api/runs", headers={"authorization": "Bearer nope"}).status_code == 401


def test_login_sets_an_httponly_samesite_cookie_that_opens_pages(guarded: TestClient) -> None:
    token = csrf_of(guarded, "/login?next=/runs")
    wrong = guarded.post("/login", data={"csrf": token, "token": "nope", "next": "/runs"})
    assert wrong.status_code == 401
    right = guarded.post(
        "/login", data={"csrf": token, "token": "s3cret", "next": "/runs"}, follow_redirects=False
    )
    assert right.status_code == 303 and right.headers["location"] == "/runs"
    cookie = right.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "s3cret" not in cookie
    assert guarded.get("/runs", headers=HTML).status_code == 200


def test_login_never_redirects_off_site(guarded: TestClient) -> None:
    token = csrf_of(guarded, "/login")
    response = guarded.post(
        "/login",
        data={"csrf": token, "token": "s3cret", "next": "//evil.example/x"},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/"


# -- CSRF ----------------------------------------------------------------------------------------


def test_a_form_post_without_the_csrf_token_is_refused(client: TestClient) -> None:
    response = client.post("/actions/trigger", data={"task": "extract:orders"})
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]
    with client.app.state.ctx.db.read() as conn:  # type: ignore[attr-defined]
        assert history.list_executions(conn) == []


def test_a_form_post_with_another_browsers_token_is_refused(client: TestClient) -> None:
    csrf_of(client)
    response = client.post("/actions/trigger", data={"task": "extract:orders", "csrf": "x" * 43})
    assert response.status_code == 403


def test_a_form_post_with_the_csrf_token_is_accepted(client: TestClient) -> None:
    token = csrf_of(client)
    response = client.post(
        "/actions/trigger",
        data={"task": "extract:orders", "csrf": token},
        follow_redirects=False,
    )
    assert response.status_code == 303


def test_a_cross_site_origin_is_refused_even_with_a_token(client: TestClient) -> None:
    token = csrf_of(client)
    response = client.post(
        "/actions/trigger",
        data={"task": "extract:orders", "csrf": token},
        headers={"origin": "http://evil.example"},
    )
    assert response.status_code == 403


def test_json_posts_need_no_csrf_token(client: TestClient) -> None:
    # a cross-site page cannot send JSON without a CORS preflight, which is never granted
    response = client.post("/api/trigger", json={"task": "extract:orders"})
    assert response.status_code == 201


def test_gets_never_change_anything(client: TestClient) -> None:
    for url in ("/actions/trigger", "/actions/retry", "/actions/pause", "/api/trigger"):
        assert client.get(url).status_code == 405


# -- escaping ------------------------------------------------------------------------------------


def test_user_text_is_escaped_everywhere(tmp_path: Path) -> None:
    # given a phase named <script>, a log line with HTML and a file path with quotes
    name = "q\"uote's<b>.toml"
    site = make_site(
        tmp_path,
        {name: f'[[phase]]\ntask = "{XSS}"\nrule = "cron=0 5 * * *"\ntemplate = "echo hi"\n'},
    )
    app = create_app(load_config(str(site / "tomlflow.toml")))
    client = TestClient(app)
    token = csrf_of(client)
    run = client.post("/api/trigger", json={"task": XSS, "meta": {"note": XSS}}).json()["queued"][0]
    with app.state.ctx.db.write() as conn:
        history.insert_logs(
            conn, [LogRow(run["id"], 0, at("2024-01-02T00:00:00Z"), "stdout", f"<i>{XSS}</i>")]
        )
    pages = [
        "/",
        "/runs",
        f"/runs/{run['id']}",
        f"/runs/{run['id']}/log",
        "/workflows",
        f"/workflows/{name}",
        f"/phases/{XSS}",
        f"/backfill?task={XSS}",
        f"/edit/phase?file={name}&task={XSS}",
        f"/edit/text?file={name}",
        "/about",
    ]
    for url in pages:
        response = client.get(url, headers=HTML)
        assert response.status_code == 200, url
        assert XSS not in response.text, url
        assert "<b>.toml" not in response.text, url
        # a quote in a value never ends an attribute early
        assert not re.search(r'="[^"]*q"uote', response.text), url
    sql = client.post("/sql", data={"csrf": token, "sql": f"SELECT '{XSS}' AS x"})
    assert XSS not in sql.text and "&lt;script&gt;" in sql.text


def test_web_serves_the_app_on_the_configured_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    served: dict[str, object] = {}

    def fake_run(app: object, host: str, port: int, **_: object) -> None:
        served.update(app=app, host=host, port=port)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    site = make_site(tmp_path, {"etl.toml": ETL}, '[web]\nhost = "0.0.0.0"\ntoken = "t"\n')
    assert main(["web", "--port", "9123", "--config", str(site / "tomlflow.toml")]) == 0
    assert (served["host"], served["port"]) == ("0.0.0.0", 9123)
    assert "http://0.0.0.0:9123/" in capsys.readouterr().out
    served["app"].state.ctx.close()  # type: ignore[attr-defined]


def test_an_oversized_body_is_refused(client: TestClient) -> None:
    response = client.post(
        "/api/sql", content=b"x" * (3 * 1024 * 1024), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and response.json() == {"error": "request body too large"}


def test_cookies_are_httponly_samesite_and_secure_over_https(app: object) -> None:
    plain = TestClient(app).get("/")  # type: ignore[arg-type]
    assert (
        "HttpOnly" in plain.headers["set-cookie"]
        and "SameSite=Strict" in plain.headers["set-cookie"]
    )
    assert "Secure" not in plain.headers["set-cookie"]
    tls = TestClient(app, base_url="https://testserver").get("/")  # type: ignore[arg-type]
    assert "; Secure" in tls.headers["set-cookie"]
