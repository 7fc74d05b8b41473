// Pieces shared by several views: the jobs table, job actions, the bulk retry button.

import { api, auth, retryFailedInTopic } from "../api.js";
import { live } from "../live.js";
import { actionButton, confirmAction, duration, h, jobLink, parseTime, statusPill, toast, when } from "../ui.js";

/** Run time of a job (started → finished, or → now while processing). */
export function runTime(job) {
  const start = parseTime(job.started_at);
  if (start === null) return null;
  const end = parseTime(job.finished_at) ?? (job.status === "processing" ? Date.now() : null);
  return end === null ? null : end - start;
}

export function firstLine(text) {
  if (!text) return "";
  const lines = String(text).trim().split("\n").filter((l) => l.trim());
  // A traceback's last line says what went wrong; a plain message is its first line.
  return (lines[0] || "").startsWith("Traceback") ? lines[lines.length - 1] : lines[0] || "";
}

export function errorSummary(job) {
  return firstLine(job.last_error);
}

/** The jobs table. columns: which optional columns to show. */
export function jobsTable(items, { compact = false, empty = "No jobs." } = {}) {
  const head = h(
    "tr",
    {},
    h("th", {}, "Job"),
    h("th", {}, "Topic"),
    h("th", {}, "Status"),
    h("th", { class: "num" }, "Tries"),
    compact ? null : h("th", { class: "num" }, "Prio"),
    h("th", {}, "Created"),
    h("th", {}, compact ? "When" : "Run at / finished"),
    h("th", { class: "num" }, "Took"),
    compact ? null : h("th", { class: "grow" }, "Last error"),
  );
  const body = h("tbody", {});
  for (const job of items) body.append(jobRow(job, { compact }));
  if (!items.length) {
    body.append(h("tr", { class: "empty" }, h("td", { colspan: compact ? 7 : 9 }, empty)));
  }
  return h("table", { class: "table jobs", "data-testid": "jobs-table" }, h("thead", {}, head), body);
}

export function jobRow(job, { compact = false } = {}) {
  const finished = job.finished_at;
  const took = runTime(job);
  return h(
    "tr",
    { "data-job-id": job.id, "data-testid": "job-row", "data-status": job.status, "data-topic": job.topic },
    h("td", {}, jobLink(job.id)),
    h("td", { class: "topic" }, h("a", { href: `#/jobs?topic=${encodeURIComponent(job.topic)}` }, job.topic)),
    h("td", { class: "status-cell" }, statusPill(job.status)),
    h("td", { class: "num" }, `${job.attempts}/${job.max_retries + 1}`),
    compact ? null : h("td", { class: "num" }, String(job.priority)),
    h("td", {}, when(job.created_at)),
    h("td", {}, finished ? when(finished) : job.status === "processing" ? when(job.started_at) : when(job.run_at)),
    h("td", { class: "num" }, took === null ? "" : duration(took)),
    compact ? null : h("td", { class: "err", title: job.last_error || "" }, errorSummary(job)),
  );
}

/** Show a status change from an event at once, before the row is refetched. */
export function patchRow(root, event) {
  for (const row of root.querySelectorAll(`tr[data-job-id="${CSS.escape(event.job_id)}"]`)) {
    if (!event.status || row.dataset.status === event.status) continue;
    row.dataset.status = event.status;
    const cell = row.querySelector(".status-cell");
    if (cell) cell.replaceChildren(statusPill(event.status));
    row.classList.remove("flash");
    void row.offsetWidth; // restart the highlight animation
    row.classList.add("flash");
  }
}

