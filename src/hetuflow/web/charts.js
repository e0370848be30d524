// Small SVG charts drawn from numbers: stacked bars per minute, a line, horizontal bars.
import { clock, day, h, seconds } from "./lib.js";

const PAD = { left: 34, right: 8, top: 8, bottom: 20 };

function niceMax(value) {
  if (value <= 4) return 4;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

// Charts are drawn at the width of their container (in CSS pixels) so text keeps its size.
function axis(W, height, max, format, left = PAD.left) {
  const inner = height - PAD.top - PAD.bottom;
  return [0, 0.5, 1].map((f) => {
    const y = PAD.top + inner * (1 - f);
    return h("svg:g", {},
      h("svg:line", { class: "gridline", x1: left, x2: W - PAD.right, y1: y, y2: y }),
      h("svg:text", { x: left - 4, y: y + 3, "text-anchor": "end" }, format(max * f)));
  });
}

/** A round top for a duration axis (seconds): 1, 2, 2.5 or 5 times a power of ten. */
function niceSeconds(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

/** Seconds, short enough for an axis: "250ms", "1.5s", "12m", "3.5h". */
function shortSeconds(value) {
  if (value === 0) return "0";
  if (value < 1) return `${+(value * 1000).toPrecision(3)}ms`;
  if (value < 60) return `${+value.toPrecision(3)}s`;
  if (value < 3600) return `${+(value / 60).toPrecision(3)}m`;
  return `${+(value / 3600).toPrecision(3)}h`;
}

// Time labels under a chart: about five, at bucket starts; with the day when buckets are wide.
function timeLabels(W, starts, height, bucketSeconds = 60, left = PAD.left) {
  const inner = W - left - PAD.right;
  const step = inner / starts.length;
  const labels = [];
  const wanted = W < 420 ? 2 : 4;
  const every = Math.max(1, Math.round(starts.length / wanted));
  for (let i = 0; i < starts.length; i += every) {
    const date = new Date(starts[i]);
    const text = bucketSeconds >= 3600 ? `${day(date)} ${clock(date)}` : clock(date, { seconds: bucketSeconds < 60 });
    labels.push(h("svg:text", { x: left + i * step, y: height - 5 }, text));
  }
  labels.push(h("svg:text", { x: W - PAD.right, y: height - 5, "text-anchor": "end" }, "now"));
  return labels;
}

/** Stacked bars: series is [[name, values[]], ...], one value per bucket (`minutes` holds
 * each bucket's start; `bucketSeconds` its width). */
export function stackedBars(minutes, series, { width = 600, height = 170, label = "", bucketSeconds = 60 } = {}) {
  const W = Math.max(width, 240);
  const totals = minutes.map((_, i) => series.reduce((sum, [, values]) => sum + (values[i] || 0), 0));
  const max = niceMax(Math.max(0, ...totals));
  const inner = { w: W - PAD.left - PAD.right, h: height - PAD.top - PAD.bottom };
  const step = inner.w / minutes.length;
  const bars = [];
  minutes.forEach((minute, i) => {
    let y = PAD.top + inner.h;
    for (const [name, values] of series) {
      const value = values[i] || 0;
      if (!value) continue;
      const barHeight = (value / max) * inner.h;
      y -= barHeight;
      bars.push(h("svg:rect", { class: `fill-${name}`, x: PAD.left + i * step + 0.5, y, width: Math.max(step - 1, 1), height: barHeight },
        h("svg:title", {}, `${clock(new Date(minute))}: ${value} ${name.replace("_", " ")}`)));
    }
  });
  return h("svg:svg", { class: "chart", viewBox: `0 0 ${W} ${height}`, role: "img", "aria-label": label },
    axis(W, height, max, (v) => String(Math.round(v))), bars, timeLabels(W, minutes, height, bucketSeconds));
}

/** A line of ratios (0..1, or null where there is nothing to measure). */
export function ratioLine(minutes, ratios, { width = 600, height = 130, label = "", bucketSeconds = 60 } = {}) {
  const W = Math.max(width, 240);
  const inner = { w: W - PAD.left - PAD.right, h: height - PAD.top - PAD.bottom };
  const step = inner.w / minutes.length;
  const segments = [];
  let points = [];
  ratios.forEach((ratio, i) => {
    if (ratio === null) {
      if (points.length) segments.push(points);
      points = [];
      return;
    }
    points.push(`${(PAD.left + (i + 0.5) * step).toFixed(1)},${(PAD.top + inner.h * (1 - ratio)).toFixed(1)}`);
  });
  if (points.length) segments.push(points);
  const shapes = segments.map((pts) => pts.length === 1
    ? h("svg:circle", { class: "fill-failed", cx: pts[0].split(",")[0], cy: pts[0].split(",")[1], r: 2.5 })
    : h("svg:polyline", { class: "line", points: pts.join(" ") }));
  return h("svg:svg", { class: "chart", viewBox: `0 0 ${W} ${height}`, role: "img", "aria-label": label },
    axis(W, height, 1, (v) => `${Math.round(v * 100)}%`), shapes, timeLabels(W, minutes, height, bucketSeconds));
}

/** Lines of durations in seconds, one per [name, values[]] (null where nothing was measured):
 * each line is drawn with the class `line-<name>`, each point titled with its value. */
export function durationLines(starts, series, { width = 600, height = 130, label = "", bucketSeconds = 60 } = {}) {
  const W = Math.max(width, 240);
  const left = 46; // room for "250ms"
  const inner = { w: W - left - PAD.right, h: height - PAD.top - PAD.bottom };
  const step = inner.w / starts.length;
  const max = niceSeconds(Math.max(0, ...series.flatMap(([, values]) => values.filter((v) => v !== null))));
  const shapes = series.map(([name, values]) => {
    const points = [];
    const dots = [];
    values.forEach((value, i) => {
      if (value === null) return;
      const x = left + (i + 0.5) * step;
      const y = PAD.top + inner.h * (1 - value / max);
      points.push(`${x.toFixed(1)},${y.toFixed(1)}`);
      dots.push(h("svg:circle", { class: `dot-${name}`, cx: x.toFixed(1), cy: y.toFixed(1), r: 2.5 },
        h("svg:title", {}, `${clock(new Date(starts[i]))}: ${name} ${seconds(value)}`)));
    });
    return h("svg:g", { class: `series-${name}` },
      points.length > 1 ? h("svg:polyline", { class: `line line-${name}`, points: points.join(" ") }) : null, dots);
  });
  return h("svg:svg", { class: "chart", viewBox: `0 0 ${W} ${height}`, role: "img", "aria-label": label },
    axis(W, height, max, shortSeconds, left), shapes, timeLabels(W, starts, height, bucketSeconds, left));
}

/** Horizontal bars, one per [name, value]; each bar links to `href(name)`. */
export function hbars(entries, href, { width = 600 } = {}) {
  const W = Math.max(width, 240);
  const max = Math.max(1, ...entries.map(([, value]) => value));
  const rowHeight = 22;
  const labelWidth = 84;
  const height = entries.length * rowHeight;
  const rows = entries.map(([name, value], i) => {
    const barWidth = ((W - labelWidth - 50) * value) / max;
    const y = i * rowHeight;
    return h("svg:a", { href: href(name) },
      h("svg:text", { x: 0, y: y + 15 }, name.replace("_", " ")),
      h("svg:rect", { class: `fill-${name}`, x: labelWidth, y: y + 4, width: Math.max(barWidth, value ? 2 : 0), height: rowHeight - 8, rx: 3 }),
      h("svg:text", { x: labelWidth + barWidth + 6, y: y + 15 }, String(value)));
  });
  return h("svg:svg", { class: "chart", viewBox: `0 0 ${W} ${height}`, role: "img", "aria-label": "Tasks by status" }, rows);
}

export function legend(names) {
  return h("div", { class: "legend" }, names.map((name) => h("span", {}, h("i", { class: `fill-${name}` }), name.replace("_", " "))));
}
