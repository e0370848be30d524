// Bulk actions of the task list: pick tasks (or every task matching the filter), then cancel or
// retry them in one request (POST /api/tasks/bulk-cancel, /bulk-retry); one outcome per task.
import { TERMINAL, api, errorText, fill, h, toast } from "./lib.js";

const RETRYABLE = new Set(["failed", "timed_out", "cancelled", "quarantined"]);
const REFUSALS = {
  task_already_finished: "already finished",
  task_not_retryable: "not failed, timed out, cancelled or quarantined",
  task_not_found: "gone",
};

/** The list filter of the page's query, as the bulk routes take it. */
function filterOf(query) {
  const filter = {};
  const statuses = query.getAll("status");
  if (statuses.length) filter.status = statuses;
  for (const key of ["task_type", "agent_id", "cron_job_id", "created_after", "created_before", "q", "concurrency_key", "rate_limit"]) {
    if (query.get(key)) filter[key] = query.get(key);
  }
  if (query.get("final") === "true") filter.final = true; // the dead letters
  return filter;
}

/**
 * The selection of a task list: `headCell` and `cell(task)` go in the table, `bar` above it;
 * `sync(page)` after each (re)load; `reload()` is called after an action.
 */
export function createBulk({ query, reload }) {
  const selected = new Map(); // id -> task as last seen
  let allMatching = false;
  let page = { items: [], total: null, next: null };
  let matching = 0; // how many tasks match the filter, counted when "select all matching" is asked
  let confirming = null; // "cancel" | "retry" while asking "are you sure?"
  let busy = false;

  const pageBox = h("input", { type: "checkbox", id: "select-page", "aria-label": "Select every task on this page" });
  const headCell = h("th", { class: "pick" }, pageBox);
  const bar = h("div", { class: "bulk", id: "bulk-bar", hidden: true, role: "region", "aria-label": "Selected tasks" });
  const boxes = new Map(); // id -> checkbox on screen

  const count = () => (allMatching ? matching : selected.size);
  const selectedTasks = () => [...selected.values()];

  const draw = () => {
    for (const [id, box] of boxes) box.checked = allMatching || selected.has(id);
    const onPage = page.items.length > 0 && page.items.every((task) => allMatching || selected.has(task.id));
    pageBox.checked = onPage;
    pageBox.indeterminate = !onPage && page.items.some((task) => selected.has(task.id));
    bar.hidden = count() === 0;
    if (bar.hidden) return;
    const n = count();
    const label = allMatching ? `All ${n} task${n === 1 ? "" : "s"} matching this filter selected` : `${n} selected`;
    const tasks = selectedTasks();
    const canCancel = allMatching || tasks.some((task) => !TERMINAL.has(task.status));
    const canRetry = allMatching || tasks.some((task) => RETRYABLE.has(task.status));
    if (confirming) {
      const verb = confirming === "cancel" ? "Cancel" : "Retry";
      fill(bar, h("span", { id: "bulk-count" }, label),
        h("strong", {}, `${verb} ${n} task${n === 1 ? "" : "s"}?`),
        h("button", { class: confirming === "cancel" ? "danger" : "primary", id: "bulk-confirm", disabled: busy, onclick: () => run(confirming) }, `Yes, ${verb.toLowerCase()}`),
        h("button", { id: "bulk-back", disabled: busy, onclick: () => { confirming = null; draw(); } }, "No"));
      return;
    }
    fill(bar, h("span", { id: "bulk-count" }, label),
      !allMatching && onPage && (page.next || (page.total ?? 0) > selected.size)
        ? h("button", { id: "select-matching", onclick: selectMatching }, "Select all matching this filter")
        : null,
      h("button", { class: "danger", id: "bulk-cancel", disabled: !canCancel, onclick: () => { confirming = "cancel"; draw(); } }, "Cancel"),
      h("button", { id: "bulk-retry", disabled: !canRetry, onclick: () => { confirming = "retry"; draw(); } }, "Retry"),
      h("button", { id: "bulk-clear", onclick: clear }, "Clear selection"));
  };

  // The list pages by cursor and counts nothing; the count is asked for only here.
  const selectMatching = async () => {
    const params = new URLSearchParams(query);
    for (const key of ["cursor", "from", "offset"]) params.delete(key);
    params.set("limit", "1");
    params.set("include_total", "true");
    try {
      matching = (await api("GET", `/api/tasks?${params}`)).total;
      allMatching = true;
      draw();
    } catch (error) {
      toast(errorText(error), true);
    }
  };

  const clear = () => {
    selected.clear();
    allMatching = false;
    confirming = null;
    draw();
  };

  const run = async (action) => {
    busy = true;
    draw();
    const body = allMatching ? { filter: filterOf(query) } : { ids: [...selected.keys()] };
    try {
      const answer = await api("POST", `/api/tasks/bulk-${action}`, body);
      const refusals = {};
      for (const item of answer.items) {
        if (!item.ok) refusals[item.error.code] = (refusals[item.error.code] || 0) + 1;
      }
      const done = `${action === "cancel" ? "Cancelled" : "Retried"} ${answer.succeeded} task${answer.succeeded === 1 ? "" : "s"}`;
      const refused = Object.entries(refusals).map(([code, n]) => `${n} ${REFUSALS[code] || code}`).join(", ");
      const more = answer.truncated ? `; ${answer.matched - answer.items.length} more match: run it again` : "";
      toast(`${done}${refused ? ` (skipped: ${refused})` : ""}${more}`, answer.succeeded === 0 && answer.failed > 0);
      busy = false;
      clear();
      await reload();
    } catch (error) {
      busy = false;
      confirming = null;
      draw();
      toast(errorText(error), true);
    }
  };

  pageBox.addEventListener("change", () => {
    allMatching = false;
    for (const task of page.items) {
      if (pageBox.checked) selected.set(task.id, task);
      else selected.delete(task.id);
    }
    confirming = null;
    draw();
  });

  const cell = (task) => {
    const box = h("input", { type: "checkbox", class: "pick", "aria-label": `Select ${task.name}`, checked: allMatching || selected.has(task.id) });
    box.addEventListener("change", () => {
      if (allMatching) {
        // Leaving "all matching": keep this page's tasks but the one unticked.
        allMatching = false;
        for (const other of page.items) selected.set(other.id, other);
      }
      if (box.checked) selected.set(task.id, task);
      else selected.delete(task.id);
      confirming = null;
      draw();
    });
    boxes.set(task.id, box);
    return h("td", { class: "pick", onclick: (event) => event.stopPropagation() }, box);
  };

  const sync = (fresh) => {
    page = fresh;
    for (const task of fresh.items) if (selected.has(task.id)) selected.set(task.id, task);
    for (const id of [...boxes.keys()]) if (!fresh.items.some((task) => task.id === id)) boxes.delete(id);
    if (!confirming) draw();
  };

  return { bar, headCell, cell, sync };
}
