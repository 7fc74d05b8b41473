"""The dashboard's operator views in headless Chromium against a real ``conveyor
serve``: pending views (due, scheduled, retrying), search by id ending and payload
text, the schedules page (run now, edit, delete, its jobs), the cancel dialog's
wording, toasts left behind on navigation, and the layout at 1,400 and 390 px (no
horizontal overflow, the bulk retry button inside its panel)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import ADMIN_TOKEN, Server, screenshot
from tests.e2e.test_dashboard import login

pytestmark = pytest.mark.timeout(180)


def test_pending_views_split_due_and_scheduled(page: Any, server: Server) -> None:
    later = server.enqueue("e2e:ok", {"view": "later"}, delay="2h")
    login(page, server, ADMIN_TOKEN, role="admin")
    page.goto(f"{server.url}/#/jobs?status=pending")
    page.wait_for_selector("[data-testid=pending-views] [data-view=scheduled]")
    page.click("[data-testid=pending-views] [data-view=scheduled]")
    page.wait_for_selector(f"[data-testid=jobs-table] tr[data-job-id='{later['id']}']")
    assert "found" in page.inner_text("[data-testid=page-info]")
    page.click("[data-testid=pending-views] [data-view=due]")
    # The scheduled view's rows stay until the due view's answer replaces them: wait
    # for the later job's row to go (it times out if the due view lists it).
    page.wait_for_selector(f"[data-testid=jobs-table] tr[data-job-id='{later['id']}']", state="detached")
    page.wait_for_selector("[data-testid=jobs-table] tr.empty, [data-testid=jobs-table] tr[data-job-id]")
    assert "view=due" in page.url


def test_search_finds_a_job_by_its_shown_id_ending_and_by_payload_text(page: Any, server: Server) -> None:
    job = server.enqueue("e2e:ok", {"customer": "Zebulon-4711"}, delay="1h")
    login(page, server, ADMIN_TOKEN, role="admin")
    page.goto(f"{server.url}/#/jobs")
    page.fill("[data-testid=search-input]", f"…{job['id'][-10:]}")
    page.press("[data-testid=search-input]", "Enter")
    # The job's row may be on the page before the search's results are (the listing
    # shows it, then the first search): wait for each search's chip, then its rows.
    wait_for_chip(page, "id ends")
    page.wait_for_selector(f"[data-testid=jobs-table] tr[data-job-id='{job['id']}']")
    assert len(page.query_selector_all("[data-testid=jobs-table] tr[data-job-id]")) == 1

    page.fill("[data-testid=search-input]", "zebulon-4711")
    page.press("[data-testid=search-input]", "Enter")
    wait_for_chip(page, "payload contains")
    page.wait_for_selector(f"[data-testid=jobs-table] tr[data-job-id='{job['id']}']")


def wait_for_chip(page: Any, text: str) -> None:
    page.wait_for_function("text => (document.querySelector('.chips')?.innerText ?? '').includes(text)", arg=text)


def test_a_search_total_reads_about_n_until_counted_exactly(page: Any, server: Server) -> None:
    jobs = [server.enqueue("e2e:ok", {"animal": f"Quokka-{i}"}, delay="1h") for i in range(3)]
    login(page, server, ADMIN_TOKEN, role="admin")
    # From a cursor the search does not read the newer jobs: its total is an estimate.
    page.goto(f"{server.url}/#/jobs?q=quokka-&after={jobs[-1]['id']}")
    page.wait_for_selector(f"[data-testid=jobs-table] tr[data-job-id='{jobs[0]['id']}']")
    assert "matching" in page.inner_text("[data-testid=page-info]")
    assert "about" in page.inner_text("[data-testid=page-info]")
    page.click("[data-testid=count-exactly]")
    page.wait_for_function(
        # The table re-renders after the click: page-info may be absent for a moment.
        "() => (document.querySelector('[data-testid=page-info]')?.innerText ?? '').includes('2 found of 3 matching')"
    )
    assert page.query_selector("[data-testid=count-exactly]") is None


def test_schedules_page_runs_edits_lists_jobs_and_deletes(page: Any, server: Server) -> None:
    with server.api() as http:
        body = {"name": "e2e-ops", "cron": "0 3 * * *", "topic": "e2e:ok", "payload": {"from": "schedule"}}
        assert http.put("/api/schedules/e2e-ops", json=body).status_code == 200
    login(page, server, ADMIN_TOKEN, role="admin")
    page.goto(f"{server.url}/#/schedules")
    row = "[data-testid=schedules-table] tr[data-schedule='e2e-ops']"
    page.wait_for_selector(row)

    page.click(f"{row} [data-testid=action-run-schedule]")
    page.click("#confirm-dialog [data-role=ok]")
    page.wait_for_selector(".toast >> text=of e2e-ops enqueued")

    page.click(f"{row} [data-testid=action-edit-schedule]")
    page.fill("[data-testid=edit-cron]", "30 4 * * *")
    page.fill("[data-testid=edit-payload]", '{"from": "edited"}')
    page.click("[data-testid=edit-save]")
    page.wait_for_selector(f"{row} >> text=30 4 * * *")
    with server.api() as http:
        stored = http.get("/api/schedules/e2e-ops").json()
    assert stored["cron"] == "30 4 * * *" and stored["payload"] == {"from": "edited"}

    page.click(f"{row} [data-testid=schedule-jobs]")
    page.wait_for_selector("[data-testid=jobs-table] tr[data-job-id]")
    assert "schedule e2e-ops" in page.inner_text(".chips")
    topics = {
        r.get_attribute("data-topic") for r in page.query_selector_all("[data-testid=jobs-table] tr[data-job-id]")
    }
    assert topics == {"e2e:ok"}

    page.goto(f"{server.url}/#/schedules")
    page.click(f"{row} [data-testid=action-delete-schedule]")
    page.click("#confirm-dialog [data-role=ok]")
    page.wait_for_selector(row, state="detached")


def test_cancel_dialog_says_keep_job_and_toasts_do_not_follow_to_the_next_page(page: Any, server: Server) -> None:
    job = server.enqueue("e2e:ok", delay="1h")
    login(page, server, ADMIN_TOKEN, role="admin")
    page.goto(f"{server.url}/#/jobs/{job['id']}")
    page.click("[data-testid=action-cancel]")
    assert page.inner_text("#confirm-dialog [data-role=cancel]") == "Keep job"
    assert page.inner_text("#confirm-dialog [data-role=ok]") == "Cancel job"
    page.click("#confirm-dialog [data-role=ok]")
    page.wait_for_selector(".toast >> text=Job cancelled")
    assert "Last error" not in page.inner_text("#view")
    page.wait_for_timeout(1200)
    page.goto(f"{server.url}/#/schedules")
    page.wait_for_selector("h1 >> text=Schedules")
    assert page.query_selector(".toast >> text=Job cancelled") is None


@pytest.mark.parametrize("width", [1400, 390])
def test_layout_has_no_horizontal_overflow(page: Any, server: Server, width: int) -> None:
    for _ in range(3):
        job = server.enqueue("e2e:flaky", {"marker": str(server.workdir / f"layout-{width}-{_}")}, max_retries=0)
        server.wait_status(job["id"], "failed")
    page.set_viewport_size({"width": width, "height": 900})
    login(page, server, ADMIN_TOKEN, role="admin")
    for route, name in (("#/", "overview"), ("#/jobs?status=failed", "jobs"), ("#/schedules", "schedules")):
        page.goto(f"{server.url}/{route}")
        page.wait_for_timeout(800)
        screenshot(page, f"ops-{name}-{width}.png")
        assert page.evaluate("document.documentElement.scrollWidth") <= width, f"{route} overflows at {width}px"
    if width < 700:
        return  # on a phone the topics table scrolls inside its panel
    page.goto(f"{server.url}/#/")
    page.wait_for_selector("[data-testid=topics] [data-testid=action-bulk-retry]")
    # Measured in one step in the page: live updates re-render the table meanwhile.
    inside = page.evaluate(
        """() => {
          const button = document.querySelector("[data-testid=topics] [data-testid=action-bulk-retry]");
          const panel = document.querySelector("[data-testid=topics]");
          return button.getBoundingClientRect().right <= panel.getBoundingClientRect().right + 0.5;
        }"""
    )
    assert inside, "the bulk retry button is clipped"


def test_a_topic_no_live_worker_handles_is_flagged(page: Any, server: Server) -> None:
    job = server.enqueue("e2e:nobody", {"waits": True})
    login(page, server, ADMIN_TOKEN, role="admin")
    page.wait_for_selector("[data-testid=topics] tr[data-topic='e2e:nobody'] [data-testid=no-worker]")
    assert page.query_selector("[data-testid=topics] tr[data-topic='e2e:ok'] [data-testid=no-worker]") is None
    page.goto(f"{server.url}/#/jobs?topic=e2e:nobody")
    page.wait_for_selector(f"[data-testid=jobs-table] tr[data-job-id='{job['id']}'] [data-testid=no-worker]")
    page.goto(f"{server.url}/#/jobs/{job['id']}")
    assert "No live worker handles topic e2e:nobody" in page.inner_text("[data-testid=no-worker]")


def test_job_page_lists_each_failed_attempt(page: Any, server: Server) -> None:
    marker = server.workdir / "errors-marker"
    job = server.enqueue("e2e:flaky", {"marker": str(marker)}, max_retries=1, retry_delay="1s", backoff="constant")
    server.wait_status(job["id"], "completed", timeout=30)
    login(page, server, ADMIN_TOKEN, role="admin")
    page.goto(f"{server.url}/#/jobs/{job['id']}")
    page.wait_for_selector("[data-testid=job-error-entry]")
    entries = page.query_selector_all("[data-testid=job-error-entry]")
    assert len(entries) == 1
    text = entries[0].inner_text()
    assert "Attempt 1" in text and "simulated failure on the first run" in text
    assert "error (1 failed attempt)" in page.inner_text("[data-testid=job-error]").lower()
