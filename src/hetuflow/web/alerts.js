// The banner that answers "why does nothing run?": due pending tasks that no online agent can
// run (GET /api/stats/unserved), re-read every few seconds while the page is on screen.
import { api, delay, fill, h } from "./lib.js";

const EVERY_MS = 3000;

function line(item) {
  const tasks = `${item.pending} task${item.pending === 1 ? "" : "s"} of type ${item.task_type}`;
  const href = `#/tasks?status=pending&task_type=${encodeURIComponent(item.task_type)}`;
  const why = item.reason === "no_agent_for_task_type"
    ? "no agent serves it"
    : `no agent serving it has ${item.required_capabilities.length === 1 ? "the capability" : "the capabilities"} ${item.required_capabilities.join(", ")}`;
  return h("li", { dataset: { taskType: item.task_type } }, h("a", { href }, tasks), `: ${why}`);
}

/** An element that shows the banner while there are unserved tasks (hidden otherwise). */
export function unservedBanner(signal) {
  const list = h("ul");
  const banner = h("div", { class: "banner warn", id: "unserved-banner", role: "alert", hidden: true },
    h("strong", {}, "Tasks are waiting for an agent that does not exist"), list,
    h("p", { class: "small" }, "Start an agent that supports the task type and has the capabilities (see ", h("a", { href: "#/agents" }, "Agents"), "), or cancel the tasks."));
  (async () => {
    while (!signal.aborted) {
      try {
        const answer = await api("GET", "/api/stats/unserved", undefined, { signal });
        banner.hidden = !answer.items.length;
        fill(list, answer.items.slice(0, 5).map(line),
          answer.items.length > 5 ? h("li", {}, `and ${answer.items.length - 5} more groups`) : null);
      } catch {
        if (signal.aborted) return;
      }
      await delay(EVERY_MS, signal);
    }
  })();
  return banner;
}
