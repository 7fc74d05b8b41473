// The HTTP API (docs/api.md), with the bearer token kept in sessionStorage (never in the URL).

const TOKEN_KEY = "conveyor.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const auth = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
  // "admin" | "read" | "enqueue" | null (not known yet); set by the WebSocket handshake.
  role: null,
  // false once a request without token has succeeded: the server has no tokens configured.
  required: null,
  get canWrite() {
    return this.role === "admin";
  },
};

const listeners = { unauthorized: [] };

/** Called on any 401: the token is gone or wrong. */
export function onUnauthorized(fn) {
  listeners.unauthorized.push(fn);
}

export async function request(method, path, { body, query, signal } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== null && v !== undefined && v !== "") params.set(k, v);
    const qs = params.toString();
    if (qs) url += `?${qs}`;
  }
  const headers = { Accept: "application/json" };
  if (auth.token) headers.Authorization = `Bearer ${auth.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "the server is unreachable");
  }
  if (response.status === 204) return null;
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    const err = (data && data.error) || {};
    const message = err.message || (typeof data === "string" && data) || response.statusText || "request failed";
    if (response.status === 401) for (const fn of listeners.unauthorized) fn(message);
    throw new ApiError(response.status, err.code || String(response.status), message);
  }
  return data;
}

export const api = {
  stats: () => request("GET", "/api/jobs/stats"),
  jobs: (query) => request("GET", "/api/jobs", { query }),
  search: (query) => request("GET", "/api/jobs/search", { query }),
  job: (id) => request("GET", `/api/jobs/${encodeURIComponent(id)}`),
  requeue: (id) => request("POST", `/api/jobs/${encodeURIComponent(id)}/requeue`),
  cancel: (id) => request("POST", `/api/jobs/${encodeURIComponent(id)}/cancel`),
  remove: (id) => request("DELETE", `/api/jobs/${encodeURIComponent(id)}`),
  runNow: (id) => request("PATCH", `/api/jobs/${encodeURIComponent(id)}`, { body: { run_at: new Date().toISOString() } }),
  bulk: (action, filter) => request("POST", `/api/jobs/bulk/${action}`, { body: filter }),
  workers: () => request("GET", "/api/workers"),
  jobTypes: () => request("GET", "/api/job-types"),
  schedules: () => request("GET", "/api/schedules"),
  runSchedule: (name) => request("POST", `/api/schedules/${encodeURIComponent(name)}/run`),
  saveSchedule: (name, body) => request("PUT", `/api/schedules/${encodeURIComponent(name)}`, { body }),
  deleteSchedule: (name) => request("DELETE", `/api/schedules/${encodeURIComponent(name)}`),
  setSchedule: (name, enabled) =>
    request("POST", `/api/schedules/${encodeURIComponent(name)}/${enabled ? "enable" : "disable"}`),
  health: () => request("GET", "/api/health"),
  throughput: () => request("GET", "/api/dashboard/throughput"),
};

/**
 * The role of the current token over HTTP, for when the WebSocket cannot tell: an
 * update of a job id that cannot exist is refused with 403 to anyone but an admin, and
 * answered 404 (or 422) for an admin. Nothing is changed either way.
 */
export async function probeRole() {
  try {
    await request("PATCH", "/api/jobs/~role-probe~", { body: {} });
    return "admin";
  } catch (err) {
    if (err.status === 403) return "read";
    if (err.status === 404 || err.status === 422 || err.status === 409) return "admin";
    return null;
  }
}

/**
 * Requeue every failed job of a topic, server-side in batches (one request): the
 * number of jobs requeued.
 */
export async function retryFailedInTopic(topic) {
  const { count } = await api.bulk("requeue", { status: "failed", topic });
  return count;
}
