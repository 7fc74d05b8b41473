// Throughput, failure rate and pickup latency over the last hour, per minute.
//
// Source, best first: the server's own per-minute record (/api/dashboard/throughput,
// fed by the event hub since the server started), else a seed from the newest finished
// jobs (their finished_at) — then every live event seen by this page on top.

import { api } from "./api.js";
import { live } from "./live.js";
import { parseTime } from "./ui.js";

export const MINUTE = 60000;
export const WINDOW = 60; // minutes

class Series {
  constructor() {
    this.buckets = new Map(); // minute start (ms) → {completed, failed, retried, latencies: []}
    this.source = "live events";
    this.seededAt = 0;
    this.dueAt = new Map(); // job id → due time (ms) from job.scheduled events, for pickup latency
    live.on("event", (e) => this.observe(e));
  }

  bucket(ms) {
    const key = Math.floor(ms / MINUTE) * MINUTE;
    let b = this.buckets.get(key);
    if (!b) {
      b = { completed: 0, failed: 0, retried: 0, latencies: [] };
      this.buckets.set(key, b);
    }
    return b;
  }

  observe(e) {
    const t = parseTime(e.timestamp) ?? Date.now();
    if (t < this.seededAt) return; // already counted by the seed
    const data = e.data || {};
    const meta = e.metadata || {};
    if (e.type === "job.completed") this.bucket(t).completed += 1;
    else if (e.type === "job.failed") this.bucket(t).failed += 1;
    else if (e.type === "job.retrying") {
      this.bucket(t).retried += 1;
      this.track(e.job_id, parseTime(meta.next_retry_at));
    } else if (e.type === "job.scheduled") {
      this.track(e.job_id, Math.max(parseTime(data.run_at) ?? t, t));
    } else if (e.type === "job.started") {
      const due = this.dueAt.get(e.job_id) ?? parseTime(data.run_at);
      this.dueAt.delete(e.job_id);
      if (due !== null && due !== undefined) this.bucket(t).latencies.push(Math.max(0, t - due));
    }
    this.prune();
  }

  track(id, due) {
    if (due === null || due === undefined) return;
    this.dueAt.set(id, due);
    if (this.dueAt.size > 20000) this.dueAt.delete(this.dueAt.keys().next().value);
  }

  prune() {
    const oldest = Math.floor(Date.now() / MINUTE) * MINUTE - WINDOW * MINUTE;
    for (const key of this.buckets.keys()) if (key < oldest) this.buckets.delete(key);
  }

  /**
   * Load the history. The server's record (when the endpoint exists) is the truth: it
   * replaces the buckets, and the events this page saw after the record's "now" are
   * counted again on top. Call again to resynchronise.
   */
  async seed() {
    let data = null;
    try {
      data = await api.throughput();
    } catch (err) {
      if (err.status && err.status !== 404) throw err;
    }
    if (data) {
      this.buckets = new Map();
      for (const row of data.buckets || []) {
        const b = this.bucket(parseTime(row.t));
        b.completed = row.completed || 0;
        b.failed = row.failed || 0;
        b.retried = row.retried || 0;
        if (row.latency_ms_p50 !== null && row.latency_ms_p50 !== undefined) b.latencies.push(row.latency_ms_p50);
      }
      this.seededAt = parseTime(data.now) ?? Date.now();
      const since = parseTime(data.since);
      // Finished jobs per minute come from the store (they survive a server restart);
      // retries and pickup latency from the server's record since it started.
      const recent = since && since > Date.now() - WINDOW * MINUTE;
      if (data.source === "store") this.source = recent ? `from the store; retries and pickup since ${new Date(since).toLocaleTimeString()}` : "from the store";
      else this.source = recent ? `server record since ${new Date(since).toLocaleTimeString()}` : "server record";
      for (const e of live.events) this.observe(e);
      return;
    }
    if (this.seededAt) return; // the fallback seeds once; live events carry on from there
    // No server record: the newest finished jobs tell the recent past (at most 100 each).
    const now = Date.now();
    const since = now - WINDOW * MINUTE;
    const [done, failed] = await Promise.all([
      api.jobs({ status: "completed", limit: 100 }),
      api.jobs({ status: "failed", limit: 100 }),
    ]);
    for (const [page, key] of [
      [done, "completed"],
      [failed, "failed"],
    ]) {
      for (const job of page.items) {
        const t = parseTime(job.finished_at);
        if (t !== null && t >= since && t < now) this.bucket(t)[key] += 1;
      }
    }
    this.source = "recent jobs + live events";
    this.seededAt = now;
  }

  /** The last WINDOW minutes, oldest first: [{t, completed, failed, retried, latency}] */
  points() {
    const end = Math.floor(Date.now() / MINUTE) * MINUTE;
    const out = [];
    for (let i = WINDOW - 1; i >= 0; i -= 1) {
      const t = end - i * MINUTE;
      const b = this.buckets.get(t);
      out.push({
        t,
        completed: b ? b.completed : 0,
        failed: b ? b.failed : 0,
        retried: b ? b.retried : 0,
        latency: b && b.latencies.length ? median(b.latencies) : null,
      });
    }
    return out;
  }

  totals() {
    const pts = this.points();
    const completed = pts.reduce((s, p) => s + p.completed, 0);
    const failed = pts.reduce((s, p) => s + p.failed, 0);
    const lastFive = pts.slice(-5);
    const recent = lastFive.reduce((s, p) => s + p.completed + p.failed, 0);
    const lat = [];
    for (const b of this.buckets.values()) lat.push(...b.latencies);
    return {
      completed,
      failed,
      failureRate: completed + failed ? failed / (completed + failed) : null,
      perMinute: recent / 5,
      pickupP50: lat.length ? median(lat) : null,
    };
  }
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export const series = new Series();
