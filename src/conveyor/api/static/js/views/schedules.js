// Schedules: every recurring schedule with its next run, enabled or not. Admins can
// run one now, enable/disable, edit (cron, time zone, topic, payload) or delete it;
// everyone can open the jobs it made (#/jobs?schedule=NAME).

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
      cls: s.enabled ? "btn small warn" : "btn small",
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

  function runNow(s) {
    return actionButton("Run now", {
      cls: "btn small primary",
      testid: "action-run-schedule",
      title: "enqueue one job of this schedule now; its next run is unchanged",
      run: async () => {
        const ok = await confirmAction({
          title: `Run schedule ${s.name} now?`,
          body: `One ${s.topic} job with this schedule's payload is enqueued, due now. The schedule still fires next ${s.next_run_at ? absolute(s.next_run_at) : "as planned"}.`,
          confirm: "Run now",
        });
        if (!ok) return;
        const job = await api.runSchedule(s.name);
        toast(`Job ${job.id.slice(-10)} of ${s.name} enqueued`);
        load();
      },
    });
  }

  function remove(s) {
    return actionButton("Delete", {
      cls: "btn small danger",
      testid: "action-delete-schedule",
      run: async () => {
        const ok = await confirmAction({
          title: `Delete schedule ${s.name}?`,
          body: "It enqueues nothing more. Jobs it already made stay (see its jobs). A schedule declared in code comes back when its app's worker starts.",
          confirm: "Delete",
          danger: true,
        });
        if (!ok) return;
        await api.deleteSchedule(s.name);
        toast(`Schedule ${s.name} deleted`);
        load();
      },
    });
  }

  function edit(s) {
    return actionButton("Edit", {
      cls: "btn small",
      testid: "action-edit-schedule",
      run: async () => {
        if (await editSchedule(s)) load();
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
              h("td", { class: "payload mono" }, s.payload === null || s.payload === undefined ? "" : JSON.stringify(s.payload)),
              h(
                "td",
                { class: "actions" },
                h(
                  "div",
                  { class: "row-actions" },
                  h("a", { class: "btn small", href: `#/jobs?schedule=${encodeURIComponent(s.name)}`, "data-testid": "schedule-jobs" }, "Jobs"),
                  auth.canWrite ? [runNow(s), toggle(s), edit(s), remove(s)] : null,
                ),
              ),
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

/** The edit form in a modal dialog; resolves true once the schedule was saved. */
function editSchedule(s) {
  const field = (label, input, hint) => h("label", { class: "form-row" }, h("span", {}, label), input, hint ? h("small", { class: "muted" }, hint) : null);
  const cron = h("input", { type: "text", name: "cron", value: s.cron, required: true, spellcheck: "false", "data-testid": "edit-cron" });
  const timezone = h("input", { type: "text", name: "timezone", value: s.timezone || "UTC", spellcheck: "false" });
  const topic = h("input", { type: "text", name: "topic", value: s.topic, required: true, spellcheck: "false" });
  const payload = h("textarea", { name: "payload", rows: "6", spellcheck: "false", class: "mono", "data-testid": "edit-payload" });
  payload.value = s.payload === null || s.payload === undefined ? "" : JSON.stringify(s.payload, null, 2);
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const save = h("button", { class: "btn primary", type: "submit", "data-testid": "edit-save" }, "Save");
  const back = h("button", { class: "btn", type: "button" }, "Back");
  const form = h(
    "form",
    { class: "edit-form" },
    h("h2", {}, `Edit schedule ${s.name}`),
    field("Cron", cron, "5 or 6 fields, @daily, @every 5m"),
    field("Time zone", timezone, "IANA name, e.g. Europe/Paris"),
    field("Topic", topic),
    field("Payload (JSON)", payload, "empty for null"),
    error,
    h("div", { class: "dialog-actions" }, back, save),
  );
  const dialog = h("dialog", { class: "dialog wide", "data-testid": "edit-schedule" }, form);
  document.body.append(dialog);
  return new Promise((resolve) => {
    let saved = false;
    const close = () => dialog.close();
    back.addEventListener("click", close);
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(saved);
    });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      let body;
      try {
        body = { cron: cron.value.trim(), timezone: timezone.value.trim() || "UTC", topic: topic.value.trim(), enabled: s.enabled, payload: payload.value.trim() ? JSON.parse(payload.value) : null };
      } catch (err) {
        error.textContent = `payload: not valid JSON (${err.message})`;
        error.hidden = false;
        return;
      }
      save.disabled = true;
      try {
        await api.saveSchedule(s.name, body);
        saved = true;
        toast(`Schedule ${s.name} saved`);
        close();
      } catch (err) {
        error.textContent = err.message || String(err);
        error.hidden = false;
      } finally {
        save.disabled = false;
      }
    });
    dialog.showModal();
    cron.focus();
  });
}
