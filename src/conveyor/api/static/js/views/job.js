// One job: details, payload, result, metadata, last error with its traceback, a timeline
// (enqueued, each attempt seen live, finished) and the actions its state allows.

import { api } from "../api.js";
import { live } from "../live.js";
import { absolute, codeBlock, duration, h, mount, parseTime, statusPill, throttle, when } from "../ui.js";
import { errorBox, errorSummary, firstLine, jobActions, panel, runTime } from "./common.js";

const SAME = 2000; // ms: a field and an event this close describe the same moment

export function render(root, { id }) {
  let aborted = false;
  let job = null;

  let handled = null; // topics live workers handle (for a pending job's warning)

  async function load() {
    try {
      job = await api.job(id);
      if (job.status === "pending" && handled === null) handled = new Set(await api.jobTypes().catch(() => []));
      if (!aborted) draw();
    } catch (err) {
      if (aborted) return;
      if (err.status === 404) {
        mount(root, backLink(), h("div", { class: "panel pad" }, h("h1", {}, "Job not found"), h("p", { class: "muted mono" }, id), h("p", { class: "muted" }, "It may have been deleted or pruned after the retention period.")));
      } else {
        mount(root, backLink(), errorBox(err));
      }
    }
  }

  function draw() {
    const actions = jobActions(job, {
      onDone: (what) => {
        if (what === "delete") location.hash = "#/jobs";
        else load();
      },
    });
    mount(
      root,
      backLink(),
      h(
        "div",
        { class: "job-head" },
        h("h1", {}, h("span", { class: "muted" }, "Job "), h("span", { class: "mono", "data-testid": "job-id" }, job.id)),
        h("span", { "data-testid": "job-status" }, statusPill(job.status)),
        job.status === "processing" && job.cancel_requested ? h("span", { class: "pill s-cancelled" }, "cancel requested") : null,
        h("span", { class: "spacer" }),
        h("div", { class: "job-actions", "data-testid": "job-actions" }, actions),
      ),
      job.status === "pending" && handled !== null && !handled.has(job.topic)
        ? h("div", { class: "notice warn", role: "status", "data-testid": "no-worker" }, `No live worker handles topic ${job.topic}: this job waits until a worker for it starts.`)
        : null,
      h(
        "div",
        { class: "grid-2" },
        panel("Details", { testid: "job-details" }, details(job)),
        panel("Timeline", { testid: "job-timeline" }, timeline(job, live.byJob.get(job.id) || [])),
      ),
      errorsPanel(job),
      h(
        "div",
        { class: "grid-3" },
        panel("Payload", { testid: "job-payload" }, codeBlock(job.payload)),
        panel("Result", { testid: "job-result" }, codeBlock(job.result)),
        panel("Metadata", { testid: "job-metadata" }, codeBlock(job.metadata, { empty: "{}" })),
      ),
    );
  }

  const reload = throttle(load, 300);
  const off = live.on("event", (e) => {
    if (e.job_id !== id) return;
    if (e.type === "job.deleted") {
      mount(root, backLink(), h("div", { class: "panel pad" }, h("h1", {}, "Job deleted"), h("p", { class: "muted mono" }, id)));
      return;
    }
    reload();
  });
  const offState = live.on("state", ({ state }) => state === "live" && job && load());
  mount(root, backLink(), h("p", { class: "muted" }, "Loading…"));
  load();
  const timer = setInterval(() => job && job.status === "processing" && load(), 5000);
  return () => {
    aborted = true;
    off();
    offState();
    clearInterval(timer);
  };
}

function backLink() {
  return h("a", { href: "#/jobs", class: "back" }, "← Jobs");
}

function kv(label, value) {
  return [h("dt", {}, label), h("dd", {}, value === null || value === undefined || value === "" ? h("span", { class: "muted" }, "—") : value)];
}

function details(job) {
  const took = runTime(job);
  return h(
    "dl",
    { class: "kv" },
    kv("Topic", h("a", { href: `#/jobs?topic=${encodeURIComponent(job.topic)}` }, job.topic)),
    kv("Attempts", h("span", { "data-testid": "job-attempts" }, `${job.attempts} of ${job.max_retries + 1}`)),
    job.snoozes === undefined ? null : kv("Snoozes", h("span", { "data-testid": "job-snoozes" }, String(job.snoozes), job.max_snoozes ? h("span", { class: "muted" }, ` of at most ${job.max_snoozes}`) : null)),
    kv("Priority", String(job.priority)),
    kv("Run at", job.status === "pending" ? h("span", {}, when(job.run_at), job.next_run_in ? h("span", { class: "muted" }, ` (in ${job.next_run_in})`) : null) : absolute(job.run_at)),
    kv("Retry", `${job.backoff}, base ${duration(job.retry_delay * 1000)}`),
    kv("Timeout", job.timeout === null ? "none" : duration(job.timeout * 1000)),
    kv("Created", h("span", {}, absolute(job.created_at), " · ", when(job.created_at))),
    kv("Started", job.started_at ? absolute(job.started_at) : null),
    kv("Finished", job.finished_at ? absolute(job.finished_at) : null),
    kv("Run time", took === null ? null : duration(took)),
    kv("Unique key", job.unique_key ? h("span", { class: "mono" }, job.unique_key) : null),
    kv("Schedule", job.schedule ? h("a", { href: "#/schedules" }, job.schedule) : null),
    kv("Locked by", job.locked_by ? h("span", { class: "mono" }, job.locked_by, job.locked_until ? h("span", { class: "muted" }, " until ", when(job.locked_until)) : null) : null),
  );
}

