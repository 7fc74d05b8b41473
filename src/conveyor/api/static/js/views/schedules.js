// Schedules: every recurring schedule with its next run, enabled or not; enable/disable.

import { api, auth } from "../api.js";
import { absolute, actionButton, confirmAction, h, mount, toast, when } from "../ui.js";
import { errorBox } from "./common.js";

export function render(root) {
  const box = h("div", { class: "table-wrap" });
  mount(root, h("div", { class: "toolbar" }, h("h1", {}, "Schedules")), h("section", { class: "panel" }, box));
  let aborted = false;

  async function load() {
    try {
      const list = await api.schedules();
      if (!aborted) draw(list);
    } catch (err) {
      if (!aborted) mount(box, errorBox(err));
    }
  }

  function toggle(s) {
    return actionButton(s.enabled ? "Disable" : "Enable", {
      cls: s.enabled ? "btn small warn" : "btn small primary",
      testid: s.enabled ? "action-disable" : "action-enable",
      run: async () => {
        const ok = await confirmAction({
          title: `${s.enabled ? "Disable" : "Enable"} schedule ${s.name}?`,
          body: s.enabled ? "It stops enqueuing jobs until enabled again; jobs already enqueued still run." : `It enqueues ${s.topic} again on “${s.cron}”.`,
          confirm: s.enabled ? "Disable" : "Enable",
          danger: s.enabled,
        });
        if (!ok) return;
        await api.setSchedule(s.name, !s.enabled);
        toast(`Schedule ${s.name} ${s.enabled ? "disabled" : "enabled"}`);
        load();
      },
    });
  }

  function draw(list) {
    if (!list.length) {
      mount(box, h("p", { class: "muted pad" }, "No schedules. Add one with app.schedule(...), `conveyor schedules add` or POST /api/schedules."));
      return;
    }
    mount(
      box,
      h(
        "table",
        { class: "table", "data-testid": "schedules-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Cron"), h("th", {}, "Topic"), h("th", {}, "State"), h("th", {}, "Next run"), h("th", {}, "Last fired"), h("th", { class: "grow" }, "Payload"), h("th", {}))),
        h(
          "tbody",
          {},
          list.map((s) =>
            h(
              "tr",
              { "data-schedule": s.name, class: s.enabled ? "" : "disabled" },
              h("td", { class: "mono" }, s.name),
              h("td", { class: "mono" }, s.cron, s.timezone && s.timezone !== "UTC" ? h("span", { class: "muted" }, ` ${s.timezone}`) : null),
              h("td", { class: "topic" }, h("a", { href: `#/jobs?topic=${encodeURIComponent(s.topic)}` }, s.topic)),
              h("td", {}, h("span", { class: `pill ${s.enabled ? "s-completed" : "s-cancelled"}` }, s.enabled ? "enabled" : "disabled")),
              h("td", { title: absolute(s.next_run_at) }, s.enabled ? when(s.next_run_at) : h("span", { class: "muted" }, "—")),
              h("td", {}, when(s.last_fired_at)),
              h("td", { class: "err" }, s.payload === null || s.payload === undefined ? "" : JSON.stringify(s.payload)),
              h("td", { class: "actions" }, auth.canWrite ? toggle(s) : null),
            ),
          ),
        ),
      ),
    );
  }

  load();
  const timer = setInterval(load, 10000);
  return () => {
    aborted = true;
    clearInterval(timer);
  };
}
