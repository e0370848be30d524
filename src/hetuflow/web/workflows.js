// Workflows: the list, and one workflow's DAG drawn live (nodes coloured by status, edges
// from depends_on), with its steps' table and cancel.
import {
  api, badge, duration, errorText, fill, follow, h, loading, relative, reload, setLive, toast, when,
} from "./lib.js";

const PAGE = 50;
const ORDER = ["waiting", "pending", "dispatched", "running", "cancelling", "succeeded", "failed", "timed_out", "cancelled", "skipped"];

/** The steps counted by status, as small coloured counts ("3 succeeded · 1 running"). */
function counts(stepCounts) {
  const parts = ORDER.filter((status) => stepCounts[status]).map((status) =>
    h("span", { class: "count-chip", dataset: { status } }, h("i", { class: `fill-${status}` }), `${stepCounts[status]} ${status.replace("_", " ")}`));
  return parts.length ? parts : h("span", { class: "muted" }, "—");
}

// --- list -------------------------------------------------------------------------------------

export async function renderWorkflows(view, { query, signal }) {
  const offset = Math.max(0, Number(query.get("offset") || 0));
  const body = h("tbody", {}, h("tr", {}, h("td", { colspan: 5, class: "loading" }, "Loading workflows…")));
  const summary = h("span", { class: "muted small" });
  const pager = h("div", { class: "row" });
  fill(view,
    h("div", { class: "spread" }, h("h1", {}, "Workflows"), summary),
    h("section", { class: "panel" },
      h("div", { class: "table-wrap" }, h("table", { id: "workflow-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Status"), h("th", {}, "Steps"),
          h("th", { class: "wide" }, "Created"), h("th", { class: "wide" }, "Took"))),
        body)),
      pager));

  const load = async () => {
    const page = await api("GET", `/api/workflows?limit=${PAGE}&offset=${offset}`, undefined, { signal });
    fill(body, page.items.length ? page.items.map((wf) => h("tr", { class: "link", dataset: { id: wf.id }, onclick: () => { location.hash = `#/workflows/${wf.id}`; } },
      h("td", {}, h("a", { href: `#/workflows/${wf.id}` }, wf.name), h("div", { class: "small muted mono" }, wf.id.slice(0, 8))),
      h("td", {}, badge(wf.status)),
      h("td", { class: "counts" }, counts(wf.step_counts)),
      h("td", { class: "wide", title: when(wf.created_at) }, relative(wf.created_at)),
      h("td", { class: "wide" }, wf.finished_at ? duration(wf.created_at, wf.finished_at) : "—"))) : h("tr", {}, h("td", { colspan: 5, class: "empty" },
      offset ? ["No workflow on this page. ", h("a", { href: "#/workflows" }, "First page")]
        : ["No workflow yet. Submit one with ", h("code", {}, "./hetuflow-server create-workflow --file wf.json"), " or POST /api/workflows (see docs/workflows.md)."])));
    summary.textContent = page.total ? `${page.total} workflow${page.total === 1 ? "" : "s"}` : "";
    fill(pager,
      offset > 0 ? h("a", { class: "button", href: `#/workflows?offset=${Math.max(0, offset - PAGE)}` }, "Newer") : null,
      page.items.length ? h("span", { class: "muted small" }, `${offset + 1}–${offset + page.items.length} of ${page.total}`) : null,
      offset + page.items.length < page.total ? h("a", { class: "button", href: `#/workflows?offset=${offset + PAGE}` }, "Older") : null);
  };
  await reload(load, signal, 2000);
}

// --- the DAG layout -----------------------------------------------------------------------------

const NODE_W = 168;
const NODE_H = 46;
const GAP_X = 64;
const GAP_Y = 18;
const PAD = 12;

/**
 * Layered layout, left to right: a step's column is the length of the longest path from a
 * root to it; within a column, steps are ordered by the mean row of their parents (one sweep),
 * then by submission order. Returns {nodes: Map(name -> {x, y, column}), width, height}.
 */
/**
 * The steps as the graph draws them: a map child (`map_of`) between its mapped step's parents and
 * the mapped step, which collects it.
 */
export function graphSteps(steps) {
  const children = new Map();
  for (const step of steps) if (step.map_of) (children.get(step.map_of) || children.set(step.map_of, []).get(step.map_of)).push(step.name);
  const byName = new Map(steps.map((step) => [step.name, step]));
  return steps.map((step) => ({
    ...step,
    depends_on: step.map_of ? [...(byName.get(step.map_of)?.depends_on || [])] : [...step.depends_on, ...(children.get(step.name) || [])],
  }));
}

