// One agent's page: what it is (uptime, capabilities, task types, slots), how much it ran
// (tasks last run on it, by outcome), its recent tasks, slots in use over time; drain, resume,
// disable, enable, delete.
import { api, badge, chips, clock, delay, errorText, fill, h, loading, relative, setLive, toast, when } from "./lib.js";

const RECENT = 20;
const SAMPLES = 180; // slot samples kept: 6 minutes at one every 2 s
const DONE = ["succeeded", "failed", "timed_out", "cancelled"];
const FAILED = ["failed", "timed_out"];

/** "3 d 4 h", "2 h 10 min", "5 min", "12 s" since an instant. */
function since(iso, now = Date.now()) {
  if (!iso) return "—";
  const s = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** Slots in use over time, a step line under the agent's slot count. */
function slotChart(samples, total, width) {
  const W = Math.max(width, 240);
  const H = 110;
  const pad = { left: 28, right: 8, top: 8, bottom: 18 };
  const max = Math.max(total, 1, ...samples.map((s) => s.used));
  const t0 = samples[0].at;
  const span = Math.max(samples[samples.length - 1].at - t0, 1);
  const x = (at) => pad.left + ((W - pad.left - pad.right) * (at - t0)) / span;
  const y = (used) => pad.top + (H - pad.top - pad.bottom) * (1 - used / max);
  let d = "";
  samples.forEach((sample, i) => {
    d += i === 0 ? `M${x(sample.at)},${y(sample.used)}` : `H${x(sample.at)}V${y(sample.used)}`;
  });
  return h("svg:svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `Slots in use: ${samples[samples.length - 1].used} of ${total} now` },
    [0, max].map((v) => h("svg:g", {},
      h("svg:line", { class: "gridline", x1: pad.left, x2: W - pad.right, y1: y(v), y2: y(v) }),
      h("svg:text", { x: pad.left - 4, y: y(v) + 3, "text-anchor": "end" }, String(v)))),
    h("svg:path", { class: "line slots", d }),
    h("svg:text", { x: pad.left, y: H - 4 }, clock(new Date(t0), { seconds: true })),
    h("svg:text", { x: W - pad.right, y: H - 4, "text-anchor": "end" }, "now"));
}

export async function renderAgent(view, { id, signal }) {
  const header = h("div", { class: "spread" }, h("h1", {}, "Agent"), loading());
  const details = h("dl", { class: "kv", id: "agent-details" }, h("dt", { class: "loading" }, "Loading…"));
  const tally = h("div", { class: "tiles", id: "agent-counts" }, loading());
  const slots = h("div", { id: "agent-slots" }, loading());
  const recent = h("tbody", {}, h("tr", {}, h("td", { colspan: 4, class: "loading" }, "Loading tasks…")));
  fill(view, header,
    h("div", { class: "grid" },
      h("section", { class: "panel" }, h("h2", {}, "Details"), details),
      h("section", { class: "panel stack" },
        h("div", {}, h("h2", {}, "Tasks last run here"), tally),
        h("div", {}, h("h2", {}, "Slots in use"), slots, h("p", { class: "small muted" }, "Sampled every 2 s while this page is open.")))),
    h("section", { class: "panel" },
      h("div", { class: "spread" }, h("h2", {}, "Recent tasks"), h("a", { href: `#/tasks?agent_id=${id}`, id: "agent-all-tasks" }, "All its tasks")),
      h("div", { class: "table-wrap" }, h("table", { id: "agent-tasks" },
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Status"), h("th", { class: "wide" }, "Type"), h("th", {}, "Created"))),
        recent))));

  let agent = null;
  const samples = [];

  const change = async (path, method, message) => {
    try {
      const changed = await api(method, `/api/agents/${id}${path}`);
      if (method === "DELETE") {
        toast(message);
        location.hash = "#/agents";
        return;
      }
      agent = changed;
      draw();
      toast(message);
    } catch (error) {
      toast(errorText(error), true);
    }
  };
  const remove = () => {
    if (!confirm(`Delete the agent ${agent.name}? Its tasks' history is kept; a process reconnecting as it is refused.`)) return;
    change("", "DELETE", `${agent.name} is deleted`);
  };

  const draw = () => {
    const now = Date.now();
    const connected = agent.status !== "offline";
    fill(header,
      h("div", {}, h("h1", { id: "agent-name" }, agent.name, " ", h("span", { id: "agent-status" }, badge(agent.status), agent.enabled ? null : [" ", badge("disabled")], agent.drained && agent.status === "offline" ? [" ", badge("drained")] : null)),
        h("div", { class: "small muted mono" }, agent.id)),
      h("div", { class: "row" },
        agent.status === "online" ? h("button", { id: "agent-drain", onclick: () => change("/drain", "POST", `${agent.name} is draining: it finishes its tasks and takes no new ones`) }, "Drain") : null,
        agent.status === "draining" || agent.drained ? h("button", { id: "agent-resume", onclick: () => change("/resume", "POST", connected ? `${agent.name} is online: it takes tasks again` : `${agent.name} is no longer drained: it takes tasks once connected`) }, "Resume") : null,
        h("button", { id: agent.enabled ? "agent-disable" : "agent-enable",
          onclick: () => change(agent.enabled ? "/disable" : "/enable", "POST", agent.enabled ? `${agent.name} is disabled: it takes no new task until enabled` : `${agent.name} is enabled: it takes tasks again`) },
          agent.enabled ? "Disable" : "Enable"),
        agent.status === "offline" ? h("button", { class: "danger", id: "agent-delete", onclick: remove, title: "Delete this offline agent (its tasks' history stays)" }, "Delete") : null,
        h("a", { class: "button", href: "#/agents" }, "All agents")));
    fill(details,
      h("dt", {}, "Status"), h("dd", {}, agent.status, agent.enabled ? "" : " (disabled: given no task)"),
      h("dt", {}, "Uptime"), h("dd", { id: "agent-uptime" }, connected && agent.connected_at ? `${since(agent.connected_at, now)} (connected ${when(agent.connected_at)})` : "not connected"),
      h("dt", {}, "Heartbeat"), h("dd", { title: when(agent.last_heartbeat_at) }, agent.last_heartbeat_at ? relative(agent.last_heartbeat_at, now) : "never"),
      h("dt", {}, "Slots"), h("dd", { id: "agent-slots-now" }, `${agent.running} of ${agent.max_concurrent_tasks} in use`),
      h("dt", {}, "Capabilities"), h("dd", {}, chips(agent.capabilities)),
      h("dt", {}, "Task types"), h("dd", {}, chips(agent.supported_task_types)),
      h("dt", {}, "Server node"), h("dd", { class: "mono" }, agent.node_id || "—"),
      h("dt", {}, "Version"), h("dd", { class: "muted" }, "not reported (the agent protocol carries no software version)"),
      h("dt", {}, "Created"), h("dd", {}, when(agent.created_at)));
    if (samples.length > 1) fill(slots, slotChart(samples, agent.max_concurrent_tasks, slots.clientWidth || 400));
    else fill(slots, h("p", { class: "muted small" }, `${agent.running} of ${agent.max_concurrent_tasks} in use now`));
  };

  const count = async (statuses) => {
    const params = new URLSearchParams({ agent_id: id, limit: "1", include_total: "true" });
    for (const status of statuses) params.append("status", status);
    return (await api("GET", `/api/tasks?${params}`, undefined, { signal })).total;
  };
  const loadCounts = async () => {
    const [done, failed, succeeded] = await Promise.all([count(DONE), count(FAILED), count(["succeeded"])]);
    const tile = (n, label, tid, href) => h("a", { class: "tile", id: tid, href }, h("span", { class: "n" }, String(n)), h("span", { class: "l" }, label));
    fill(tally,
      tile(done, "processed", "agent-processed", `#/tasks?agent_id=${id}&${DONE.map((s) => `status=${s}`).join("&")}`),
      tile(succeeded, "succeeded", "agent-succeeded", `#/tasks?agent_id=${id}&status=succeeded`),
      tile(failed, "failed or timed out", "agent-failed", `#/tasks?agent_id=${id}&status=failed&status=timed_out`));
  };
  const loadRecent = async () => {
    const page = await api("GET", `/api/tasks?agent_id=${id}&limit=${RECENT}&include_total=false`, undefined, { signal });
    fill(recent, page.items.length ? page.items.map((task) => h("tr", { class: "link", dataset: { id: task.id }, onclick: () => { location.hash = `#/tasks/${task.id}`; } },
      h("td", {}, h("a", { href: `#/tasks/${task.id}` }, task.name)),
      h("td", {}, badge(task.status)),
      h("td", { class: "wide" }, task.task_type),
      h("td", { title: when(task.created_at) }, relative(task.created_at)))) : h("tr", {}, h("td", { colspan: 4, class: "empty" }, "It has run no task yet.")));
  };

  try {
    agent = await api("GET", `/api/agents/${id}`, undefined, { signal });
  } catch (error) {
    if (signal.aborted) return;
    fill(view, h("section", { class: "panel" }, h("h1", {}, "Agent"), h("p", { class: "error" }, errorText(error)), h("a", { href: "#/agents" }, "All agents")));
    return;
  }
  samples.push({ at: Date.now(), used: agent.running });
  draw();

  // The agent every 2 s (a slot sample each time), its tasks and counts every 4 s.
  let ticks = 0;
  while (!signal.aborted) {
    try {
      if (ticks % 2 === 0) await Promise.all([loadCounts(), loadRecent()]);
      if (ticks > 0) {
        agent = await api("GET", `/api/agents/${id}`, undefined, { signal });
        samples.push({ at: Date.now(), used: agent.running });
        if (samples.length > SAMPLES) samples.shift();
      }
      draw();
      setLive(true);
    } catch (error) {
      if (signal.aborted) return;
      setLive(false);
      if (error.status === 404) {
        fill(view, h("section", { class: "panel" }, h("h1", {}, "Agent"), h("p", { class: "error" }, errorText(error)), h("a", { href: "#/agents" }, "All agents")));
        return;
      }
    }
    ticks += 1;
    await delay(2000, signal);
  }
}