/** The actions a job in this status allows, for an admin; [] for anyone else. */
export function jobActions(job, { onDone = () => {} } = {}) {
  if (!auth.canWrite) return [];
  const id = job.id;
  const out = [];
  const act = async (label, fn, message) => {
    await fn(id);
    toast(message);
    onDone(label);
  };
  if (job.status === "failed" || job.status === "cancelled") {
    out.push(
      actionButton("Retry", {
        cls: "btn primary",
        testid: "action-retry",
        title: "requeue with a fresh retry budget, to run now",
        run: async () => {
          if (await confirmAction({ title: "Retry this job?", body: `Job ${id} (${job.topic}) goes back to pending with its attempts reset and runs now.`, confirm: "Retry" })) {
            await act("retry", api.requeue, "Job requeued");
          }
        },
      }),
    );
  }
  if (job.status === "pending") {
    out.push(
      actionButton("Run now", {
        cls: "btn primary",
        testid: "action-run-now",
        title: "set run_at to now",
        run: async () => {
          if (await confirmAction({ title: "Run this job now?", body: `Job ${id} (${job.topic}) becomes due immediately (run_at = now).`, confirm: "Run now" })) {
            await act("run-now", api.runNow, "Job is due now");
          }
        },
      }),
    );
  }
  if (job.status === "pending" || job.status === "processing") {
    out.push(
      actionButton("Cancel", {
        cls: "btn warn",
        testid: "action-cancel",
        run: async () => {
          const running = job.status === "processing";
          if (await confirmAction({ title: "Cancel this job?", body: running ? `Job ${id} is running: its handler is asked to stop and the job ends cancelled.` : `Job ${id} will not run.`, confirm: "Cancel job", dismiss: "Keep job", danger: true })) {
            await act("cancel", api.cancel, running ? "Cancellation requested" : "Job cancelled");
          }
        },
      }),
    );
  }
  if (job.status !== "processing") {
    out.push(
      actionButton("Delete", {
        cls: "btn danger",
        testid: "action-delete",
        run: async () => {
          if (await confirmAction({ title: "Delete this job?", body: `Job ${id} (${job.topic}, ${job.status}) is removed from the store for good.`, confirm: "Delete", danger: true })) {
            await act("delete", api.remove, "Job deleted");
          }
        },
      }),
    );
  }
  return out;
}

/** "Retry N failed" for one topic (admin only), with a confirmation. */
export function bulkRetryButton(topic, failedCount, { onDone = () => {}, small = false } = {}) {
  if (!auth.canWrite || !failedCount) return null;
  // In a table row the count is in the next cell: a short label keeps the row narrow.
  const button = actionButton(small ? "Retry all" : `Retry ${failedCount} failed`, {
    cls: small ? "btn small" : "btn",
    testid: "action-bulk-retry",
    title: `requeue the ${failedCount} failed job${failedCount === 1 ? "" : "s"} of ${topic}`,
    run: async () => {
      const ok = await confirmAction({
        title: `Retry every failed job of ${topic}?`,
        body: `About ${failedCount} failed job${failedCount === 1 ? "" : "s"} go back to pending with a fresh retry budget and run now.`,
        confirm: "Retry all",
      });
      if (!ok) return;
      const n = await retryFailedInTopic(topic);
      toast(`${n} job${n === 1 ? "" : "s"} of ${topic} requeued`);
      onDone();
    },
  });
  return button;
}

export function panel(title, { actions = [], testid, cls = "" } = {}, ...body) {
  return h(
    "section",
    { class: `panel ${cls}`, "data-testid": testid },
    h("header", {}, h("h2", {}, title), h("div", { class: "panel-actions" }, actions)),
    h("div", { class: "panel-body" }, body),
  );
}

export function errorBox(err) {
  return h("div", { class: "error-box", role: "alert" }, err.message || String(err));
}

const ENDED = new Set(["job.completed", "job.failed", "job.cancelled", "job.deleted"]);

/**
 * A worker's active jobs, less those this page saw end after the worker's last
 * heartbeat (the registry is refreshed by heartbeats, so it lags behind the events).
 */
export function activeJobs(worker) {
  const beat = parseTime(worker.last_heartbeat) ?? 0;
  return worker.active_jobs.filter((id) => {
    const events = live.byJob.get(id) || [];
    const last = events[events.length - 1];
    return !(last && ENDED.has(last.type) && (parseTime(last.timestamp) ?? 0) >= beat);
  });
}