export function layout(steps) {
  const byName = new Map(steps.map((step, index) => [step.name, { step, index }]));
  const column = new Map();
  const depth = (name, seen = new Set()) => {
    if (column.has(name)) return column.get(name);
    if (seen.has(name)) return 0; // a cycle cannot be submitted; never loop on one
    seen.add(name);
    const parents = (byName.get(name)?.step.depends_on || []).filter((parent) => byName.has(parent));
    const value = parents.length ? 1 + Math.max(...parents.map((parent) => depth(parent, seen))) : 0;
    column.set(name, value);
    return value;
  };
  const columns = [];
  for (const step of steps) {
    const c = depth(step.name);
    (columns[c] ||= []).push(step.name);
  }
  const row = new Map();
  columns.forEach((names, c) => {
    const key = (name) => {
      const parents = byName.get(name).step.depends_on.filter((parent) => row.has(parent));
      return parents.length ? parents.reduce((sum, parent) => sum + row.get(parent), 0) / parents.length : byName.get(name).index;
    };
    const keyed = names.map((name) => [key(name), byName.get(name).index, name]);
    keyed.sort((a, b) => (c === 0 ? a[1] - b[1] : a[0] - b[0] || a[1] - b[1]));
    keyed.forEach(([, , name], r) => row.set(name, r));
  });
  const tallest = Math.max(1, ...columns.map((names) => (names ? names.length : 0)));
  const height = PAD * 2 + tallest * NODE_H + (tallest - 1) * GAP_Y;
  const nodes = new Map();
  columns.forEach((names, c) => {
    const span = names.length * NODE_H + (names.length - 1) * GAP_Y;
    const top = (height - span) / 2;
    names.forEach((name) => {
      nodes.set(name, { x: PAD + c * (NODE_W + GAP_X), y: top + row.get(name) * (NODE_H + GAP_Y), column: c });
    });
  });
  const width = PAD * 2 + columns.length * NODE_W + (columns.length - 1) * GAP_X;
  return { nodes, width, height };
}

