// Jobs: a table filtered by status and topic, paginated, kept live by the WebSocket.
// Pending splits into due / scheduled / retrying views; a search box finds a job by id
// (full, or the ending shown in tables) or by payload text; #/jobs?schedule=NAME lists
// one schedule's jobs. Those go through /api/jobs/search (a bounded scan, paged by its
// next cursor).
// The filters live in the hash (#/jobs?status=failed&topic=email&after=<id>) so a view
// can be bookmarked or shared (no token in it). Pages follow the API's next/prev keyset
// cursors (after=/before=): as fast deep in a million jobs as on the first page.

import { api } from "../api.js";
import { live } from "../live.js";
import { STATUSES, h, mount, num, throttle } from "../ui.js";
import { bulkRetryButton, errorBox, jobsTable, patchRow } from "./common.js";

const PAGE_SIZES = [25, 50, 100];
const VIEWS = ["due", "scheduled", "retrying"];
const VIEW_TEXT = { due: "due now", scheduled: "scheduled", retrying: "retrying" };
// What the search box takes for a job id (or its ending) rather than payload text.
const ID_LIKE = /^…?[0-9a-f-]{4,36}$/i;
const VIEW_HELP = {
  due: "pending jobs whose run time has come: waiting for a worker",
  scheduled: "pending jobs set to run later (a delay, run_at, or made ahead by a schedule)",
  retrying: "pending jobs waiting for their next attempt after a failure",
};

function hashOf(params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined && !(k === "offset" && !Number(v))) qs.set(k, v);
  const s = qs.toString();
  return `#/jobs${s ? `?${s}` : ""}`;
}

/** Mark the pending rows whose topic no live worker handles (they wait for one). */
function flagOrphans(box, handled) {
  if (!handled) return;
  for (const row of box.querySelectorAll("tr[data-status=pending]")) {
    const cell = row.querySelector("td.topic");
    if (!cell || cell.querySelector(".flag") || handled.has(row.dataset.topic)) continue;
    cell.append(h("span", { class: "flag warn", "data-testid": "no-worker", title: "No live worker handles this topic: the job waits until a worker for it starts." }, "no worker"));
  }
}

