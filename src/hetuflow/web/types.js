// Task types: the recent tasks grouped by type, with counts by status and queue-wait /
// run-time percentiles (GET /api/stats/task-types), plus the no-agent banner.
import { unservedBanner } from "./alerts.js";
import { STATUSES, api, badge, fill, h, loading, reload, seconds } from "./lib.js";

const WINDOWS = [["900", "15 min"], ["3600", "1 hour"], ["86400", "24 hours"], ["604800", "7 days"]];

export async function renderTaskTypes(view, { query, signal }) {
  const windowSeconds = WINDOWS.some(([value]) => value === query.get("window")) ? query.get("window") : "86400";
  const pick = h("select", { name: "window", "aria-label": "Window", onchange: () => { location.hash = `#/tasks/types?window=${pick.value}`; } },
    WINDOWS.map(([value, label]) => h("option", { value, selected: value === windowSeconds }, `last ${label}`)));
  const content = h("div", { id: "type-stats" }, loading());
  const note = h("p", { class: "small muted" });
  fill(view,
    h("div", { class: "spread" }, h("h1", {}, "Tasks by type"),
      h("div", { class: "row" }, pick, h("a", { class: "button", href: "#/tasks" }, "All tasks"))),
    unservedBanner(signal),
    h("section", { class: "panel" }, content, note));

  const draw = (answer) => {
    if (!answer.items.length) {
      fill(content, h("p", { class: "empty" }, "No task was created in this window. ", h("a", { href: "#/tasks/new" }, "Create a task"), " or pick a longer window."));
      note.textContent = "";
      return;
    }
    const shown = STATUSES.filter((status) => answer.items.some((item) => item.by_status[status]));
    fill(content, h("div", { class: "table-wrap" }, h("table", { id: "type-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Task type"), h("th", { class: "num" }, "Tasks"), h("th", {}, "By status"),
        h("th", { class: "num" }, "Queue wait p50"), h("th", { class: "num" }, "p95"), h("th", { class: "num" }, "Run time p50"), h("th", { class: "num" }, "p95"))),
      h("tbody", {}, answer.items.map((item) => h("tr", { dataset: { taskType: item.task_type } },
        h("td", {}, h("a", { href: `#/tasks?task_type=${encodeURIComponent(item.task_type)}` }, item.task_type)),
        h("td", { class: "num" }, String(item.total)),
        h("td", {}, h("div", { class: "row counts" }, shown.filter((status) => item.by_status[status]).map((status) =>
          h("a", { href: `#/tasks?task_type=${encodeURIComponent(item.task_type)}&status=${status}`, class: "count", dataset: { status } }, badge(status), " ", String(item.by_status[status]))))),
        h("td", { class: "num" }, seconds(item.queue_wait_seconds.p50)),
        h("td", { class: "num" }, seconds(item.queue_wait_seconds.p95)),
        h("td", { class: "num" }, seconds(item.run_seconds.p50)),
        h("td", { class: "num" }, seconds(item.run_seconds.p95))))))));
    note.textContent = `${answer.sampled} task${answer.sampled === 1 ? "" : "s"} created in the window${answer.truncated ? " (only the newest are counted)" : ""}. `
      + "Queue wait: from due to first start. Run time: from first start to finish, retries included.";
  };

  await reload(async () => draw(await api("GET", `/api/stats/task-types?window_seconds=${windowSeconds}`, undefined, { signal })), signal, 5000);
}
