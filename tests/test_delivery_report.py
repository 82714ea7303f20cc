"""The weekly report: Block Kit to a Slack webhook (a local server speaking it) with retries and limits, and
the HTML page from the admin API, rendered in real headless Chromium: charts with data, no request leaving
the machine, no script error."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
import requests

from pg_architect import demo
from pg_architect.auditor.api import AdminServer, wants_html
from pg_architect.auditor.audit import AuditOptions, run_audit
from pg_architect.auditor.delivery import slack, weekly
from pg_architect.auditor.kb import DeliveryView
from pg_architect.auditor.snapshot import take_snapshot
from pg_architect.core.config import load_config
from tests.conftest import ServerInfo, make_database
from tests.fakes.webhooks import SlackWebhook

SCALE = {"customers": 20_000, "orders": 100_000, "jobs": 30_000}
TOKEN = "report-test-token"


@pytest.fixture(scope="module")
def reported(embedded_pg: ServerInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(audited dsn, kb dsn): two daily snapshots around a workload, then an audit delivered to a local repo."""
    dsn = demo.load(
        embedded_pg.dsn(),
        embedded_pg.dsn,
        name="report_shop",
        progress=lambda m: None,
        reset_statements=False,
        **SCALE,
    )
    kb_dsn = make_database(embedded_pg, "report_kb", ("vector",))
    repo = tmp_path_factory.mktemp("repo")
    cfg = load_config(
        None,
        env={
            "PG_ARCHITECT_GITHUB_LOCAL_REPO": str(repo / "migrations"),
            # No hypopg on the embedded server: real builds in rolled-back transactions, on the test's own data.
            "PG_ARCHITECT_MEASUREMENT_ALLOW_BLOCKING_BUILDS": "true",
        },
    )
    take_snapshot(cfg, dsn, kb_dsn)
    demo.run_workload(dsn, demo.workload(SCALE["customers"], calls=8))
    take_snapshot(cfg, dsn, kb_dsn)
    report = run_audit(cfg, dsn, kb_dsn, AuditOptions(min_calls=4, min_mean_ms=1.0, limit=20))
    assert report.deliveries, report.delivery_notes
    yield dsn, kb_dsn


def _clean_env() -> dict[str, str]:
    """The test's environment without any pg-architect setting or secret of the machine running it."""
    drop = ("SLACK_WEBHOOK_URL", "GITHUB_TOKEN", "GRAFANA_TOKEN")
    return {k: v for k, v in os.environ.items() if not k.startswith("PG_ARCHITECT_") and k not in drop}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pg_architect", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env() | (env or {}),
    )


def test_report_send_delivers_block_kit_after_a_429_and_says_so(reported: tuple[str, str]) -> None:
    _, kb_dsn = reported
    with SlackWebhook() as hook:
        hook.answer_next(429, b"rate_limited", {"Retry-After": "1"})
        hook.answer_next(503, b"service unavailable")
        proc = cli("report", "--send", "--dsn", kb_dsn, env={"SLACK_WEBHOOK_URL": hook.webhook_url})
        assert proc.returncode == 0, proc.stderr
        assert "weekly report sent to Slack (http://127.0.0.1:" in proc.stderr, proc.stderr
        assert hook.PATH not in proc.stderr + proc.stdout, "the webhook URL is a secret"
        assert len(hook.messages) == 3 and hook.messages[0] == hook.messages[2]
    payload = hook.messages[-1]
    kinds = [b["type"] for b in payload["blocks"]]
    assert kinds[0] == "header" and "section" in kinds and kinds[-1] == "context"
    fields = {f["text"].split("\n")[0].strip("*"): f["text"].split("\n")[1] for f in payload["blocks"][1]["fields"]}
    assert int(fields["Slow queries detected"]) >= 4 and int(fields["Optimisations recommended"]) >= 3
    assert fields["Pull requests created"] == "0" and int(fields["Migrations on local branches"]) >= 3
    text = json.dumps(payload)
    assert "Top optimisation" in text and "Pending review" in text and "branch pg-architect/" in text
    assert "/admin/database/report|Full report>" in text


