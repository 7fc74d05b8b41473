// conveyor dashboard: shell, login, hash routing. Plain ES modules, no build step.
//
// Routes: #/ overview · #/jobs?status=&topic=&offset= · #/jobs/<id> · #/schedules · #/workers
// Auth: the token lives in sessionStorage; the role comes from the WebSocket handshake
// ({"type":"authenticated","role":...}); until it is known no action button is shown.

import { ApiError, api, auth, onUnauthorized, probeRole } from "./js/api.js";
import { live } from "./js/live.js";
import { clearStaleToasts, h, mount, tickRelativeTimes } from "./js/ui.js";
import * as overview from "./js/views/overview.js";
import * as jobs from "./js/views/jobs.js";
import * as job from "./js/views/job.js";
import * as schedules from "./js/views/schedules.js";
import * as workers from "./js/views/workers.js";

const view = document.getElementById("view");
let cleanup = null;
let started = false;

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, qs] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(qs || "") };
}

function route() {
  if (!started) return;
  const { parts, query } = parseHash();
  let page = overview;
  let section = "overview";
  let params = {};
  if (parts[0] === "jobs" && parts[1]) {
    page = job;
    section = "jobs";
    params = { id: parts[1] };
  } else if (parts[0] === "jobs") {
    page = jobs;
    section = "jobs";
    params = Object.fromEntries(query);
  } else if (parts[0] === "schedules") {
    page = schedules;
    section = "schedules";
  } else if (parts[0] === "workers") {
    page = workers;
    section = "workers";
  }
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === section);
  }
  if (cleanup) cleanup();
  cleanup = null;
  clearStaleToasts();
  const container = h("div", { class: `page page-${section}` });
  mount(view, container);
  cleanup = page.render(container, params) || null;
}

function showLogin(message) {
  started = false;
  live.stop();
  if (cleanup) cleanup();
  cleanup = null;
  mount(view);
  document.getElementById("login").hidden = false;
  document.body.classList.add("logged-out");
  const error = document.getElementById("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  document.getElementById("token").focus();
  updateSession();
}

function updateSession() {
  const roleEl = document.getElementById("role");
  const logout = document.getElementById("logout");
  document.body.classList.toggle("can-write", auth.canWrite);
  document.body.dataset.role = auth.role || "unknown";
  roleEl.hidden = !auth.role;
  roleEl.textContent = auth.required === false ? "open · no auth" : auth.role === "admin" ? "admin" : "read-only";
  roleEl.dataset.role = auth.role || "";
  logout.hidden = !auth.token;
}

async function boot() {
  document.getElementById("login").hidden = true;
  document.body.classList.remove("logged-out");
  let answered = false;
  try {
    await api.stats();
    answered = true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      const hadToken = Boolean(auth.token);
      auth.token = null;
      showLogin(hadToken ? "That token is not valid on this server." : "");
      return;
    }
    if (err instanceof ApiError && err.status === 403) {
      auth.token = null;
      showLogin("That token cannot read jobs (an enqueue token?). Use an admin or read token.");
      return;
    }
    // Store down or network trouble: show the page anyway; views report their errors.
  }
  // A server that answered without a token has none configured: everyone is admin.
  auth.required = auth.token ? true : answered ? false : null;
  auth.role = auth.required === false ? "admin" : null;
  started = true;
  updateSession();
  live.start();
  route();
  if (auth.role === null) {
    // The WebSocket handshake names the role; if it cannot (a proxy without WebSocket
    // support, say), ask over HTTP after a while.
    setTimeout(async () => {
      if (!started || auth.role) return;
      const role = await probeRole();
      if (role && !auth.role) {
        auth.role = role;
        updateSession();
        route();
      }
    }, 4000);
  }
}

document.getElementById("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = document.getElementById("token");
  auth.token = input.value.trim();
  input.value = "";
  boot();
});

document.getElementById("logout").addEventListener("click", () => {
  auth.token = null;
  auth.role = null;
  showLogin("");
});

onUnauthorized(() => {
  if (started) {
    auth.token = null;
    showLogin("Your session has ended: the token was refused.");
  }
});

live.on("role", () => {
  updateSession();
  route(); // re-render with (or without) the action buttons
});

live.on("state", ({ state, detail }) => {
  const conn = document.getElementById("conn");
  conn.dataset.state = state;
  conn.querySelector("span").textContent = { live: "live", connecting: "connecting…", offline: "reconnecting…", denied: "denied" }[state] || state;
  conn.title = detail ? `live updates: ${detail}` : "live updates";
  if (state === "denied" && started) {
    auth.token = null;
    showLogin(detail && detail.includes("role") ? `Refused: ${detail}.` : "That token is not valid on this server.");
  }
});

// The tab title shows what needs attention, for an operator with many tabs open.
live.on("stats", (stats) => {
  const failed = stats && stats.failed ? `${stats.failed} failed · ` : "";
  document.title = `${failed}conveyor`;
});

window.addEventListener("hashchange", route);
setInterval(() => tickRelativeTimes(view), 1000);
boot();
