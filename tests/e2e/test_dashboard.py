"""The dashboard in a real browser (headless Chromium) against a real ``conveyor serve``.

Each test logs in through the login box (the token goes to sessionStorage, never into
the URL) and watches the page change without reloading it: events arrive over the
WebSocket. Screenshots land in ``build/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.e2e.conftest import ADMIN_TOKEN, READ_TOKEN, Server, screenshot, start_server, stop_server

pytestmark = pytest.mark.timeout(180)


def login(page: Any, server: Server, token: str | None, *, role: str) -> None:
    page.goto(server.url + "/")
    if token is not None:
        page.fill("#token", token)
        page.click("#login-form button[type=submit]")
    # The role comes from the WebSocket handshake: once it is known, buttons are decided.
    page.wait_for_selector(f"body[data-role='{role}']")
    page.wait_for_selector("#conn[data-state='live']")
    assert token is None or token not in page.url


def expect_status(page: Any, selector: str, status: str, timeout: float = 20_000) -> None:
    page.wait_for_selector(f"{selector}[data-status='{status}']", timeout=timeout)


def test_overview_shows_an_enqueued_job_turn_completed_live(page: Any, server: Server) -> None:
    login(page, server, ADMIN_TOKEN, role="admin")
    page.wait_for_selector("[data-testid=recent-jobs] table")
    page.evaluate("window.__notReloaded = true")

    job = server.enqueue("e2e:slow", {"seconds": 1.5})
    row = f"[data-testid=recent-jobs] tr[data-job-id='{job['id']}']"
    page.wait_for_selector(row, timeout=10_000)
    expect_status(page, row, "completed")

    assert page.evaluate("window.__notReloaded") is True, "the page reloaded"
    completed = page.inner_text("[data-testid=count-completed] .value")
    assert int(completed.replace(",", "")) >= 1


def test_job_page_retries_a_failed_job_after_confirmation(page: Any, server: Server) -> None:
    marker = server.workdir / "flaky-marker"
    job = server.enqueue("e2e:flaky", {"marker": str(marker)}, max_retries=0)
    server.wait_status(job["id"], "failed")

    login(page, server, ADMIN_TOKEN, role="admin")
    page.goto(f"{server.url}/#/jobs/{job['id']}")
    page.wait_for_selector("[data-testid=job-status] [data-status=failed]")
    assert "simulated failure on the first run" in page.inner_text("[data-testid=job-error]")
    assert "Traceback" in page.inner_text("[data-testid=job-error]")
    screenshot(page, "job-failed.png")

    # Dismissing the dialog does nothing.
    page.click("[data-testid=action-retry]")
    page.wait_for_selector("#confirm-dialog[open]")
    page.click("#confirm-dialog [data-role=cancel]")
    page.wait_for_selector("#confirm-dialog", state="hidden")
    assert server.job(job["id"])["status"] == "failed"

    page.click("[data-testid=action-retry]")
    page.wait_for_selector("#confirm-dialog[open]")
    assert "Retry" in page.inner_text("#confirm-dialog")
    page.click("#confirm-dialog [data-role=ok]")
    page.wait_for_selector("[data-testid=job-status] [data-status=completed]", timeout=20_000)
    assert server.job(job["id"])["result"] == {"recovered": True}
    assert "Completed" in page.inner_text("[data-testid=job-timeline]")
    screenshot(page, "job.png")


def test_jobs_table_filters_by_topic(page: Any, server: Server) -> None:
    ok = [server.enqueue("e2e:ok", {"n": i})["id"] for i in range(3)]
    slow = [server.enqueue("e2e:slow", {"seconds": 0})["id"] for _ in range(2)]
    for job_id in ok + slow:
        server.wait_status(job_id, "completed")

    login(page, server, ADMIN_TOKEN, role="admin")
    page.goto(f"{server.url}/#/jobs")
    page.wait_for_selector(f"[data-testid=jobs-table] tr[data-job-id='{slow[0]}']")
    page.wait_for_selector("[data-testid=topic-filter] option[value='e2e:slow']", state="attached")

    page.select_option("[data-testid=topic-filter]", "e2e:slow")
    page.wait_for_url(re.compile(r"topic=e2e%3Aslow|topic=e2e:slow"))
    page.wait_for_selector(f"[data-testid=jobs-table] tr[data-job-id='{slow[1]}']")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=jobs-table] tr[data-job-id]')]"
        ".every(r => r.dataset.topic === 'e2e:slow')"
    )
    topics = page.eval_on_selector_all(
        "[data-testid=jobs-table] tr[data-job-id]", "rows => rows.map(r => r.dataset.topic)"
    )
    assert topics and set(topics) == {"e2e:slow"}
    for job_id in ok:
        assert page.query_selector(f"tr[data-job-id='{job_id}']") is None

    # New jobs of the topic show up without a reload; other topics stay out.
    page.evaluate("window.__notReloaded = true")
    fresh = server.enqueue("e2e:slow", {"seconds": 0})["id"]
    other = server.enqueue("e2e:ok", {"n": 99})["id"]
    expect_status(page, f"[data-testid=jobs-table] tr[data-job-id='{fresh}']", "completed")
    assert page.query_selector(f"tr[data-job-id='{other}']") is None
    assert page.evaluate("window.__notReloaded") is True

    # The status filter combines with the topic.
    page.click("[data-testid=status-filter] [data-status=failed]")
    page.wait_for_selector("[data-testid=jobs-table] tr.empty")
    assert "topic=e2e" in page.url and "status=failed" in page.url


def test_jobs_table_pages_with_keyset_links(page: Any, server: Server) -> None:
    ids = [server.enqueue("e2e-pages", {"n": i}, delay="1h")["id"] for i in range(27)][::-1]
    rows = "[data-testid=jobs-table] tr[data-job-id]"
    login(page, server, ADMIN_TOKEN, role="admin")
    page.goto(f"{server.url}/#/jobs?topic=e2e-pages&limit=25")
    page.wait_for_selector(f"{rows}[data-job-id='{ids[24]}']")
    assert page.inner_text("[data-testid=page-info]") == "1\u201325 of 27"
    assert page.get_attribute("[data-testid=page-prev]", "aria-disabled") == "true"

    page.click("[data-testid=page-next]")
    page.wait_for_url(re.compile(f"after={ids[24]}"))
    page.wait_for_selector(f"{rows}[data-job-id='{ids[26]}']")
    assert page.eval_on_selector_all(rows, "rows => rows.map(r => r.dataset.jobId)") == ids[25:]
    assert page.get_attribute("[data-testid=page-next]", "aria-disabled") == "true"

    page.click("[data-testid=page-prev]")
    page.wait_for_url(re.compile(f"before={ids[25]}"))
    page.wait_for_selector(f"{rows}[data-job-id='{ids[0]}']")
    assert page.eval_on_selector_all(rows, "rows => rows.map(r => r.dataset.jobId)") == ids[:25]


def test_job_page_runs_a_delayed_job_now(page: Any, server: Server) -> None:
    job = server.enqueue("e2e:ok", {"later": True}, delay="1h")

    login(page, server, ADMIN_TOKEN, role="admin")
    page.goto(f"{server.url}/#/jobs/{job['id']}")
    page.wait_for_selector("[data-testid=job-status] [data-status=pending]")
    assert page.query_selector("[data-testid=action-retry]") is None
    page.click("[data-testid=action-run-now]")
    page.wait_for_selector("#confirm-dialog[open]")
    page.click("#confirm-dialog [data-role=ok]")
    page.wait_for_selector("[data-testid=job-status] [data-status=completed]")
    assert server.job(job["id"])["result"] == {"echo": {"later": True}}


def test_job_page_cancels_then_deletes_a_job(page: Any, server: Server) -> None:
    job = server.enqueue("e2e:ok", {"doomed": True}, delay="1h")

    login(page, server, ADMIN_TOKEN, role="admin")
    page.goto(f"{server.url}/#/jobs/{job['id']}")
    page.wait_for_selector("[data-testid=job-status] [data-status=pending]")
    page.click("[data-testid=action-cancel]")
    page.click("#confirm-dialog [data-role=ok]")
    page.wait_for_selector("[data-testid=job-status] [data-status=cancelled]")
    assert server.job(job["id"])["status"] == "cancelled"

    page.click("[data-testid=action-delete]")
    page.click("#confirm-dialog [data-role=ok]")
    page.wait_for_url(re.compile(r"#/jobs$"))
    with server.api() as http:
        assert http.get(f"/api/jobs/{job['id']}").status_code == 404


def test_read_only_token_shows_no_action_buttons(page: Any, server: Server) -> None:
    job = server.enqueue("e2e:flaky", {"marker": str(server.workdir / "read-only-marker")}, max_retries=0)
    server.wait_status(job["id"], "failed")

    login(page, server, READ_TOKEN, role="read")
    assert page.inner_text("#role") == "read-only"
    page.wait_for_selector("[data-testid=topics] tr[data-topic='e2e:flaky']")
    assert page.query_selector_all("[data-action]") == []

    page.goto(f"{server.url}/#/jobs/{job['id']}")
    page.wait_for_selector("[data-testid=job-status] [data-status=failed]")
    assert page.query_selector_all("[data-testid=job-actions] button") == []
    assert page.query_selector_all("[data-action]") == []

    page.goto(f"{server.url}/#/jobs?topic=e2e:flaky&status=failed")
    page.wait_for_selector(f"[data-testid=jobs-table] tr[data-job-id='{job['id']}']")
    assert page.query_selector("[data-testid=action-bulk-retry]") is None

    with server.api() as http:
        body = {"name": "e2e-read-only", "cron": "@hourly", "topic": "e2e:ok", "enabled": False}
        assert http.put("/api/schedules/e2e-read-only", json=body).status_code == 200
    page.goto(f"{server.url}/#/schedules")
    page.wait_for_selector("[data-testid=schedules-table] tr[data-schedule='e2e-read-only']")
    assert page.query_selector_all("[data-action]") == []


def test_admin_sees_actions_and_bulk_retry(page: Any, server: Server) -> None:
    job = server.enqueue("e2e:flaky", {"marker": str(server.workdir / "bulk-marker")}, max_retries=0)
    server.wait_status(job["id"], "failed")

    login(page, server, ADMIN_TOKEN, role="admin")
    page.goto(f"{server.url}/#/jobs?topic=e2e:flaky&status=failed")
    page.wait_for_selector(f"[data-testid=jobs-table] tr[data-job-id='{job['id']}']")
    page.click("[data-testid=action-bulk-retry]")
    page.wait_for_selector("#confirm-dialog[open]")
    page.click("#confirm-dialog [data-role=ok]")
    server.wait_status(job["id"], "completed")
    with server.api() as http:
        assert http.get("/api/jobs", params={"topic": "e2e:flaky", "status": "failed"}).json()["total"] == 0


def test_overview_counts_match_the_store(page: Any, server: Server) -> None:
    for i in range(6):
        server.enqueue("e2e:ok", {"n": i})
    running = [server.enqueue("e2e:slow", {"seconds": s})["id"] for s in (0.5, 10)]
    server.enqueue("e2e:flaky", {"marker": str(server.workdir / "overview-marker")}, max_retries=0)
    server.enqueue("e2e:ok", {"later": True}, delay="1h", priority=5)
    doomed = server.enqueue("e2e:ok", {"doomed": True}, delay="1h")
    with server.api() as http:
        assert http.post(f"/api/jobs/{doomed['id']}/cancel").status_code == 200
    server.wait_status(running[0], "completed")
    server.wait_status(running[1], "processing")

    login(page, server, ADMIN_TOKEN, role="admin")
    statuses = ("pending", "processing", "completed", "failed", "cancelled")
    # The store moves on while we look: compare until the cards and a fresh read agree.
    deadline = time.monotonic() + 15
    while True:
        with server.api() as http:
            stats = http.get("/api/jobs/stats").json()
        shown = {st: page.inner_text(f"[data-testid=count-{st}] .value").replace(",", "") for st in statuses}
        if shown == {st: str(stats[st]) for st in statuses} or time.monotonic() > deadline:
            break
        page.wait_for_timeout(200)
    assert shown == {st: str(stats[st]) for st in statuses}
    page.wait_for_selector(f"[data-testid=workers] .w-jobs a[title='{running[1]}']")
    page.wait_for_selector("[data-testid=throughput] svg .ok")
    screenshot(page, "overview.png")


def test_schedules_page_disables_and_enables_a_schedule(page: Any, server: Server) -> None:
    with server.api() as http:
        body = {"name": "e2e-nightly", "cron": "0 3 * * *", "topic": "e2e:ok", "payload": {"kind": "nightly"}}
        assert http.post("/api/schedules", json=body).status_code == 201

    login(page, server, ADMIN_TOKEN, role="admin")
    page.goto(f"{server.url}/#/schedules")
    row = "[data-testid=schedules-table] tr[data-schedule='e2e-nightly']"
    page.wait_for_selector(f"{row} [data-testid=action-disable]")
    assert "0 3 * * *" in page.inner_text(row)
    page.click(f"{row} [data-testid=action-disable]")
    page.wait_for_selector("#confirm-dialog[open]")
    page.click("#confirm-dialog [data-role=ok]")
    page.wait_for_selector(f"{row} [data-testid=action-enable]")
    with server.api() as http:
        assert http.get("/api/schedules/e2e-nightly").json()["enabled"] is False

    page.click(f"{row} [data-testid=action-enable]")
    page.click("#confirm-dialog [data-role=ok]")
    page.wait_for_selector(f"{row} [data-testid=action-disable]")
    with server.api() as http:
        assert http.get("/api/schedules/e2e-nightly").json()["enabled"] is True


def test_login_refuses_a_bad_token_and_keeps_it_out_of_the_url(page: Any, server: Server) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#token", "not-a-token")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "not valid" in page.inner_text("#login-error")
    assert page.evaluate("sessionStorage.getItem('conveyor.token')") is None

    page.fill("#token", ADMIN_TOKEN)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("body[data-role='admin']")
    assert ADMIN_TOKEN not in page.url
    assert page.evaluate("sessionStorage.getItem('conveyor.token')") == ADMIN_TOKEN


def test_open_server_needs_no_login(page: Any, tmp_path: Any) -> None:
    open_server = start_server(tmp_path / "open", tokens=False)
    try:
        login(page, open_server, None, role="admin")
        assert page.is_hidden("#login")
        assert page.inner_text("#role") == "open · no auth"
        job = open_server.enqueue("e2e:ok", {"open": True})
        expect_status(page, f"[data-testid=recent-jobs] tr[data-job-id='{job['id']}']", "completed")
    finally:
        stop_server(open_server)
