// Agents: what each one can run, how busy it is, when it was last heard from; drain, resume,
// disable, enable, and delete an offline one.
import { api, badge, chips, delay, errorText, fill, h, relative, setLive, toast, when } from "./lib.js";

let drainSupported = null; // whether the server has POST /api/agents/{agent_id}/drain
let resumeSupported = false; // ... and POST /api/agents/{agent_id}/resume

async function canDrain(signal) {
  if (drainSupported === null) {
    try {
      const spec = await api("GET", "/openapi.json", undefined, { signal });
      drainSupported = Boolean(spec.paths && spec.paths["/api/agents/{agent_id}/drain"]);
      resumeSupported = Boolean(spec.paths && spec.paths["/api/agents/{agent_id}/resume"]);
    } catch {
      return false;
    }
  }
  return drainSupported;
}

// The agent endpoint of this server, as an agent's --server flag takes it.
function agentUrl() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
}

export async function renderAgents(view, { signal }) {
  const body = h("tbody");
  const summary = h("span", { class: "muted small" });
  fill(view,
    h("div", { class: "spread" }, h("h1", {}, "Agents"), summary),
    h("section", { class: "panel" }, h("div", { class: "table-wrap" }, h("table", { id: "agent-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Agent"), h("th", {}, "Status"), h("th", {}, "Slots"), h("th", {}, "Heartbeat"),
        h("th", { class: "wide" }, "Capabilities"), h("th", { class: "wide" }, "Task types"), h("th", {}, ""))),
      body))),
    h("p", { class: "small muted" }, "Agents connect to the server with ", h("code", {}, "./hetuflow-agent start --server " + agentUrl()), " from the project root (or ", h("code", {}, "hetuflow-agent"), " where hetuflow is installed)."));

  const drain = await canDrain(signal);
  let agents = [];
  const draw = () => {
    const now = Date.now();
    fill(body, agents.length ? agents.map((agent) => h("tr", { dataset: { id: agent.id } },
      h("td", {}, h("a", { href: `#/agents/${agent.id}`, class: "agent-link" }, h("strong", {}, agent.name)), h("div", { class: "small muted mono" }, agent.node_id ? `on ${agent.node_id}` : "")),
      h("td", {}, badge(agent.status), agent.enabled ? null : [" ", badge("disabled")], agent.drained && agent.status === "offline" ? [" ", badge("drained")] : null),
      h("td", { class: "num" }, meter(agent.running, agent.max_concurrent_tasks), ` ${agent.running}/${agent.max_concurrent_tasks}`),
      h("td", { title: when(agent.last_heartbeat_at) }, agent.last_heartbeat_at ? relative(agent.last_heartbeat_at, now) : "never"),
      h("td", { class: "wide" }, chips(agent.capabilities)),
      h("td", { class: "wide" }, chips(agent.supported_task_types)),
      h("td", {}, drain && agent.status === "online" ? h("button", { onclick: () => setDraining(agent, "drain") }, "Drain")
        : resumeSupported && (agent.status === "draining" || agent.drained) ? h("button", { onclick: () => setDraining(agent, "resume") }, "Resume") : null,
        " ", h("button", { onclick: () => setEnabled(agent, !agent.enabled),
          title: agent.enabled ? "Give it no task until enabled (what it runs finishes)" : "Give it tasks again" },
          agent.enabled ? "Disable" : "Enable"),
        agent.status === "offline" ? [" ", h("button", { class: "danger", onclick: () => remove(agent),
          title: "Delete this offline agent (its tasks' history stays)" }, "Delete")] : null,
        h("a", { class: "small", href: `#/tasks?agent_id=${agent.id}` }, " Tasks")))) : h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No agent yet.")));
    const online = agents.filter((a) => a.status === "online").length;
    summary.textContent = `${online} online of ${agents.length}`;
  };
  const setDraining = async (agent, action) => {
    try {
      const changed = await api("POST", `/api/agents/${agent.id}/${action}`);
      agents = agents.map((a) => (a.id === changed.id ? changed : a));
      draw();
      toast(action === "drain" ? `${agent.name} is draining: it finishes its tasks and takes no new ones`
        : changed.status === "offline" ? `${agent.name} is no longer drained: it takes tasks once connected`
        : `${agent.name} is online: it takes tasks again`);
    } catch (error) {
      toast(errorText(error), true);
    }
  };
  const setEnabled = async (agent, enabled) => {
    try {
      const changed = await api("POST", `/api/agents/${agent.id}/${enabled ? "enable" : "disable"}`);
      agents = agents.map((a) => (a.id === changed.id ? changed : a));
      draw();
      toast(enabled ? `${agent.name} is enabled: it takes tasks again`
        : `${agent.name} is disabled: it takes no new task until enabled`);
    } catch (error) {
      toast(errorText(error), true);
    }
  };
  const remove = async (agent) => {
    if (!confirm(`Delete the agent ${agent.name}? Its tasks' history is kept; a process reconnecting as it is refused.`)) return;
    try {
      await api("DELETE", `/api/agents/${agent.id}`);
      agents = agents.filter((a) => a.id !== agent.id);
      draw();
      toast(`${agent.name} is deleted`);
    } catch (error) {
      toast(errorText(error), true);
    }
  };
  let ticks = 0;
  while (!signal.aborted) {
    if (ticks % 2 === 0) {
      try {
        agents = (await api("GET", "/api/agents", undefined, { signal })).items;
        setLive(true);
      } catch (error) {
        if (signal.aborted) return;
        setLive(false);
      }
    }
    draw(); // heartbeat ages move every second
    ticks += 1;
    await delay(1000, signal);
  }
}

function meter(used, total) {
  const bar = h("span");
  bar.style.width = `${Math.min(100, Math.round((100 * used) / Math.max(total, 1)))}%`;
  return h("span", { class: "meter", role: "img", "aria-label": `${used} of ${total} slots in use` }, bar);
}
