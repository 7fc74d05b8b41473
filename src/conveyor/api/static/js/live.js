// The live channel: one WebSocket to /api/ws, authenticated by its first message
// ({"action":"auth","token":...}: a token never goes into a URL), subscribed to every
// event, reconnected with backoff. Views listen with live.on("event", fn).

import { auth } from "./api.js";

const MAX_EVENTS = 2000; // per-page-session memory of events, for job timelines and the feed
const PING_EVERY = 25000;

class Live {
  constructor() {
    this.ws = null;
    this.state = "offline"; // offline | connecting | live | denied
    this.handlers = new Map();
    this.events = []; // newest last
    this.byJob = new Map(); // job id → events seen for it
    this.delay = 500;
    this.timer = null;
    this.pinger = null;
    this.stopped = true;
  }

  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
    return () => this.handlers.get(type).delete(fn);
  }

  emit(type, payload) {
    for (const fn of this.handlers.get(type) || []) {
      try {
        fn(payload);
      } catch (err) {
        console.error(err);
      }
    }
  }

  setState(state, detail) {
    this.state = state;
    this.emit("state", { state, detail });
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000);
      this.ws = null;
    }
    this.setState("offline");
  }

  connect() {
    clearTimeout(this.timer);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/api/ws`);
    this.ws = ws;
    this.setState("connecting");
    ws.onopen = () => {
      // Always authenticate first: with no tokens configured the server answers
      // "authenticated" without a role, which means everyone is admin.
      ws.send(JSON.stringify({ action: "auth", token: auth.token || "" }));
    };
    ws.onmessage = (msg) => {
      let data;
      try {
        data = JSON.parse(msg.data);
      } catch {
        return;
      }
      this.handle(ws, data);
    };
    ws.onclose = (ev) => {
      clearInterval(this.pinger);
      if (this.ws !== ws) return;
      this.ws = null;
      if (ev.code === 1008) {
        this.setState("denied", ev.reason);
        return; // a bad token: the login box takes over
      }
      this.setState("offline", ev.reason);
      if (!this.stopped) {
        this.timer = setTimeout(() => this.connect(), this.delay);
        this.delay = Math.min(this.delay * 2, 10000);
      }
    };
  }

  handle(ws, data) {
    switch (data.type) {
      case "authenticated":
        if (auth.role !== (data.role || "admin")) {
          auth.role = data.role || "admin";
          this.emit("role", auth.role);
        }
        ws.send(JSON.stringify({ action: "subscribe", filter: {} }));
        return;
      case "subscribed":
        this.delay = 500;
        this.setState("live");
        clearInterval(this.pinger);
        this.pinger = setInterval(() => this.send({ action: "ping" }), PING_EVERY);
        this.send({ action: "get_stats" });
        return;
      case "stats":
        this.emit("stats", data.data);
        return;
      case "pong":
      case "unsubscribed":
        return;
      case "error":
        this.emit("error", data.error);
        return;
      default:
        if (data.job_id) this.record(data);
    }
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  requestStats() {
    this.send({ action: "get_stats" });
  }

  record(event) {
    this.events.push(event);
    // Trim in batches (a quarter at a time) so a busy queue does not shift the array per event.
    if (this.events.length > MAX_EVENTS * 1.25) {
      const dropped = this.events.splice(0, this.events.length - MAX_EVENTS);
      for (const old of dropped) {
        const list = this.byJob.get(old.job_id);
        if (list && list[0] === old) list.shift();
        if (list && !list.length) this.byJob.delete(old.job_id);
      }
    }
    if (!this.byJob.has(event.job_id)) this.byJob.set(event.job_id, []);
    this.byJob.get(event.job_id).push(event);
    this.emit("event", event);
  }
}

export const live = new Live();