/** A total as shown: an estimate reads "about N". */
function countText(n, isExact) {
  return isExact === false ? `about ${num(n)}` : num(n);
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
  const view = VIEWS.includes(params.view) ? params.view : "";
  const q = (params.q || "").trim();
  const schedule = params.schedule || "";
  const searching = Boolean(view || q || schedule);
  // A search's total is an estimate unless asked for exactly (a read of every job it selects).
  const exact = params.exact === "1";
  const deep = offset > 0 || Boolean(after || before);
  const current = { status: view ? "pending" : status, topic, limit: limit === 50 ? "" : limit, offset, view, q, schedule };

  const statusTabs = h("div", { class: "seg", role: "tablist", "data-testid": "status-filter" });
  const topicSelect = h("select", { id: "topic-filter", "data-testid": "topic-filter", "aria-label": "topic" });
  const sizeSelect = h("select", { "aria-label": "page size" }, PAGE_SIZES.map((n) => h("option", { value: n, selected: n === limit }, `${n} / page`)));
  const bulk = h("span", {});
  const tableBox = h("div", { class: "table-wrap" });
  const viewTabs = h("div", { class: "seg sub", role: "tablist", "data-testid": "pending-views", hidden: !(status === "pending" || view) });
  const searchInput = h("input", { type: "search", name: "q", value: q, placeholder: "job id or payload text", "aria-label": "search jobs", "data-testid": "search-input", spellcheck: "false" });
  const searchForm = h("form", { class: "search", role: "search", "data-testid": "search-form" }, searchInput, h("button", { class: "btn small", type: "submit" }, "Search"));
  const chips = h("div", { class: "chips" });
  const subbar = h("div", { class: "toolbar sub" }, viewTabs, chips);
  const pager = h("div", { class: "pager", "data-testid": "pager" });
  const newBanner = h("button", { class: "new-banner", type: "button", hidden: true }, "");

  topicSelect.addEventListener("change", () => go({ ...current, topic: topicSelect.value, offset: 0 }));
  searchForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    go({ ...current, q: searchInput.value.trim(), offset: 0 });
  });
  sizeSelect.addEventListener("change", () => go({ ...current, limit: sizeSelect.value, offset: 0 }));

  mount(
    root,
    h("div", { class: "toolbar" }, h("h1", {}, "Jobs"), statusTabs, h("label", { class: "field" }, "Topic ", topicSelect), sizeSelect, searchForm, h("span", { class: "spacer" }), bulk),
    subbar,
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
          { href: "#", class: `seg-item ${st === status ? "active" : ""} ${st ? `s-${st}` : ""}`, "data-status": st || "all", role: "tab", "aria-selected": st === status ? "true" : "false", onclick: (ev) => { ev.preventDefault(); go({ ...current, status: st, view: "", offset: 0 }); } },
          st || "all",
          stats ? h("span", { class: "count" }, num(st ? counts[st] || 0 : STATUSES.reduce((sum, k) => sum + (counts[k] || 0), 0))) : null,
        ),
      ),
    );
    mount(
      viewTabs,
      ["", ...VIEWS].map((v) =>
        h(
          "a",
          { href: hashOf({ ...current, status: "pending", view: v, offset: 0 }), class: `seg-item ${v === view ? "active" : ""}`, "data-view": v || "all", role: "tab", "aria-selected": v === view ? "true" : "false", title: v ? VIEW_HELP[v] : "every pending job" },
          v ? VIEW_TEXT[v] : "all pending",
        ),
      ),
    );
    const chip = (label, without) => h("span", { class: "chip" }, label, h("a", { href: hashOf({ ...current, ...without, offset: 0 }), "aria-label": `clear ${label}`, class: "chip-x" }, "×"));
    mount(
      chips,
      schedule ? chip(`schedule ${schedule}`, { schedule: "" }) : null,
      q ? chip(ID_LIKE.test(q) ? `id ends ${q.replace(/^…/, "")}` : `payload contains “${q}”`, { q: "" }) : null,
    );
    subbar.hidden = viewTabs.hidden && !chips.childNodes.length;
    const topics = Object.keys(stats ? stats.by_topic : {});
    if (topic && !topics.includes(topic)) topics.push(topic);
    topics.sort();
    mount(topicSelect, h("option", { value: "" }, "all topics"), topics.map((t) => h("option", { value: t, selected: t === topic }, t)));
    mount(bulk, topic && stats ? bulkRetryButton(topic, (stats.by_topic[topic] || {}).failed || 0, { onDone: refresh }) : null);
  }

  let total = 0;
  let pendingNew = 0;
  let aborted = false;
  async function refreshSearch() {
    const query = { topic, view, schedule, limit, after };
    if (status && !view) query.status = status;
    if (exact) query.exact_total = "true";
    if (q) query[ID_LIKE.test(q) ? "id" : "text"] = q;
    try {
      const found = await api.search(query);
      if (aborted) return;
      newBanner.hidden = true;
      mount(tableBox, jobsTable(found.items, { empty: found.next ? "No match among the jobs read so far: search older ones." : "No job matches." }));
      flagOrphans(tableBox, handled);
      mount(
        pager,
        h("span", { class: "muted", "data-testid": "page-info", title: "a search reads jobs newest first, up to 10,000 per page" }, `${num(found.items.length)} found of ${countText(found.total, found.total_exact)} matching · ${num(found.scanned)} jobs read`),
        found.total_exact
          ? null
          : h("a", { class: "btn small", href: hashOf({ ...current, offset: 0, after, exact: 1 }), "data-testid": "count-exactly", title: "reads every job of this status and topic: slow on a large store" }, "Count exactly"),
        h("span", { class: "spacer" }),
        after ? h("a", { class: "btn small", href: hashOf({ ...current, offset: 0 }), "data-testid": "page-first" }, "← Newest") : null,
        found.next
          ? h("a", { class: "btn small", href: hashOf({ ...current, offset: 0, after: found.next }), rel: "next", "data-testid": "page-next" }, "Older →")
          : h("span", { class: "btn small", "aria-disabled": "true", "data-testid": "page-next" }, "Older →"),
      );
    } catch (err) {
      if (!aborted) mount(tableBox, errorBox(err));
    }
  }

  async function refresh() {
    if (searching) return refreshSearch();
    try {
      const page = await api.jobs({ status, topic, limit, ...(after || before ? { after, before } : { offset }) });
      if (aborted) return;
      total = countText(page.total, page.total_exact);
      pendingNew = 0;
      newBanner.hidden = true;
      mount(tableBox, jobsTable(page.items, { empty: status || topic ? "No job matches these filters." : "No jobs yet." }));
      flagOrphans(tableBox, handled);
      const from = page.items.length ? offset + 1 : 0;
      const to = offset + page.items.length;
      // A keyset page deep in the list does not know its position, only its neighbours.
      const info = page.prev && !offset ? `${num(page.items.length)} of ${total}` : `${num(from)}–${num(to)} of ${total}`;
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
  let handled = null; // topics live workers handle
  async function refreshStats() {
    try {
      api
        .jobTypes()
        .then((topics) => {
          handled = new Set(topics);
          if (!aborted) flagOrphans(tableBox, handled);
        })
        .catch(() => {});
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
