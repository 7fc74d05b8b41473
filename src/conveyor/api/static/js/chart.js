// A small hand-rolled SVG chart: stacked per-minute bars (completed, failed attempts)
// with the failure rate as a line on a 0–100 % right axis. No library.

const NS = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** The axis top: four equal whole steps covering v (step 1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 × 10^k). */
function niceMax(v) {
  const raw = Math.max(1, v / 4);
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) {
    const step = m * p;
    if (step >= raw && Number.isInteger(step)) return step * 4;
  }
  return 40 * p;
}

function hhmm(t) {
  const d = new Date(t);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

/** @param {{t:number, completed:number, failed:number}[]} points oldest first */
export function throughputChart(points, { width = 720, height = 180 } = {}) {
  const pad = { l: 36, r: 36, t: 10, b: 20 };
  const w = width - pad.l - pad.r;
  const hgt = height - pad.t - pad.b;
  const max = niceMax(Math.max(0, ...points.map((p) => p.completed + p.failed)));
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart",
    role: "img",
    "aria-label": "jobs finished per minute over the last hour",
    preserveAspectRatio: "none",
  });
  // grid and left axis (jobs / minute)
  for (let i = 0; i <= 4; i += 1) {
    const y = pad.t + hgt - (hgt * i) / 4;
    svg.append(s("line", { x1: pad.l, x2: pad.l + w, y1: y, y2: y, class: "grid" }));
    svg.append(s("text", { x: pad.l - 6, y: y + 3, class: "axis", "text-anchor": "end" }, String(Math.round((max * i) / 4))));
    svg.append(s("text", { x: pad.l + w + 6, y: y + 3, class: "axis rate" }, `${25 * i}%`));
  }
  const slot = w / points.length;
  const bw = Math.max(1, slot - 2);
  const line = [];
  points.forEach((p, i) => {
    const x = pad.l + i * slot + 1;
    const hc = (hgt * p.completed) / max;
    const hf = (hgt * p.failed) / max;
    const g = s("g", { class: "bar" });
    g.append(s("title", {}, `${hhmm(p.t)} — ${p.completed} completed, ${p.failed} failed`));
    g.append(s("rect", { x: pad.l + i * slot, y: pad.t, width: slot, height: hgt, class: "hit" }));
    if (hc > 0) g.append(s("rect", { x, y: pad.t + hgt - hc, width: bw, height: hc, class: "ok" }));
    if (hf > 0) g.append(s("rect", { x, y: pad.t + hgt - hc - hf, width: bw, height: hf, class: "bad" }));
    svg.append(g);
    const n = p.completed + p.failed;
    if (n > 0) line.push([x + bw / 2, pad.t + hgt - (hgt * p.failed) / n, i]);
    if (i % 10 === 0 || i === points.length - 1) {
      svg.append(s("text", { x: x + bw / 2, y: height - 5, class: "axis", "text-anchor": "middle" }, hhmm(p.t)));
    }
  });
  // The rate is drawn only across consecutive minutes that had jobs: a quiet minute has no rate.
  let run = [];
  const flush = () => {
    if (run.length > 1) svg.append(s("polyline", { points: run.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "), class: "rate-line" }));
    run = [];
  };
  for (const point of line) {
    if (run.length && point[2] !== run[run.length - 1][2] + 1) flush();
    run.push(point);
  }
  flush();
  for (const [x, y] of line) svg.append(s("circle", { cx: x, cy: y, r: 1.8, class: "rate-dot" }));
  return svg;
}
