// Dashboard: live snapshots from GET /api/events (SSE); nothing to refresh by hand. The
// charts over time read GET /api/stats/timeline for the chosen window, again whenever a
// snapshot says something changed (at most every 2 s).
import { durationLines, hbars, legend, ratioLine, stackedBars } from "./charts.js";
import { unservedBanner } from "./alerts.js";
import { STATUSES, api, displayZone, errorText, fill, follow, h, loading, relative, setLive, when } from "./lib.js";

const OUTCOMES = ["succeeded", "failed", "timed_out", "cancelled"];
/** The windows the server offers (GET /api/stats/timeline?window=…), with their wording. */
export const WINDOWS = [
  ["15m", "15 min", "the last 15 minutes", 30],
  ["1h", "1 h", "the last hour", 60],
  ["6h", "6 h", "the last 6 hours", 300],
  ["24h", "24 h", "the last 24 hours", 1200],
  ["7d", "7 days", "the last 7 days", 7200],
];
const WINDOW_KEY = "hetuflow.chartWindow";
const TIMELINE_EVERY_MS = 2000;

function savedWindow() {
  try {
    const saved = localStorage.getItem(WINDOW_KEY);
    return WINDOWS.some(([name]) => name === saved) ? saved : "1h";
  } catch {
    return "1h";
  }
}

/** "minute", "30 s", "5 min", "2 h": what one bar stands for. */
function bucketWords(bucketSeconds) {
  if (bucketSeconds === 60) return "minute";
  if (bucketSeconds < 60) return `${bucketSeconds} s`;
  if (bucketSeconds < 3600) return `${bucketSeconds / 60} min`;
  return `${bucketSeconds / 3600} h`;
}

