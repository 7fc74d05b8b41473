// Overview: live counts, the last hour's throughput and failure rate, queue latency,
// recent jobs, topics, live workers.

import { api } from "../api.js";
import { throughputChart } from "../chart.js";
import { live } from "../live.js";
import { series } from "../series.js";
import { STATUSES, duration, h, jobLink, mount, num, parseTime, throttle } from "../ui.js";
import { activeJobs, bulkRetryButton, errorBox, jobsTable, panel, patchRow } from "./common.js";

const REFRESH = 5000;
const RESEED = 30000; // resynchronise the chart with the server's record

export function render(root) {
  const cards = h("div", { class: "cards", "data-testid": "status-cards" });
  const chartBox = h("div", { class: "chart-box" });
  const chartSummary = h("div", { class: "chart-summary" });
  const recentBox = h("div", {});
  const topicsBox = h("div", {});
  const workersBox = h("div", {});
  const state = { stats: null, latency: null, workers: null };

  mount(
    root,
    cards,
    h(
      "div",
      { class: "grid-2" },
      panel("Throughput · last hour", { testid: "throughput", cls: "span-2", actions: [chartSummary] }, chartBox, legend()),
      panel("Topics", { testid: "topics" }, topicsBox),
    ),
    h(
      "div",
      { class: "grid-2" },
      panel("Recent jobs", { testid: "recent-jobs", cls: "span-2", actions: [h("a", { href: "#/jobs", class: "more" }, "all jobs →")] }, recentBox),
      panel("Live workers", { testid: "workers", actions: [h("a", { href: "#/workers", class: "more" }, "details →")] }, workersBox),
    ),
  );

  function drawCards() {
    const s = state.stats;
    const t = series.totals();
    const items = STATUSES.map((st) =>
      h(
        "a",
        { class: `card stat s-${st} ${s && s[st] ? "nonzero" : ""}`, href: `#/jobs?status=${st}`, "data-testid": `count-${st}` },
        h("span", { class: "label" }, st),
        h("span", { class: "value" }, s ? num(s[st]) : "—"),
      ),
    );
    items.push(
      h("div", { class: "card stat" }, h("span", { class: "label" }, "throughput"), h("span", { class: "value" }, t.perMinute.toFixed(t.perMinute < 10 ? 1 : 0), h("small", {}, " /min"))),
      h(
        "div",
        {
          class: "card stat",
          "data-testid": "latency-card",
          title:
            "Queue latency: how long the oldest due job (pending, run time come) has been waiting for a worker right now; 0s when none waits.\n" +
            "p50 pickup: the median time from a job's due time to its start, over the last hour's started jobs.\n" +
            "A large latency beside a small pickup means a backlog or a topic no worker takes, not slow workers.",
        },
        h("span", { class: "label" }, "queue latency"),
        h("span", { class: "value", "data-testid": "latency" }, state.latency === null ? "0s" : duration(state.latency)),
        h("span", { class: "sub" }, "oldest due job waiting"),
        h("span", { class: "sub" }, t.pickupP50 === null ? "" : `median pickup ${duration(t.pickupP50)} (1 h)`),
      ),
      h("a", { class: "card stat", href: "#/workers" }, h("span", { class: "label" }, "workers"), h("span", { class: "value" }, s ? num(s.workers) : "—")),
    );
    mount(cards, items);
  }

  function drawChart() {
    const t = series.totals();
    mount(chartBox, throughputChart(series.points()));
    mount(
      chartSummary,
      h("span", {}, h("b", {}, num(t.completed)), " completed"),
      h("span", {}, h("b", { class: "bad" }, num(t.failed)), " failed attempts"),
      h("span", {}, "failure rate ", h("b", {}, t.failureRate === null ? "—" : `${(t.failureRate * 100).toFixed(1)}%`)),
      h("span", { class: "muted", title: "where the history before this page was opened comes from" }, series.source),
    );
  }

  function drawTopics() {
    const s = state.stats;
    if (!s) return;
    const topics = Object.entries(s.by_topic || {});
    if (!topics.length) {
      mount(topicsBox, h("p", { class: "muted pad" }, "No topics yet."));
      return;
    }
    // Topics with jobs waiting that no live worker takes: they wait until one starts.
    const handled = state.workers ? new Set(state.workers.flatMap((w) => w.topics)) : null;
    const orphan = (topic, counts) => handled !== null && (counts.pending || 0) > 0 && !handled.has(topic);
    const rows = topics.map(([topic, counts]) =>
      h(
        "tr",
        { "data-topic": topic, class: orphan(topic, counts) ? "orphan" : "" },
        h(
          "td",
          { class: "topic" },
          h("a", { href: `#/jobs?topic=${encodeURIComponent(topic)}` }, topic),
          orphan(topic, counts) ? h("span", { class: "flag warn", "data-testid": "no-worker", title: "No live worker handles this topic: its pending jobs wait until a worker for it starts." }, "no worker") : null,
        ),
        ...["pending", "processing", "completed", "failed"].map((st) =>
          h("td", { class: `num ${counts[st] && st === "failed" ? "bad" : ""}` }, counts[st] ? h("a", { href: `#/jobs?topic=${encodeURIComponent(topic)}&status=${st}` }, num(counts[st])) : h("span", { class: "muted" }, "0")),
        ),
        h("td", { class: "actions" }, bulkRetryButton(topic, counts.failed || 0, { small: true, onDone: refreshStats })),
      ),
    );
    mount(
      topicsBox,
      h(
        "table",
        { class: "table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Topic"), h("th", { class: "num" }, "pend"), h("th", { class: "num" }, "run"), h("th", { class: "num" }, "done"), h("th", { class: "num" }, "failed"), h("th", {}))),
        h("tbody", {}, rows),
      ),
    );
  }

  function drawWorkers() {
    const list = state.workers;
    if (!list) return;
    if (!list.length) {
      mount(workersBox, h("p", { class: "muted pad" }, "No live worker. Jobs wait until one starts."));
      return;
    }
    mount(
      workersBox,
      h(
        "ul",
        { class: "workers-list" },
        list.map((w) => {
          const active = activeJobs(w);
          return h(
            "li",
            {},
            h("div", { class: "w-head" }, h("span", { class: "mono", title: w.id }, `${w.host}:${w.pid}`), h("span", { class: "muted" }, `${active.length}/${w.concurrency} busy`), h("span", { class: "w-topics muted" }, w.topics.join(" ")), meter(active.length, w.concurrency)),
            active.length ? h("div", { class: "w-jobs" }, active.slice(0, 8).map((id) => jobLink(id)), active.length > 8 ? h("span", { class: "muted" }, `+${active.length - 8}`) : null) : null,
          );
        }),
      ),
    );
  }

  let aborted = false;
  async function refreshStats() {
    try {
      state.stats = await api.stats();
      drawCards();
      drawTopics();
    } catch (err) {
      if (!aborted) mount(topicsBox, errorBox(err));
    }
  }
  async function refreshRecent() {
    try {
      const page = await api.jobs({ limit: 12 });
      if (!aborted) mount(recentBox, jobsTable(page.items, { compact: true, empty: "No jobs yet." }));
    } catch (err) {
      if (!aborted) mount(recentBox, errorBox(err));
    }
  }
  async function refreshWorkers() {
    try {
      state.workers = await api.workers();
      drawWorkers();
      drawTopics();
    } catch (err) {
      if (!aborted) mount(workersBox, errorBox(err));
    }
  }
  async function refreshLatency() {
    // The oldest pending jobs: the keyset page just above the lowest id ("0" sorts
    // below every job id), as cheap with a million pending jobs as with ten. The oldest
    // due one has waited longest.
    const pending = state.stats ? state.stats.pending : 0;
    if (!pending) {
      state.latency = null;
      return;
    }
    try {
      const page = await api.jobs({ status: "pending", limit: 100, before: "0" });
      const now = Date.now();
      const waits = page.items.map((j) => now - parseTime(j.run_at)).filter((w) => w > 0);
      state.latency = waits.length ? Math.max(...waits) : null;
    } catch {
      state.latency = null;
    }
  }

  const onEvent = throttle(() => {
    live.requestStats();
    refreshRecent();
    drawChart();
  }, 700);
  const onWorkersEvent = throttle(refreshWorkers, 2000);

  const offs = [
    live.on("stats", (s) => {
      state.stats = s;
      drawCards();
      drawTopics();
    }),
    live.on("event", (e) => {
      patchRow(recentBox, e);
      if (e.type === "job.completed" || e.type === "job.failed" || e.type === "job.cancelled") drawWorkers();
      onEvent();
      if (e.type === "job.started" || e.type === "job.completed" || e.type === "job.failed") onWorkersEvent();
    }),
  ];

  async function tick() {
    await refreshStats();
    await refreshLatency();
    drawCards();
    drawChart();
  }
  drawCards();
  drawChart();
  tick();
  refreshRecent();
  refreshWorkers();
  const reseed = () =>
    series
      .seed()
      .then(() => !aborted && drawChart())
      .catch(() => {});
  reseed();
  const timer = setInterval(() => {
    tick();
    refreshWorkers();
  }, REFRESH);
  const seedTimer = setInterval(reseed, RESEED);
  return () => {
    aborted = true;
    clearInterval(timer);
    clearInterval(seedTimer);
    for (const off of offs) off();
  };
}

function legend() {
  return h(
    "div",
    { class: "legend" },
    h("span", {}, h("i", { class: "sw ok" }), "completed"),
    h("span", {}, h("i", { class: "sw bad" }), "failed attempts"),
    h("span", {}, h("i", { class: "sw rate" }), "failure rate (right axis)"),
  );
}

export function meter(used, total) {
  const pct = total ? Math.min(100, (100 * used) / total) : 0;
  return h("span", { class: "meter", title: `${used} of ${total} slots busy` }, h("span", { style: `width:${pct}%` }));
}
