// Jobs: a table filtered by status and topic, paginated, kept live by the WebSocket.
// The filters live in the hash (#/jobs?status=failed&topic=email&after=<id>) so a view
// can be bookmarked or shared (no token in it). Pages follow the API's next/prev keyset
// cursors (after=/before=): as fast deep in a million jobs as on the first page.

import { api } from "../api.js";
import { live } from "../live.js";
import { STATUSES, h, mount, num, throttle } from "../ui.js";
import { bulkRetryButton, errorBox, jobsTable, patchRow } from "./common.js";

const PAGE_SIZES = [25, 50, 100];

function hashOf(params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined && !(k === "offset" && !Number(v))) qs.set(k, v);
  const s = qs.toString();
  return `#/jobs${s ? `?${s}` : ""}`;
}

function go(params) {
  location.hash = hashOf(params);
}

export function render(root, params) {
  const status = STATUSES.includes(params.status) ? params.status : "";
  const topic = params.topic || "";
  const limit = PAGE_SIZES.includes(Number(params.limit)) ? Number(params.limit) : 50;
  const offset = Math.max(0, Number(params.offset) || 0);
  const before = params.before || "";
  const after = before ? "" : params.after || "";
  const deep = offset > 0 || Boolean(after || before);
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
      const page = await api.jobs({ status, topic, limit, ...(after || before ? { after, before } : { offset }) });
      if (aborted) return;
      total = page.total;
      pendingNew = 0;
      newBanner.hidden = true;
      mount(tableBox, jobsTable(page.items, { empty: status || topic ? "No job matches these filters." : "No jobs yet." }));
      const from = page.items.length ? offset + 1 : 0;
      const to = offset + page.items.length;
      // A keyset page deep in the list does not know its position, only its neighbours.
      const info = page.prev && !offset ? `${num(page.items.length)} of ${num(total)}` : `${num(from)}–${num(to)} of ${num(total)}`;
      const link = (cursor, text, rel) =>
        cursor
          ? h("a", { class: "btn small", href: hashOf({ ...current, offset: 0, [rel === "prev" ? "before" : "after"]: cursor }), rel, "data-testid": `page-${rel}` }, text)
          : h("span", { class: "btn small", "aria-disabled": "true", "data-testid": `page-${rel}` }, text);
      mount(
        pager,
        h("span", { class: "muted", "data-testid": "page-info" }, info),
        h("span", { class: "spacer" }),
        link(page.prev, "← Newer", "prev"),
        link(page.next, "Older →", "next"),
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
    if (deep && !visible) {
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
