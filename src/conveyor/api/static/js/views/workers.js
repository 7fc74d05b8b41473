// Workers: every live worker (heartbeat within the window), its topics and active jobs.

import { api } from "../api.js";
import { live } from "../live.js";
import { h, jobLink, mount, throttle, when } from "../ui.js";
import { activeJobs, errorBox } from "./common.js";
import { meter } from "./overview.js";

export function render(root) {
  const box = h("div", { class: "table-wrap" });
  mount(root, h("div", { class: "toolbar" }, h("h1", {}, "Workers")), h("section", { class: "panel" }, box));
  let aborted = false;

  async function load() {
    try {
      const list = await api.workers();
      if (!aborted) draw(list);
    } catch (err) {
      if (!aborted) mount(box, errorBox(err));
    }
  }

  function draw(list) {
    if (!list.length) {
      mount(box, h("p", { class: "muted pad" }, "No live worker. Start one with `conveyor worker --app module:app` or `conveyor serve`."));
      return;
    }
    mount(
      box,
      h(
        "table",
        { class: "table", "data-testid": "workers-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Worker"), h("th", {}, "Host"), h("th", { class: "num" }, "PID"), h("th", {}, "Busy"), h("th", {}, "Topics"), h("th", { class: "grow" }, "Active jobs"), h("th", {}, "Started"), h("th", {}, "Heartbeat"))),
        h(
          "tbody",
          {},
          list.map((w) => {
            const active = activeJobs(w);
            return h(
              "tr",
              { "data-worker": w.id },
              h("td", { class: "mono", title: w.id }, w.id.length > 24 ? `${w.id.slice(0, 24)}…` : w.id),
              h("td", {}, w.host),
              h("td", { class: "num" }, String(w.pid)),
              h("td", { class: "nowrap" }, meter(active.length, w.concurrency), ` ${active.length}/${w.concurrency}`),
              h("td", {}, w.topics.length ? w.topics.map((t) => h("a", { class: "tag", href: `#/jobs?topic=${encodeURIComponent(t)}` }, t)) : h("span", { class: "muted" }, "—")),
              h("td", { class: "w-jobs" }, active.length ? active.map((id) => jobLink(id)) : h("span", { class: "muted" }, "idle")),
              h("td", {}, when(w.started_at)),
              h("td", {}, when(w.last_heartbeat)),
            );
          }),
        ),
      ),
    );
  }

  const reload = throttle(load, 1500);
  const off = live.on("event", (e) => {
    if (e.type === "job.started" || e.type === "job.completed" || e.type === "job.failed" || e.type === "job.cancelled") reload();
  });
  load();
  const timer = setInterval(load, 5000);
  return () => {
    aborted = true;
    off();
    clearInterval(timer);
  };
}