function shorten(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

// --- one workflow -------------------------------------------------------------------------------

export async function renderWorkflow(view, { id, signal }) {
  const header = h("div", { class: "spread" }, h("h1", {}, "Workflow"), loading());
  const graph = h("div", { class: "dag-wrap", id: "workflow-dag" }, loading("Loading the graph…"));
  const legend = h("div", { class: "legend" });
  const stepsBody = h("tbody", {}, h("tr", {}, h("td", { colspan: 6, class: "loading" }, "Loading steps…")));
  fill(view, header,
    h("section", { class: "panel" }, h("div", { class: "spread" }, h("h2", {}, "Steps"), legend), graph),
    h("section", { class: "panel" }, h("div", { class: "table-wrap" }, h("table", { id: "workflow-steps" },
      h("thead", {}, h("tr", {}, h("th", {}, "Step"), h("th", {}, "Status"), h("th", { class: "wide" }, "Task type"),
        h("th", { class: "wide" }, "Depends on"), h("th", { class: "wide" }, "Attempts"), h("th", {}, "Ran"))),
      stepsBody))));

  let workflow = null;
  const nodeEls = new Map(); // step name -> the node's <a> element
  const taskHref = (step) => `#/tasks/${step.task.id}?workflow=${id}`;

  const drawHeader = () => {
    const running = workflow.status === "running";
    fill(header,
      h("div", {}, h("h1", { id: "workflow-name" }, workflow.name, " ", h("span", { id: "workflow-status" }, badge(workflow.status))),
        h("div", { class: "small muted" }, h("span", { class: "mono" }, workflow.id), ` · on failure: ${workflow.on_failure} · created ${when(workflow.created_at)}`,
          workflow.finished_at ? ` · took ${duration(workflow.created_at, workflow.finished_at)}` : "")),
      h("div", { class: "row" },
        running && !workflow.cancelled_at ? h("button", { class: "danger", id: "cancel-workflow", onclick: cancel }, "Cancel workflow") : null,
        h("a", { class: "button", href: "#/workflows" }, "All workflows")));
    const tally = {};
    for (const step of workflow.steps) tally[step.status] = (tally[step.status] || 0) + 1;
    fill(legend, counts(tally));
  };

  const drawTable = () => {
    fill(stepsBody, workflow.steps.map((step) => h("tr", { class: "link", dataset: { step: step.name }, onclick: () => { location.hash = taskHref(step); } },
      h("td", {}, h("a", { href: taskHref(step) }, step.name), step.run_if !== "all_succeeded" ? h("div", { class: "small muted" }, `run if ${step.run_if.replace("_", " ")}`) : null,
        step.task.error && step.status === "skipped" ? h("div", { class: "small muted" }, step.task.error) : null),
      h("td", {}, badge(step.status)),
      h("td", { class: "wide" }, step.task.task_type),
      h("td", { class: "wide" }, step.depends_on.length ? step.depends_on.join(", ") : "—"),
      h("td", { class: "wide num" }, String(step.task.attempts)),
      h("td", {}, step.task.started_at && step.task.finished_at ? duration(step.task.started_at, step.task.finished_at) : step.task.started_at ? "running…" : "—"))));
  };

  // The graph is laid out once per set of steps; a step's transition only recolours its node.
  const drawGraph = () => {
    const drawn = graphSteps(workflow.steps);
    const { nodes, width, height } = layout(drawn);
    const svg = h("svg:svg", { class: "dag", viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
      "aria-label": `The graph of workflow ${workflow.name}: ${workflow.steps.length} steps` });
    svg.append(h("svg:defs", {}, h("svg:marker", { id: "dag-arrow", viewBox: "0 0 8 8", refX: 7, refY: 4, markerWidth: 7, markerHeight: 7, orient: "auto" },
      h("svg:path", { d: "M0,0 L8,4 L0,8 z", class: "dag-arrow" }))));
    const edges = h("svg:g", { class: "edges" });
    for (const step of drawn) {
      const to = nodes.get(step.name);
      for (const parent of step.depends_on) {
        const from = nodes.get(parent);
        if (!from) continue;
        const x1 = from.x + NODE_W;
        const y1 = from.y + NODE_H / 2;
        const x2 = to.x - 2;
        const y2 = to.y + NODE_H / 2;
        const bend = Math.max(24, (x2 - x1) / 2);
        edges.append(h("svg:path", { class: "edge", d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`,
          "marker-end": "url(#dag-arrow)", dataset: { from: parent, to: step.name } }));
      }
    }
    svg.append(edges);
    nodeEls.clear();
    const group = h("svg:g", { class: "nodes" });
    for (const step of workflow.steps) {
      const at = nodes.get(step.name);
      const label = h("svg:text", { x: at.x + 10, y: at.y + 19, class: "node-name" }, shorten(step.name, 20));
      const state = h("svg:text", { x: at.x + 10, y: at.y + 36, class: "node-status" }, step.status.replace("_", " "));
      const node = h("svg:a", { href: taskHref(step), class: `node s-${step.status}`, dataset: { step: step.name, status: step.status } },
        h("svg:title", {}, `${step.name} (${step.task.task_type}): ${step.status}`),
        h("svg:rect", { x: at.x, y: at.y, width: NODE_W, height: NODE_H, rx: 7 }),
        h("svg:rect", { x: at.x, y: at.y, width: 5, height: NODE_H, rx: 2, class: "node-bar" }),
        label, state);
      nodeEls.set(step.name, node);
      group.append(node);
    }
    svg.append(group);
    fill(graph, svg);
  };

  const recolour = (step) => {
    const node = nodeEls.get(step.name);
    if (!node) return;
    node.setAttribute("class", `node s-${step.status}`);
    node.dataset.status = step.status;
    node.querySelector(".node-status").textContent = step.status.replace("_", " ");
    node.querySelector("title").textContent = `${step.name} (${step.task.task_type}): ${step.status}`;
  };

  const cancel = async () => {
    if (!confirm(`Cancel the workflow ${workflow.name}? Waiting and pending steps are cancelled at once, running ones are stopped on their agents.`)) return;
    try {
      const changed = await api("DELETE", `/api/workflows/${id}`);
      workflow = changed;
      drawHeader();
      drawTable();
      for (const step of workflow.steps) recolour(step);
      toast(`Workflow ${workflow.name} cancelled`);
    } catch (error) {
      toast(errorText(error), true);
    }
  };

  try {
    workflow = await api("GET", `/api/workflows/${id}`, undefined, { signal });
  } catch (error) {
    if (signal.aborted) return;
    fill(view, h("section", { class: "panel" }, h("h1", {}, "Workflow"), h("p", { class: "error" }, errorText(error)), h("a", { href: "#/workflows" }, "All workflows")));
    return;
  }
  drawHeader();
  drawGraph();
  drawTable();

  const refetch = async () => {
    try {
      workflow = await api("GET", `/api/workflows/${id}`, undefined, { signal });
      drawHeader();
      drawTable();
      for (const step of workflow.steps) recolour(step);
    } catch {
      /* the stream goes on; the next event redraws */
    }
  };

  // Live: the stream sends the workflow, then each step's transition (event: step).
  const stop = follow(`/api/workflows/${id}/events`, (event, data) => {
    if (event === "workflow") {
      const names = (w) => w.steps.map((s) => s.name).join("\n");
      const relayout = !workflow || names(workflow) !== names(data);
      workflow = data;
      drawHeader();
      drawTable();
      if (relayout) drawGraph();
      else for (const step of workflow.steps) recolour(step);
    } else if (event === "step") {
      const { previous, workflow_status: status, ...step } = data;
      workflow.steps = workflow.steps.map((s) => (s.name === step.name ? step : s));
      const ended = status && status !== "running" && workflow.status === "running";
      if (status) workflow.status = status;
      recolour(step);
      drawHeader();
      drawTable();
      if (ended) refetch(); // its finished_at and the final counts
    } else if (event === "end") {
      toast("This workflow is gone", true);
      return false;
    }
    return true;
  }, (connected) => setLive(connected));
  signal.addEventListener("abort", stop);
}
