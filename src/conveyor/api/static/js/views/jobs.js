// Jobs: a table filtered by status and topic, paginated, kept live by the WebSocket.
// The filters live in the hash (#/jobs?status=failed&topic=email&offset=50) so a view
// can be bookmarked or shared (no token in it).

import { api } from "../api.js";
import { live } from "../live.js";
import { STATUSES, h, mount, num, throttle } from "../ui.js";
import { bulkRetryButton, errorBox, jobsTable, patchRow } from "./common.js";

const PAGE_SIZES = [25, 50, 100];

function go(params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined && !(k === "offset" && !Number(v))) qs.set(k, v);
  const s = qs.toString();
  location.hash = `#/jobs${s ? `?${s}` : ""}`;
}

export function render(root, params) {
  const status = STATUSES.includes(params.status) ? params.status : "";
  const topic = params.topic || "";
  const limit = PAGE_SIZES.includes(Number(params.limit)) ? Number(params.limit) : 50;
  const offset = Math.max(0, Number(params.offset) || 0);
  const current = { status, topic, limit: limit === 50 ? "" : limit, offset };

  const statusTabs = h("div", { class: "seg", role: "tablist", "data-testid": "status-filter" });
  const topicSelect = h("select", { id: "topic-filter", "data-testid": "topic-filter", "aria-label": "topic" });
  const sizeSelect = h("select", { "aria-label": "page size" }, PAGE_SIZES.map((n) => h("option", { value: n, selected: n === limit }, `${n} / page`)));
  const bulk = h("span", {});
  const tableBox = h("div", { class: "table-wrap" });
  const pager = h("div", { class: "pager", "data-testid": "pager" });
  const newBanner = h("button", { class: "new-banner", type: "button", hidden: true }, "");

  topicSelect.addEventListener("change", () => go({ ...current, topic: topicSelect.value, offset: 0 }));
  sizeSelect.addEventListener("change", () => go({ ...current, limit: sizeSelect.value, offset: 0 }));

  mount(
    root,
    h("div", { class: "toolbar" }, h("h1", {}, "Jobs"), statusTabs, h("label", { class: "field" }, "Topic ", topicSelect), sizeSelect, h("span", { class: "spacer" }), bulk),
    h("section", { class: "panel" }, newBanner, tableBox, pager),
  );

  let stats = null;
  function drawFilters() {
    const counts = stats ? (topic ? stats.by_topic[topic] || {} : stats) : {};
    mount(
      statusTabs,
      ["", ...STATUSES].map((st) =>
        h(
          "a",
          { href: "#", class: `seg-item ${st === status ? "active" : ""} ${st ? `s-${st}` : ""}`, "data-status": st || "all", role: "tab", "aria-selected": st === status ? "true" : "false", onclick: (ev) => { ev.preventDefault(); go({ ...current, status: st, offset: 0 }); } },
          st || "all",
          stats ? h("span", { class: "count" }, num(st ? counts[st] || 0 : STATUSES.reduce((sum, k) => sum + (counts[k] || 0), 0))) : null,
        ),
      ),
    );
    const topics = Object.keys(stats ? stats.by_topic : {});
    if (topic && !topics.includes(topic)) topics.push(topic);
    topics.sort();
    mount(topicSelect, h("option", { value: "" }, "all topics"), topics.map((t) => h("option", { value: t, selected: t === topic }, t)));
    mount(bulk, topic && stats ? bulkRetryButton(topic, (stats.by_topic[topic] || {}).failed || 0, { onDone: refresh }) : null);
  }

  let total = 0;
  let pendingNew = 0;
  let aborted = false;
  async function refresh() {
    try {
      const page = await api.jobs({ status, topic, limit, offset });
      if (aborted) return;
      total = page.total;
      pendingNew = 0;
      newBanner.hidden = true;
      mount(tableBox, jobsTable(page.items, { empty: status || topic ? "No job matches these filters." : "No jobs yet." }));
      const from = page.items.length ? offset + 1 : 0;
      const to = offset + page.items.length;
      mount(
        pager,
        h("span", { class: "muted", "data-testid": "page-info" }, `${num(from)}–${num(to)} of ${num(total)}`),
        h("span", { class: "spacer" }),
        h("button", { class: "btn small", type: "button", disabled: offset <= 0, onclick: () => go({ ...current, offset: Math.max(0, offset - limit) }) }, "← Newer"),
        h("button", { class: "btn small", type: "button", disabled: to >= total, onclick: () => go({ ...current, offset: offset + limit }) }, "Older →"),
      );
    } catch (err) {
      if (!aborted) mount(tableBox, errorBox(err));
    }
  }
  async function refreshStats() {
    try {
      stats = await api.stats();
      if (!aborted) drawFilters();
    } catch {
      /* the table reports errors */
    }
  }

  // Live: patch visible rows at once, then refetch the page (throttled). On a later
  // page, new jobs would shift rows under the operator's eyes: show a banner instead.
  const refetch = throttle(refresh, 600);
  const restat = throttle(refreshStats, 1500);
  newBanner.addEventListener("click", () => go({ ...current, offset: 0 }));
  const off = live.on("event", (e) => {
    if (topic && e.topic !== topic) return;
    patchRow(tableBox, e);
    restat();
    const visible = tableBox.querySelector(`tr[data-job-id="${CSS.escape(e.job_id)}"]`);
    if (offset > 0 && !visible) {
      if (e.type === "job.scheduled" && (!status || status === "pending")) {
        pendingNew += 1;
        newBanner.textContent = `${pendingNew} new job${pendingNew === 1 ? "" : "s"} — show newest`;
        newBanner.hidden = false;
      }
      return;
    }
    refetch();
  });

  // After a reconnection, events may have been missed: read the page again.
  const offState = live.on("state", ({ state }) => state === "live" && (refresh(), refreshStats()));
  drawFilters();
  refresh();
  refreshStats();
  const timer = setInterval(refreshStats, 10000);
  return () => {
    aborted = true;
    off();
    offState();
    clearInterval(timer);
  };
}
