// DOM helpers, formatting, the confirmation dialog and toasts. No data ever goes
// through innerHTML: every text is set with textContent.

export const STATUSES = ["pending", "processing", "completed", "failed", "cancelled"];

/** h("a", {href: "#/", class: "x", onclick: fn}, "text", child, [more]) → element */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value") el.value = value;
    // Through the CSSOM: the Content-Security-Policy refuses style attributes.
    else if (key === "style") el.style.cssText = String(value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace every child of el. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function statusPill(status) {
  return h("span", { class: `pill s-${status}`, "data-status": status }, status);
}

export function shortId(id) {
  // UUIDv7: the head is a timestamp shared by every job of the same minute; the tail is
  // random, so it is the part that tells jobs apart (the full id is the link's title).
  return id && id.length > 14 ? `…${id.slice(-10)}` : id;
}

export function jobLink(id, { full = false } = {}) {
  return h("a", { href: `#/jobs/${encodeURIComponent(id)}`, class: "mono", title: id }, full ? id : shortId(id));
}

export function parseTime(value) {
  if (!value) return null;
  const t = Date.parse(value);
  return Number.isNaN(t) ? null : t;
}

/** "12s", "4m 10s", "3h 2m", "2d 4h" */
export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  const neg = ms < 0;
  let s = Math.abs(ms) / 1000;
  let out;
  if (s < 1) out = `${Math.round(s * 1000)}ms`;
  else if (s < 60) out = `${s < 10 ? s.toFixed(1) : Math.round(s)}s`;
  else if (s < 3600) out = `${Math.floor(s / 60)}m ${Math.round(s % 60)}s`;
  else if (s < 86400) out = `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  else out = `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  return neg ? `-${out}` : out;
}

/** A relative time ("5s ago", "in 3m") with the absolute UTC time as tooltip. */
export function when(value) {
  const t = parseTime(value);
  if (t === null) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: value, title: absolute(value), "data-rel": "1" }, relative(t));
}

export function relative(t) {
  const diff = t - Date.now();
  if (Math.abs(diff) < 1000) return "now";
  return diff < 0 ? `${duration(-diff)} ago` : `in ${duration(diff)}`;
}

export function absolute(value) {
  const t = parseTime(value);
  if (t === null) return "—";
  const d = new Date(t);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** Refresh every relative time on the page (called once a second). */
export function tickRelativeTimes(root = document) {
  for (const el of root.querySelectorAll("time[data-rel]")) {
    const t = parseTime(el.getAttribute("datetime"));
    if (t !== null) el.textContent = relative(t);
  }
}

export function num(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US");
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}

export function codeBlock(value, { empty = "null" } = {}) {
  const text = value === null || value === undefined ? empty : typeof value === "string" ? value : json(value);
  return h("pre", { class: "code" }, text);
}

// -- confirmation dialog ------------------------------------------------------------------

/**
 * Ask before doing something. Resolves true when the operator confirms.
 * @param {{title: string, body?: string, confirm?: string, dismiss?: string, danger?: boolean}} options
 */
export function confirmAction({ title, body = "", confirm = "Confirm", dismiss = "Back", danger = false }) {
  const dialog = document.getElementById("confirm-dialog");
  dialog.querySelector("[data-role=title]").textContent = title;
  // Never "Cancel" beside a "Cancel job" confirmation: say what dismissing does.
  dialog.querySelector("[data-role=cancel]").textContent = dismiss;
  dialog.querySelector("[data-role=body]").textContent = body;
  const ok = dialog.querySelector("[data-role=ok]");
  ok.textContent = confirm;
  ok.className = danger ? "btn danger" : "btn primary";
  return new Promise((resolve) => {
    const done = () => {
      dialog.removeEventListener("close", done);
      resolve(dialog.returnValue === "ok");
    };
    dialog.returnValue = "";
    dialog.addEventListener("close", done);
    dialog.showModal();
    ok.focus();
  });
}

// -- toasts -----------------------------------------------------------------------------

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const el = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status", "data-at": String(Date.now()) }, message);
  box.append(el);
  setTimeout(() => el.classList.add("out"), kind === "error" ? 6000 : 3500);
  setTimeout(() => el.remove(), kind === "error" ? 6500 : 4000);
}

/**
 * On navigation: drop the toasts of the page left behind. One shown in the last second
 * stays: it reports the action that led here (e.g. "Job deleted" before the jobs list).
 */
export function clearStaleToasts() {
  const now = Date.now();
  for (const el of document.querySelectorAll("#toasts .toast")) {
    if (now - Number(el.dataset.at || 0) > 1000) el.remove();
  }
}

/** A button that runs an async action with a busy state and reports errors as toasts. */
export function actionButton(label, { cls = "btn", testid, title, run }) {
  const button = h("button", { class: cls, type: "button", "data-testid": testid, "data-action": "1", title }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await run();
    } catch (err) {
      toast(err.message || String(err), "error");
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** Run fn at most once per ms, trailing call guaranteed. */
export function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  return (...args) => {
    const wait = last + ms - Date.now();
    if (wait <= 0) {
      last = Date.now();
      fn(...args);
    } else if (timer === null) {
      timer = setTimeout(() => {
        timer = null;
        last = Date.now();
        fn(...args);
      }, wait);
    }
  };
}