def test_report_send_failure_is_counted_and_exits_1(reported: tuple[str, str]) -> None:
    _, kb_dsn = reported
    with SlackWebhook() as hook:
        hook.answer_next(500, b"internal", times=10)
        proc = cli("report", "--send", "--dsn", kb_dsn, env={"SLACK_WEBHOOK_URL": hook.webhook_url})
        assert len(hook.requests) == 4, "one try and three retries, no more"
    assert proc.returncode == 1 and "slack failed" in proc.stderr, proc.stderr
    with psycopg.connect(kb_dsn) as conn:
        rows = conn.execute("SELECT error FROM pgarch.integration_failures WHERE integration = 'slack'").fetchall()
    assert rows and "500" in rows[-1][0] and "XXXXXXXX" not in rows[-1][0]


def test_report_send_without_slack_is_a_usage_error(reported: tuple[str, str]) -> None:
    proc = cli("report", "--send", "--dsn", reported[1])
    assert proc.returncode == 2 and "Slack is not configured" in proc.stderr and "nothing sent" in proc.stderr


def test_block_kit_respects_slack_limits_with_many_long_items() -> None:
    now = datetime.now(UTC)
    long_sql = "CREATE INDEX CONCURRENTLY IF NOT EXISTS x ON t (" + "c, " * 2000 + "d);"
    pending = tuple(
        DeliveryView(
            i,
            i,
            "local_git",
            "/repo",
            "main",
            f"pg-architect/x{i}",
            "abc",
            "prisma",
            "p",
            None,
            None,
            "committed",
            now,
            now,
            "run",
            long_sql,
            0.95,
            "pr_merge",
            80.0,
            "SELECT 1",
        )
        for i in range(200)
    )
    run = {
        "run_id": "r",
        "database": "d" * 400,
        "kpis": {"slow_queries": 3},
        "slow_queries": [],
        "delivery_notes": ["n" * 5000],
    }
    trends = weekly.Trends((), (), (), (), (), (), ())
    w = weekly.WeeklyReport(now, run, (), pending, (), trends, "http://127.0.0.1:3001/admin/database/report")
    payload = slack.blocks(w)
    from tests.fakes.webhooks import _block_problem

    assert _block_problem(payload) is None, _block_problem(payload)
    assert len(payload["blocks"]) <= 50 and "more in the full report" in json.dumps(payload)