const EVENT_TEXT = {
  "job.scheduled": (e) => ((e.data || {}).requeued ? "Requeued" : "Scheduled"),
  "job.started": (e) => `Attempt ${(e.metadata || {}).attempt ?? ""} started`.replace("  ", " "),
  "job.completed": () => "Completed",
  "job.failed": (e) => ((e.metadata || {}).final ? "Failed (final)" : "Attempt failed"),
  "job.retrying": () => "Retry scheduled",
  "job.cancelled": () => "Cancelled",
};

function eventDetail(e) {
  const d = e.data || {};
  const m = e.metadata || {};
  if (e.type === "job.failed") return firstLine(d.error || m.error || "");
  if (e.type === "job.retrying") return m.next_retry_at ? `next try ${absolute(m.next_retry_at)}` : "";
  if (e.type === "job.completed" && m.duration_ms !== undefined) return `in ${duration(m.duration_ms)}`;
  if (e.type === "job.scheduled" && d.run_at) return `due ${absolute(d.run_at)}`;
  return "";
}

function timeline(job, events) {
  const items = [];
  const created = parseTime(job.created_at);
  const near = (t, type) => events.some((e) => (!type || type.includes(e.type)) && Math.abs(parseTime(e.timestamp) - t) < SAME);
  items.push({ t: created, kind: "scheduled", label: "Enqueued", detail: `${job.topic}${job.priority ? `, priority ${job.priority}` : ""}` });
  for (const e of events) {
    const t = parseTime(e.timestamp);
    if (e.type === "job.scheduled" && !(e.data || {}).requeued && Math.abs(t - created) < SAME) continue;
    const text = EVENT_TEXT[e.type];
    items.push({ t, kind: e.type.slice(4), label: text ? text(e) : e.type, detail: eventDetail(e), trace: e.type === "job.failed" ? (e.data || {}).error || "" : "" });
  }
  const started = parseTime(job.started_at);
  if (started !== null && !near(started, ["job.started"])) {
    items.push({ t: started, kind: "started", label: `Attempt ${job.attempts} started`, detail: job.attempts > 1 ? "earlier attempts happened before this page was opened" : "" });
  }
  const finished = parseTime(job.finished_at);
  if (finished !== null && !near(finished, ["job.completed", "job.failed", "job.cancelled"])) {
    items.push({ t: finished, kind: job.status, label: job.status[0].toUpperCase() + job.status.slice(1), detail: job.status === "failed" ? errorSummary(job) : "" });
  }
  if (job.status === "pending" && parseTime(job.run_at) > Date.now()) {
    items.push({ t: parseTime(job.run_at), kind: "future", label: job.attempts ? "Next attempt due" : "Due", detail: "" });
  }
  items.sort((a, b) => a.t - b.t);
  return h(
    "ol",
    { class: "timeline" },
    items.map((it) =>
      h(
        "li",
        { class: `tl-${it.kind}` },
        h("span", { class: "dot" }),
        h("span", { class: "tl-label" }, it.label),
        h("time", { class: "tl-time", title: absolute(new Date(it.t).toISOString()), datetime: new Date(it.t).toISOString() }, absolute(new Date(it.t).toISOString()).slice(11)),
        it.detail ? h("div", { class: "tl-detail" }, it.detail) : null,
        // A traceback keeps its lines: folded under the error's summary line.
        it.trace && it.trace.includes("\n") ? h("details", { class: "tl-trace" }, h("summary", {}, "traceback"), h("pre", { class: "code" }, it.trace)) : null,
      ),
    ),
  );
}

/**
 * The job's errors: one entry per failed attempt when the store keeps them
 * (``errors``: attempt, at, worker, error with its traceback), newest first; else the
 * last error alone, titled by what it is.
 */
function errorsPanel(job) {
  const entries = Array.isArray(job.errors) ? job.errors : [];
  if (entries.length) {
    const items = [...entries].reverse().map((e, i) =>
      h(
        "details",
        { class: "attempt-error", open: i === 0, "data-testid": "job-error-entry" },
        h(
          "summary",
          {},
          h("span", { class: "ae-attempt" }, `Attempt ${e.attempt ?? "?"}`),
          e.at ? h("time", { class: "muted", datetime: e.at, title: absolute(e.at) }, absolute(e.at)) : null,
          e.worker ? h("span", { class: "muted mono ae-worker", title: e.worker }, e.worker) : null,
          h("span", { class: "ae-summary" }, firstLine(e.error)),
        ),
        h("pre", { class: "code" }, e.error || ""),
      ),
    );
    const title = entries.length === 1 ? "Error (1 failed attempt)" : `Errors (${entries.length} failed attempts)`;
    return panel(title, { testid: "job-error", cls: "error-panel" }, items);
  }
  if (!job.last_error) return null;
  // "An earlier attempt" only where a later one followed it (a retry pending, running
  // or done); a failed or cancelled job's last error is simply its last.
  const earlier = (job.status === "pending" || job.status === "processing" || job.status === "completed") && job.attempts >= 1;
  const title = job.status === "cancelled" ? "Last error (why it stopped)" : earlier ? "Last error (an earlier attempt)" : "Last error";
  return panel(title, { testid: "job-error", cls: "error-panel", actions: [h("span", { class: "muted" }, errorSummary(job))] }, codeBlock(job.last_error));
}