export function renderDashboard(view, { signal }) {
  // Every box says "Loading…" until the first snapshot arrives: nothing is blank.
  const tiles = h("div", { class: "tiles", id: "status-tiles" }, loading());
  const byStatus = h("div", { id: "status-chart" }, loading());
  const agents = h("div", { id: "agents-summary" }, loading());
  const throughput = h("div", { id: "throughput-chart" }, loading());
  const failures = h("div", { id: "failure-chart" }, loading());
  const waits = h("div", { id: "wait-chart" }, loading());
  const runs = h("div", { id: "run-chart" }, loading());
  let chosen = savedWindow();
  const throughputTitle = h("h2", {});
  const failureTitle = h("h2", {});
  const waitTitle = h("h2", {});
  const runTitle = h("h2", {});
  const windowButtons = WINDOWS.map(([name, label]) => h("button", {
    type: "button", dataset: { window: name },
    onclick: () => { if (name !== chosen) { chosen = name; try { localStorage.setItem(WINDOW_KEY, name); } catch { /* private mode */ } refreshTimeline(true); } },
  }, label));
  const picker = h("div", { class: "segmented", id: "chart-window", role: "group", "aria-label": "Chart window" },
    h("span", { class: "small muted" }, "Charts over"), windowButtons);
  const timelineProblem = h("p", { class: "error", hidden: true, id: "timeline-error" });
  const fires = h("div", { id: "next-fires" }, loading());
  const problem = h("p", { class: "error", hidden: true });
  fill(view,
    h("div", { class: "spread" }, h("h1", {}, "Dashboard"), h("a", { class: "button primary", href: "#/tasks/new" }, "New task")),
    problem,
    unservedBanner(signal),
    h("div", { class: "stack" },
      tiles,
      h("div", { class: "grid" },
        h("section", { class: "panel" }, h("h2", {}, "Tasks by status"), byStatus),
        h("section", { class: "panel" }, h("h2", {}, "Agents"), agents)),
      h("div", { class: "spread" }, picker, timelineProblem),
      h("div", { class: "grid" },
        h("section", { class: "panel" }, throughputTitle, throughput, legend(OUTCOMES)),
        h("section", { class: "panel" }, failureTitle, failures)),
      h("div", { class: "grid" },
        h("section", { class: "panel" }, waitTitle, waits, legend(["p50", "p95"])),
        h("section", { class: "panel" }, runTitle, runs, legend(["p50", "p95"]))),
      h("section", { class: "panel" }, h("h2", {}, "Next cron fires"), fires)));

  let last = null;
  const draw = (snapshot) => {
    if (snapshot.error) {
      problem.hidden = false;
      problem.textContent = `The server cannot read its database: ${snapshot.error.message}`;
      return;
    }
    problem.hidden = true;
    last = snapshot;
    const counts = snapshot.tasks_by_status;
    fill(tiles, STATUSES.map((status) => h("a", { class: "tile", href: `#/tasks?status=${status}`, dataset: { status } },
      h("span", { class: "n" }, String(counts[status] ?? 0)), h("span", { class: "l" }, status.replace("_", " ")))));
    const taskTotal = STATUSES.reduce((sum, status) => sum + (counts[status] ?? 0), 0);
    fill(byStatus, taskTotal
      ? hbars(STATUSES.map((status) => [status, counts[status] ?? 0]), (status) => `#/tasks?status=${status}`, { width: byStatus.clientWidth })
      : h("p", { class: "empty", id: "no-tasks" }, "No tasks yet. ", h("a", { href: "#/tasks/new" }, "Create a task"), ", or submit one with the CLI or POST /api/tasks."));
    const a = snapshot.agents;
    fill(agents, h("div", { class: "tiles" },
      tile(a.online, "online", "agents-online"), tile(a.busy, "busy", "agents-busy"),
      tile(a.draining, "draining"), tile(`${a.slots_used}/${a.slots_total}`, "slots in use")),
      a.total
        ? h("p", { class: "small muted" }, `${a.total} agent${a.total === 1 ? "" : "s"} known. `, h("a", { href: "#/agents" }, "See agents"))
        : h("p", { class: "empty", id: "no-agents" }, "No agent has connected yet. ", h("a", { href: "#/agents" }, "How to start one")));
    drawFires();
  };
  const drawFires = () => {
    if (!last) return;
    const list = last.next_fires;
    fill(fires, list.length
      ? h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, h("th", {}, "Cron job"), h("th", {}, "Next fire"), h("th", { class: "wide" }, `In ${displayZone()}`))),
        h("tbody", {}, list.map((fire) => h("tr", {},
          h("td", {}, h("a", { href: `#/cron/${fire.cron_job_id}` }, fire.name), h("div", { class: "small muted" }, fire.task_type)),
          h("td", {}, relative(fire.next_fire_at), h("div", { class: "small muted" }, `${when(fire.next_fire_at, fire.timezone)} (${fire.timezone})`)),
          h("td", { class: "wide" }, when(fire.next_fire_at)))))))
      : h("p", { class: "empty" }, "No enabled cron job. ", h("a", { href: "#/cron/new" }, "Create one")));
  };

  // --- charts over the chosen window ---
  let timeline = null;
  let fetching = false;
  let again = false;
  let fetchedAt = 0;
  let pending = 0;
  const drawTitles = () => {
    const [, , words, bucketSeconds] = WINDOWS.find(([name]) => name === chosen);
    const per = bucketWords(bucketSeconds);
    fill(throughputTitle, `Throughput (tasks finished per ${per}, ${words.replace("the ", "")})`);
    fill(failureTitle, `Failure rate (failed or timed out, per ${per})`);
    fill(waitTitle, `Queue wait (p50 / p95 per ${per})`);
    fill(runTitle, `Run time (p50 / p95 per ${per})`);
    for (const button of windowButtons) button.setAttribute("aria-pressed", String(button.dataset.window === chosen));
  };
  drawTitles();
  const refreshTimeline = async (now = false) => {
    if (now) {
      drawTitles();
      for (const box of [throughput, failures, waits, runs]) fill(box, loading());
      timeline = null;
    }
    if (fetching) { again = true; return; }
    const wait = now ? 0 : fetchedAt + TIMELINE_EVERY_MS - Date.now();
    if (wait > 0) {
      if (!pending) pending = setTimeout(() => { pending = 0; refreshTimeline(); }, wait);
      return;
    }
    fetching = true;
    const asked = chosen;
    try {
      const found = await api("GET", `/api/stats/timeline?window=${encodeURIComponent(asked)}`, undefined, { signal });
      timelineProblem.hidden = true;
      if (asked === chosen) { timeline = found; drawTimeline(); }
    } catch (error) {
      if (signal.aborted) return;
      timelineProblem.hidden = false;
      timelineProblem.textContent = `The charts cannot be read: ${errorText(error)}`;
    } finally {
      fetching = false;
      fetchedAt = Date.now();
      if (again || asked !== chosen) { again = false; if (!signal.aborted) refreshTimeline(asked !== chosen); }
    }
  };
  const drawTimeline = () => {
    const [, , words] = WINDOWS.find(([name]) => name === chosen);
    if (!timeline || timeline.window !== chosen) return;
    const per = bucketWords(timeline.bucket_seconds);
    const buckets = timeline.buckets;
    const starts = buckets.map((bucket) => bucket.start);
    const options = (box, label) => ({ width: box.clientWidth, label, bucketSeconds: timeline.bucket_seconds });
    const column = (name) => buckets.map((bucket) => bucket.by_status[name] ?? 0);
    const finished = buckets.map((bucket) => OUTCOMES.reduce((sum, name) => sum + (bucket.by_status[name] ?? 0), 0));
    const total = finished.reduce((x, y) => x + y, 0);
    const failed = buckets.map((bucket) => (bucket.by_status.failed ?? 0) + (bucket.by_status.timed_out ?? 0));
    const failedTotal = failed.reduce((x, y) => x + y, 0);
    const nothing = `Nothing finished in ${words}.`;
    const chart = (svg) => { if (svg) svg.dataset.window = chosen; return svg; };
    fill(throughput, total ? chart(stackedBars(starts, OUTCOMES.map((name) => [name, column(name)]), options(throughput, `Tasks finished per ${per}`))) : null,
      h("p", { class: total ? "small muted" : "empty", id: "throughput-total" }, total
        ? `${total} finished in ${words}${timeline.truncated ? ` (the newest ${timeline.sampled} counted)` : ""}`
        : nothing));
    // No line at all on 0 %: a flat line at the bottom reads like a chart that did not load.
    fill(failures, failedTotal ? chart(ratioLine(starts, finished.map((n, i) => (n ? failed[i] / n : null)), options(failures, `Failure rate per ${per}`))) : null,
      h("p", { class: failedTotal ? "small muted" : "empty", id: "failure-total" }, total
        ? (failedTotal ? `${failedTotal} of ${total} failed or timed out (${Math.round((100 * failedTotal) / total)}%)` : `No failures: all ${total} finished tasks succeeded or were cancelled.`)
        : nothing));
    for (const [box, key, label] of [[waits, "queue_wait_seconds", "Queue wait"], [runs, "run_seconds", "Run time"]]) {
      const p50 = buckets.map((bucket) => bucket[key].p50);
      const p95 = buckets.map((bucket) => bucket[key].p95);
      const measured = p95.some((value) => value !== null);
      fill(box, measured ? chart(durationLines(starts, [["p50", p50], ["p95", p95]], options(box, `${label} p50 and p95 per ${per}`))) : null,
        measured ? null : h("p", { class: "empty" }, nothing));
    }
  };
  // The first timeline is read with the first snapshot: until then every box says "Loading…".

  const stop = follow("/api/events", (event, data) => {
    if (event === "snapshot") { draw(data); refreshTimeline(); }
  }, setLive);
  const ticker = setInterval(drawFires, 1000);
  let resizeTimer = 0;
  const onResize = () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(() => { if (last) draw(last); drawTimeline(); }, 150); };
  window.addEventListener("resize", onResize);
  signal.addEventListener("abort", () => { stop(); clearInterval(ticker); clearTimeout(pending); window.removeEventListener("resize", onResize); });
}

function tile(value, label, id) {
  return h("div", { class: "tile", id }, h("span", { class: "n" }, String(value)), h("span", { class: "l" }, label));
}
