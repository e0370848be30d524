// Dashboard: live snapshots from GET /api/events (SSE); nothing to refresh by hand.
import { hbars, legend, ratioLine, stackedBars } from "./charts.js";
import { unservedBanner } from "./alerts.js";
import { STATUSES, displayZone, fill, follow, h, loading, relative, setLive, when } from "./lib.js";

const OUTCOMES = ["succeeded", "failed", "timed_out", "cancelled"];

export function renderDashboard(view, { signal }) {
  // Every box says "Loading…" until the first snapshot arrives: nothing is blank.
  const tiles = h("div", { class: "tiles", id: "status-tiles" }, loading());
  const byStatus = h("div", { id: "status-chart" }, loading());
  const agents = h("div", { id: "agents-summary" }, loading());
  const throughput = h("div", { id: "throughput-chart" }, loading());
  const failures = h("div", { id: "failure-chart" }, loading());
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
      h("div", { class: "grid" },
        h("section", { class: "panel" }, h("h2", {}, "Throughput (tasks finished per minute, last hour)"), throughput, legend(OUTCOMES)),
        h("section", { class: "panel" }, h("h2", {}, "Failure rate (failed or timed out, per minute)"), failures)),
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
    const t = snapshot.throughput;
    const finished = t.minutes.map((_, i) => OUTCOMES.reduce((sum, name) => sum + t[name][i], 0));
    const total = finished.reduce((x, y) => x + y, 0);
    const failed = t.minutes.map((_, i) => t.failed[i] + t.timed_out[i]);
    const failedTotal = failed.reduce((x, y) => x + y, 0);
    fill(throughput, total ? stackedBars(t.minutes, OUTCOMES.map((name) => [name, t[name]]), { width: throughput.clientWidth, label: "Tasks finished per minute" }) : null,
      h("p", { class: total ? "small muted" : "empty", id: "throughput-total" }, total ? `${total} finished in the last hour` : "Nothing finished in the last hour."));
    // No line at all on 0 %: a flat line at the bottom reads like a chart that did not load.
    fill(failures, failedTotal ? ratioLine(t.minutes, finished.map((n, i) => (n ? failed[i] / n : null)), { width: failures.clientWidth, label: "Failure rate per minute" }) : null,
      h("p", { class: failedTotal ? "small muted" : "empty", id: "failure-total" }, total
        ? (failedTotal ? `${failedTotal} of ${total} failed or timed out (${Math.round((100 * failedTotal) / total)}%)` : `No failures: all ${total} finished tasks succeeded or were cancelled.`)
        : "Nothing finished in the last hour."));
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

  const stop = follow("/api/events", (event, data) => {
    if (event === "snapshot") draw(data);
  }, setLive);
  const ticker = setInterval(drawFires, 1000);
  let resizeTimer = 0;
  const onResize = () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(() => last && draw(last), 150); };
  window.addEventListener("resize", onResize);
  signal.addEventListener("abort", () => { stop(); clearInterval(ticker); window.removeEventListener("resize", onResize); });
}

function tile(value, label, id) {
  return h("div", { class: "tile", id }, h("span", { class: "n" }, String(value)), h("span", { class: "l" }, label));
}