def test_accept_header_negotiation() -> None:
    assert wants_html("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
    assert not wants_html("application/json")
    assert not wants_html(None) and not wants_html("*/*")
    assert not wants_html("text/html;q=0.5, application/json")


# -- the HTML page in a real browser ------------------------------------------------------------------------


class _RecordingProxy:
    """An HTTP proxy that records every request the browser tries to send out, and answers 502."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _refuse(self) -> None:
                proxy.seen.append(f"{self.command} {self.path}")
                self.send_response(502)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_CONNECT = do_HEAD = _refuse

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# Chromium's own housekeeping (component updates, network time, sign-in) goes through the proxy too, whatever
# page is open; it is not the page's doing. Everything else would be.
_BROWSER_SERVICES = re.compile(
    r"^\S+ (https?://)?(clients\d*\.google\.com|update\.googleapis\.com|accounts\.google\.com)[:/]"
)


def _browser_service(request: str) -> bool:
    return _BROWSER_SERVICES.match(request) is not None


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium (apt-get install chromium)")


def render(page: Path, out: Path, proxy: str) -> tuple[str, str]:
    """(DOM after rendering, browser log) of ``page``; a screenshot at ``out``."""
    base = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--proxy-server=http://{proxy}",
        "--proxy-bypass-list=<-loopback>",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={out.parent / 'profile'}",
        "--window-size=1280,2200",
    ]
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    shot = subprocess.run([*base, f"--screenshot={out}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and shot.returncode == 0, dom.stderr[-2000:] + shot.stderr[-2000:]
    return dom.stdout, dom.stderr + shot.stderr


def test_report_page_from_the_admin_api_renders_in_chromium_with_data_and_no_external_fetch(
    reported: tuple[str, str], tmp_path: Path
) -> None:
    _, kb_dsn = reported
    cfg = load_config(None, env={"PG_ARCHITECT_API_TOKEN": TOKEN})
    server = AdminServer(("127.0.0.1", 0), cfg, kb_dsn, starter=None)  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        page = requests.get(f"{base}/admin/database/report", headers={**auth, "Accept": "text/html"}, timeout=30)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html"), page.text[:300]
        as_json = requests.get(f"{base}/admin/database/report", headers=auth, timeout=30)
        assert as_json.headers["Content-Type"] == "application/json" and as_json.json()["run_id"]
        run = requests.get(
            f"{base}/admin/database/runs/{as_json.json()['run_id']}",
            headers={**auth, "Accept": "text/html"},
            timeout=30,
        )
        assert run.status_code == 200 and run.headers["Content-Type"].startswith("text/html")
        assert (
            requests.get(f"{base}/admin/database/report", headers={"Accept": "text/html"}, timeout=30).status_code
            == 401
        )
    finally:
        server.shutdown()
        server.server_close()
    html_text = page.text
    # Self-contained: nothing to fetch (links people may click are <a>, not fetched).
    assert not re.search(r"<(script|link|img|iframe|object)\b", html_text, re.I)
    assert not re.search(r"(src|srcset)\s*=|url\(|@import", html_text, re.I)
    page_file = tmp_path / "report.html"
    page_file.write_text(html_text, encoding="utf-8")
    (tmp_path / "run.html").write_text(run.text, encoding="utf-8")
    proxy = _RecordingProxy()
    try:
        dom, log = render(page_file, tmp_path / "report.png", proxy.address)
        run_dom, run_log = render(tmp_path / "run.html", tmp_path / "run.png", proxy.address)
        # The control: the same browser and proxy do see a page that fetches something.
        leaky = tmp_path / "leaky.html"
        leaky.write_text('<html><body><img src="http://cdn.example.test/x.png"></body></html>', encoding="utf-8")
        render(leaky, tmp_path / "leaky.png", proxy.address)
        leaked = [s for s in proxy.seen if "cdn.example.test" in s]
        fetched = [s for s in proxy.seen if "cdn.example.test" not in s and not _browser_service(s)]
    finally:
        proxy.close()
    assert leaked, "the recording proxy did not see the control page's fetch: the check would prove nothing"
    assert fetched == [], f"the report page made requests: {fetched}"
    for text in (log, run_log):
        assert not re.search(r"Uncaught|Refused to|CONSOLE\(\d+\).*[Ee]rror", text), text[-3000:]
    points = dict(re.findall(r'<figure class="chart" id="([^"]+)" data-points="(\d+)"', dom))
    assert set(points) == {"chart-p95", "chart-cache", "chart-disk", "chart-slow", "chart-recs", "chart-gain"}
    assert all(int(n) > 0 for n in points.values()), points
    assert dom.count('class="dot"') >= 3 and dom.count('class="bar"') >= 5
    assert "Pending review" in dom and "branch pg-architect/" in dom
    assert re.search(r'id="chart-gain" data-points="[1-9]', run_dom)
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    keep = os.environ.get("PGARCH_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(tmp_path / "report.png", keep)
        shutil.copy(tmp_path / "run.png", Path(keep).with_name("run-" + Path(keep).name))


def test_daemon_monday_job_sends_the_weekly_report(reported: tuple[str, str]) -> None:
    from pg_architect.auditor.daemon import AuditRunner, Daemon

    dsn, kb_dsn = reported
    with SlackWebhook() as hook:
        cfg = load_config(None, env={"SLACK_WEBHOOK_URL": hook.webhook_url})
        Daemon(cfg, dsn, kb_dsn, AuditRunner(cfg, dsn, kb_dsn)).weekly_report()
        assert len(hook.messages) == 1
    assert hook.messages[0]["blocks"][0]["type"] == "header"
