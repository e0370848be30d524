// Tasks: the filtered list (with bulk cancel / retry), one task's page (payload, result or
// error, attempts, live logs, cancel / retry / replay), and the create form.
import { unservedBanner } from "./alerts.js";
import { createBulk } from "./bulk.js";
import { perText, waitingHref } from "./limits.js";
import {
  STATUSES, TERMINAL, api, badge, chips, delay, duration, errorText, fill, follow, h, loading,
  parsePayload, pretty, relative, reload, setLive, toast, when, words,
} from "./lib.js";

const PAGE = 50;
const PRIORITIES = ["low", "normal", "high", "critical"];

// --- list -------------------------------------------------------------------------------------

export async function renderTasks(view, { query, signal }) {
  const selected = new Set(query.getAll("status"));
  // Pages follow the list's cursor (`next`): the same cost however deep, and steady while
  // tasks are created. `from` only numbers the rows shown; no total is counted.
  const cursor = query.get("cursor");
  const from = cursor ? Number(query.get("from") || 0) : 0;
  const text = h("input", { type: "search", name: "q", placeholder: "Search name, type, payload, result, error", value: query.get("q") || "", "aria-label": "Search" });
  const type = h("input", { name: "task_type", placeholder: "Task type", value: query.get("task_type") || "", "aria-label": "Task type", list: "task-types" });
  const agent = h("select", { name: "agent_id", "aria-label": "Agent" }, h("option", { value: "" }, "Any agent"));
  const statusBoxes = STATUSES.map((status) => h("label", {},
    h("input", { type: "checkbox", name: "status", value: status, checked: selected.has(status) }), status.replace("_", " ")));
  // Dead letters (GET /api/tasks?final=true): ended failed, timed out or quarantined, with no
  // automatic retry left, and not retried or replayed yet; a retry takes a task off the list.
  const finalBox = h("input", { type: "checkbox", name: "final", id: "filter-final", checked: query.get("final") === "true" });
  const finalLabel = h("label", { title: "Failed, timed out or quarantined tasks with no retry left that nobody has retried or replayed yet" },
    finalBox, "dead letters only");
  const body = h("tbody", {}, h("tr", {}, h("td", { colspan: 8, class: "loading" }, "Loading tasks…")));
  const bulk = createBulk({ query, reload: () => load() });
  const summary = h("span", { class: "muted small" });
  const pager = h("div", { class: "row" });
  const types = h("datalist", { id: "task-types" });

  const apply = (event) => {
    event?.preventDefault();
    const params = new URLSearchParams();
    for (const box of statusBoxes) if (box.firstChild.checked) params.append("status", box.firstChild.value);
    if (type.value.trim()) params.set("task_type", type.value.trim());
    if (agent.value) params.set("agent_id", agent.value);
    if (text.value.trim()) params.set("q", text.value.trim());
    if (finalBox.checked) params.set("final", "true");
    for (const key of FLOW_FILTERS) if (query.get(key)) params.set(key, query.get(key));
    location.hash = `#/tasks${params.size ? `?${params}` : ""}`;
  };
  for (const box of statusBoxes) box.firstChild.addEventListener("change", apply);
  finalBox.addEventListener("change", apply);
  agent.addEventListener("change", apply);

  fill(view,
    h("div", { class: "spread" }, h("h1", {}, "Tasks"),
      h("div", { class: "row" }, h("a", { class: "button", href: "#/tasks/types", id: "by-type" }, "By task type"), h("a", { class: "button primary", href: "#/tasks/new" }, "New task"))),
    unservedBanner(signal),
    h("section", { class: "panel" },
      h("form", { id: "task-filters", onsubmit: apply },
        h("div", { class: "statuses", role: "group", "aria-label": "Status" }, statusBoxes),
        h("div", { class: "filters" }, text, type, agent, finalLabel),
        flowFilter(query),
        h("div", { class: "row" }, h("button", { type: "submit" }, "Apply"), h("a", { href: "#/tasks" }, "Clear"), summary)),
      types),
    h("section", { class: "panel" },
      bulk.bar,
      h("div", { class: "table-wrap" }, h("table", { id: "task-table" },
        h("thead", {}, h("tr", {}, bulk.headCell, h("th", {}, "Name"), h("th", {}, "Status"), h("th", {}, "Type"), h("th", { class: "wide" }, "Priority"),
          h("th", { class: "wide" }, "Agent"), h("th", { class: "wide" }, "Attempts"), h("th", {}, "Created"))),
        body)),
      pager));

  let agentNames = new Map();
  try {
    const agents = (await api("GET", "/api/agents", undefined, { signal })).items;
    agentNames = new Map(agents.map((a) => [a.id, a.name]));
    for (const a of agents) agent.append(h("option", { value: a.id, selected: a.id === query.get("agent_id") }, a.name));
    const known = new Set(agents.flatMap((a) => a.supported_task_types));
    fill(types, [...known].sort().map((name) => h("option", { value: name })));
  } catch (error) {
    if (signal.aborted) return;
  }

  const load = async () => {
    const params = new URLSearchParams(query);
    params.delete("from");
    params.set("limit", String(PAGE));
    params.set("include_total", "false");
    const page = await api("GET", `/api/tasks?${params}`, undefined, { signal });
    fill(body, page.items.length ? page.items.map((task) => h("tr", { class: "link", dataset: { id: task.id }, onclick: () => { location.hash = `#/tasks/${task.id}`; } },
      bulk.cell(task),
      h("td", {}, h("a", { href: `#/tasks/${task.id}` }, task.name), task.pending_reason ? h("div", { class: "small muted" }, reasonText(task.pending_reason)) : null),
      h("td", {}, badge(task.status)),
      h("td", {}, task.task_type),
      h("td", { class: "wide" }, task.priority),
      h("td", { class: "wide" }, task.agent_id ? agentNames.get(task.agent_id) || task.agent_id.slice(0, 8) : "—"),
      h("td", { class: "wide num" }, String(task.attempts)),
      h("td", { title: when(task.created_at) }, relative(task.created_at)))) : h("tr", {}, h("td", { colspan: 8, class: "empty" }, emptyText(query))));
    bulk.sync(page);
    const shown = page.items.length;
    summary.textContent = shown ? `${from + 1}–${from + shown}${page.next ? " and more" : ""}` : "";
    const link = (label, next, start) => {
      const params = new URLSearchParams(query);
      params.delete("offset");
      if (next) {
        params.set("cursor", next);
        params.set("from", String(start));
      } else {
        params.delete("cursor");
        params.delete("from");
      }
      return h("a", { class: "button", href: `#/tasks?${params}` }, label);
    };
    fill(pager,
      cursor ? link("Newest", null, 0) : null,
      shown ? h("span", { class: "muted small" }, `${from + 1}–${from + shown}`) : null,
      page.next ? link("Next", page.next, from + shown) : null);
  };
  // The list follows changes: reload every 2 seconds while on screen.
  await reload(load, signal, 2000);
}

/** The retry policy in words: backoff, its cap and jitter, and the failure kinds retried. */
function retryText(task) {
  const kinds = task.retry_on || [];
  const on = kinds.length ? `on ${kinds.map((kind) => kind.replace("_", " ")).join(", ")}` : "on no failure";
  const jitter = task.retry_jitter ? `, jitter ${Math.round(task.retry_jitter * 100)}%` : "";
  return `${on}; backoff ${task.retry_backoff_seconds} s doubling, at most ${task.retry_backoff_max_seconds} s${jitter}`;
}

/** The empty list: nothing at all yet (say how to start), or nothing matching the filter. */
function emptyText(query) {
  if (query.get("final") === "true") return ["No dead letters: every task that failed for good was retried or replayed. ", h("a", { href: "#/tasks" }, "All tasks")];
  const filtered = [...query.keys()].some((key) => key !== "offset");
  if (filtered) return ["No task matches. ", h("a", { href: "#/tasks" }, "Clear the filter")];
  return ["No tasks yet. ", h("a", { href: "#/tasks/new" }, "Create one"), ", or submit one with the CLI or POST /api/tasks."];
}

// The list filtered by what a task waits on (the Limits view links here).
const FLOW_FILTERS = ["concurrency_key", "rate_limit"];
const FLOW_LABELS = { concurrency_key: "Concurrency key", rate_limit: "Rate limit" };

function flowFilter(query) {
  const set = FLOW_FILTERS.filter((key) => query.get(key));
  if (!set.length) return null;
  return h("div", { class: "row small", id: "flow-filter" }, set.map((key) => {
    const rest = new URLSearchParams(query);
    rest.delete(key);
    rest.delete("cursor");
    rest.delete("from");
    return h("span", { class: "chip" }, `${FLOW_LABELS[key]}: `, h("strong", { class: "mono" }, query.get(key)), " ",
      h("a", { href: `#/tasks${rest.size ? `?${rest}` : ""}`, "aria-label": `Remove the ${FLOW_LABELS[key].toLowerCase()} filter` }, "×"));
  }), h("a", { href: "#/limits" }, "Limits"));
}

const REASONS = {
  scheduled: "waiting for its start time",
  no_agent_for_task_type: "no agent supports this task type",
  no_agent_with_capabilities: "no agent has the required capabilities",
  agents_busy: "every eligible agent is busy",
  global_limit: "the global concurrency limit is reached",
  concurrency_limit: "its concurrency key has its limit of tasks running",
  rate_limited: "a rate limit it names has no units left in its window",
  agent_offline: "the agent it is pinned to (a broadcast) is not online",
  queued: "about to be dispatched",
};
function reasonText(reason) {
  return REASONS[reason] || reason;
}

function clip(text, length = 160) {
  const value = String(text ?? "");
  return value.length > length ? `${value.slice(0, length)}…` : value;
}

/** Its key's limit and use: "2 of 2 active, 5 waiting". */
function keyText(task, key) {
  const limit = key ? key.limit : task.max_concurrent_per_key;
  const parts = [];
  if (key) parts.push(`${key.active} of ${key.limit} active`, `${key.waiting} waiting`);
  else if (limit) parts.push(`limit ${limit}`);
  return parts.length ? h("span", { class: "small muted", id: "key-use" }, `(${parts.join(", ")})`) : null;
}

/** A rate limit's window now: " — 100 of 100 used per minute, next unit frees in 12 s". */
function rateText(limit) {
  if (!limit) return null;
  const free = limit.used >= limit.limit && limit.next_free_at ? `, next unit frees ${relative(limit.next_free_at)}` : "";
  return h("span", { class: "small muted rate-use" }, ` — ${limit.used} of ${perText(limit)} used${free}`);
}

/** Why exactly: the key and its limit, or the rate limit and when it frees a unit. */
function waitDetail(task, flow) {
  if (task.pending_reason === "concurrency_limit" && task.concurrency_key) {
    const key = flow.key;
    return h("div", { class: "small", id: "wait-detail" }, "Key ", h("a", { href: waitingHref("concurrency_key", task.concurrency_key), class: "mono key" }, task.concurrency_key),
      key ? `: ${key.active} of ${key.limit} active, ${key.waiting} waiting` : "");
  }
  if (task.pending_reason === "rate_limited") {
    const lacking = (task.rate_limits || []).map((use) => flow.rates.get(use.name)).filter((limit) => limit && limit.used >= limit.limit);
    return h("div", { class: "small", id: "wait-detail" },
      lacking.length ? ["Rate limit ", lacking.map((limit, i) => [i ? ", " : "", h("a", { href: waitingHref("rate_limit", limit.name) }, limit.name), ` (${limit.used} of ${perText(limit)} used)`])] : "Rate limited",
      task.rate_limited_until ? ["; it can run from ", h("span", { id: "rate-limited-until", title: when(task.rate_limited_until) }, `${when(task.rate_limited_until)} (${relative(task.rate_limited_until)})`)] : "");
  }
  if (task.pending_reason === "agent_offline" && task.pinned_agent_id) {
    return h("div", { class: "small", id: "wait-detail" }, "Its broadcast pinned it to an agent that is not online.");
  }
  return null;
}

// --- one task ---------------------------------------------------------------------------------

export async function renderTask(view, { id, query, signal }) {
  // Opened from a workflow's graph: a way back to it.
  const workflowId = /^[0-9a-f-]{36}$/i.test(query?.get("workflow") || "") ? query.get("workflow") : null;
  const header = h("div", { class: "spread" }, h("h1", {}, "Task"), loading());
  const details = h("dl", { class: "kv", id: "task-details" }, h("dt", { class: "loading" }, "Loading…"));
  const payload = h("pre", { id: "task-payload" }, "…");
  const outcome = h("div", { id: "task-outcome" }, loading());
  const attempts = h("ol", { class: "timeline", id: "task-attempts" }, h("li", { class: "muted" }, "Loading…"));
  const logs = h("pre", { class: "logs", id: "task-logs", "aria-live": "off" });
  const logState = h("span", { class: "muted small", id: "log-state" }, "connecting…");
  const children = h("section", { class: "panel", id: "broadcast-children", hidden: true });
  const webhook = h("section", { class: "panel", id: "task-webhook", hidden: true });
  fill(view, header,
    h("div", { class: "grid" },
      h("section", { class: "panel" }, h("h2", {}, "Details"), details),
      h("section", { class: "panel" }, h("h2", {}, "Result"), outcome)),
    children,
    webhook,
    h("div", { class: "grid" },
      h("section", { class: "panel" }, h("h2", {}, "Payload"), payload),
      h("section", { class: "panel" }, h("h2", {}, "Attempts"), attempts)),
    h("section", { class: "panel" }, h("div", { class: "spread" }, h("h2", {}, "Logs"), logState), logs));

  let task = null;
  let agentNames = new Map();
  const agentName = (agentId) => (agentId ? agentNames.get(agentId) || agentId.slice(0, 8) : "—");

  const act = async (label, method, path, after) => {
    try {
      const result = await api(method, path);
      toast(label);
      after(result);
    } catch (error) {
      toast(errorText(error), true);
    }
  };

  const draw = (attemptList) => {
    const terminal = TERMINAL.has(task.status);
    fill(header,
      h("div", {}, h("h1", { id: "task-name" }, task.name, " ", h("span", { id: "task-status" }, badge(task.status))),
        h("div", { class: "small muted mono" }, task.id)),
      h("div", { class: "row" },
        !terminal ? h("button", { class: "danger", id: "cancel-task", disabled: task.status === "cancelling",
          onclick: () => act("Cancel requested", "DELETE", `/api/tasks/${task.id}`, (t) => { task = t; refresh(); }) }, task.status === "cancelling" ? "Cancelling…" : "Cancel") : null,
        terminal && task.status !== "succeeded" ? h("button", { id: "retry-task",
          onclick: () => act("Retried as a new task", "POST", `/api/tasks/${task.id}/retry`, (t) => { location.hash = `#/tasks/${t.id}`; }) }, "Retry") : null,
        terminal ? h("button", { id: "replay-task", title: "Run it again as a new task with the same spec, linked to this one",
          onclick: () => act("Replayed as a new task", "POST", `/api/tasks/${task.id}/replay`, (t) => { location.hash = `#/tasks/${t.id}`; }) }, "Replay") : null,
        workflowId ? h("a", { class: "button", id: "task-workflow", href: `#/workflows/${workflowId}` }, "Back to the workflow") : null,
        h("a", { class: "button", href: "#/tasks" }, "All tasks")));
    fill(details,
      h("dt", {}, "Task type"), h("dd", {}, task.task_type),
      h("dt", {}, "Priority"), h("dd", {}, task.priority),
      h("dt", {}, "Capabilities"), h("dd", {}, chips(task.required_capabilities)),
      task.pending_reason ? [h("dt", {}, "Waiting"), h("dd", { id: "pending-reason" }, reasonText(task.pending_reason), waitDetail(task, flow))] : null,
      task.concurrency_key ? [h("dt", {}, "Concurrency key"), h("dd", { id: "concurrency-key", class: "key" },
        h("a", { href: waitingHref("concurrency_key", task.concurrency_key), class: "mono" }, task.concurrency_key), " ", keyText(task, flow.key))] : null,
      task.rate_limits?.length ? [h("dt", {}, "Rate limits"), h("dd", { id: "task-rate-limits" }, task.rate_limits.map((use) =>
        h("div", {}, h("a", { href: waitingHref("rate_limit", use.name) }, use.name), ` ${use.units} unit${use.units === 1 ? "" : "s"} per dispatch`,
          rateText(flow.rates.get(use.name)))))] : null,
      task.broadcast_of ? [h("dt", {}, "Broadcast of"), h("dd", {}, h("a", { href: `#/tasks/${task.broadcast_of}`, id: "broadcast-parent" }, task.broadcast_of.slice(0, 8)))] : null,
      task.pinned_agent_id ? [h("dt", {}, "Pinned to"), h("dd", {}, h("a", { href: `#/agents/${task.pinned_agent_id}` }, agentName(task.pinned_agent_id)))] : null,
      h("dt", {}, "Agent"), h("dd", {}, agentName(task.agent_id)),
      h("dt", {}, "Attempts"), h("dd", {}, `${task.attempts} (retries allowed: ${task.max_retries})`),
      h("dt", {}, "Retries"), h("dd", { id: "retry-policy" }, retryText(task)),
      task.progress !== null && task.progress !== undefined ? [h("dt", {}, "Progress"), h("dd", {},
        h("div", { class: "progress" }, h("span", { style: null, dataset: { p: task.progress } })), `${Math.round(task.progress * 100)}%`)] : null,
      h("dt", {}, "Created"), h("dd", {}, when(task.created_at)),
      h("dt", {}, "Scheduled"), h("dd", {}, when(task.scheduled_at)),
      h("dt", {}, "Started"), h("dd", {}, when(task.started_at)),
      h("dt", {}, "Finished"), h("dd", {}, when(task.finished_at), task.started_at && task.finished_at ? ` (ran ${duration(task.started_at, task.finished_at)})` : ""),
      task.timeout_seconds ? [h("dt", {}, "Timeout"), h("dd", {}, `${task.timeout_seconds} s`)] : null,
      task.replay_of ? [h("dt", {}, "Replay of"), h("dd", {}, h("a", { href: `#/tasks/${task.replay_of}`, id: "replay-of" }, task.replay_of.slice(0, 8)))] : null,
      task.cron_job_id ? [h("dt", {}, "Cron job"), h("dd", {}, h("a", { href: `#/cron/${task.cron_job_id}` }, "fired by a cron job"))] : null);
    for (const bar of details.querySelectorAll(".progress span")) bar.style.width = `${Math.round(Number(bar.dataset.p) * 100)}%`;
    payload.textContent = pretty(task.payload);
    if (task.error) fill(outcome, h("p", { class: "error" }, "Error"), h("pre", { id: "task-error" }, task.error));
    else if (task.status === "succeeded") fill(outcome, h("pre", { id: "task-result" }, pretty(task.result)));
    else fill(outcome, h("p", { class: "empty" }, terminal ? "No result." : "Not finished yet."));
    fill(attempts, attemptList.length ? attemptList.map((a) => h("li", { class: a.outcome || (a.started_at ? "running" : "dispatched") },
      h("div", {}, h("strong", {}, `Attempt ${a.number}`), " ", a.outcome ? badge(a.outcome) : badge(a.started_at ? "running" : "dispatched"), " on ", agentName(a.agent_id)),
      h("div", { class: "small muted" }, `dispatched ${when(a.dispatched_at)}`,
        a.started_at ? ` · started after ${duration(a.dispatched_at, a.started_at)}` : "",
        a.finished_at ? ` · ${a.started_at ? "ran" : "ended after"} ${duration(a.started_at || a.dispatched_at, a.finished_at)}` : ""),
      a.error ? h("div", { class: "small error" }, a.error) : null)) : h("li", { class: "muted" }, task.broadcast_policy ? "A broadcast is never dispatched itself: its children run, one per agent (below)." : "Not dispatched yet."));
  };

  // What a waiting task waits on: its key's use and the rate limits it names.
  let flow = { key: null, rates: new Map() };
  const readFlow = async () => {
    const next = { key: null, rates: new Map() };
    const waits = task.status === "pending" || task.status === "waiting";
    if (task.concurrency_key && !TERMINAL.has(task.status)) {
      const keys = await api("GET", `/api/concurrency-keys?${new URLSearchParams({ key: task.concurrency_key })}`, undefined, { signal });
      next.key = keys.items[0] || null;
    }
    if (task.rate_limits?.length && waits) {
      const limits = await api("GET", "/api/rate-limits", undefined, { signal });
      next.rates = new Map(limits.items.map((limit) => [limit.name, limit]));
    }
    flow = next;
  };

  const drawChildren = (items) => {
    children.hidden = false;
    fill(children, h("div", { class: "spread" }, h("h2", {}, "Agents (broadcast)"),
      h("span", { class: "muted small" }, `${task.broadcast_policy === "any" ? "succeeds when one agent succeeds" : "succeeds when every agent succeeds"}`)),
    h("div", { class: "table-wrap" }, h("table", { id: "children-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Agent"), h("th", {}, "Status"), h("th", {}, "Result or error"), h("th", { class: "wide" }, "Finished"))),
      h("tbody", {}, items.length ? items.map((child) => h("tr", { class: "link", dataset: { id: child.id, agent: agentName(child.pinned_agent_id) }, onclick: () => { location.hash = `#/tasks/${child.id}`; } },
        h("td", {}, h("a", { href: `#/tasks/${child.id}` }, agentName(child.pinned_agent_id))),
        h("td", {}, badge(child.status), child.pending_reason ? h("div", { class: "small muted" }, reasonText(child.pending_reason)) : null),
        h("td", { class: "outcome" }, child.error ? h("span", { class: "error small" }, clip(child.error))
          : child.status === "succeeded" ? h("code", {}, clip(JSON.stringify(child.result))) : h("span", { class: "muted" }, "—")),
        h("td", { class: "wide", title: child.finished_at ? when(child.finished_at) : "" }, child.finished_at ? relative(child.finished_at) : "—")))
        : h("tr", {}, h("td", { colspan: 4, class: "empty" }, "No child: no agent matched."))))));
  };

  const refresh = async () => {
    const [fresh, list] = await Promise.all([
      api("GET", `/api/tasks/${id}`, undefined, { signal }),
      api("GET", `/api/tasks/${id}/attempts`, undefined, { signal }),
    ]);
    task = fresh;
    await readFlow();
    draw(list.items);
    if (task.broadcast_policy) drawChildren((await api("GET", `/api/tasks/${id}/children`, undefined, { signal })).items);
    await readWebhook();
  };

  // Its outgoing webhook (docs/webhooks.md): where its final status goes and how that goes.
  let deliveries = [];
  const readWebhook = async () => {
    if (!task.webhook_url) return;
    deliveries = (await api("GET", `/api/tasks/${id}/webhook`, undefined, { signal })).items;
    drawWebhook(webhook, task, deliveries);
  };
  // Still to be told: a delivery is pending (being sent, or waiting for its next attempt).
  const webhookOpen = () => Boolean(task.webhook_url) && deliveries.some((d) => d.state === "pending");

  try {
    agentNames = new Map((await api("GET", "/api/agents", undefined, { signal })).items.map((a) => [a.id, a.name]));
    await refresh();
  } catch (error) {
    if (signal.aborted) return;
    fill(view, h("section", { class: "panel" }, h("h1", {}, "Task"), h("p", { class: "error" }, errorText(error)), h("a", { href: "#/tasks" }, "All tasks")));
    return;
  }

  // Live log tail: the SSE stream sends every line, then `end` once the task finished.
  let lastSeq = 0;
  let ended = false;
  const stop = follow(() => `/api/tasks/${id}/logs/stream?after_seq=${lastSeq}`, (event, data) => {
    if (event === "log") {
      lastSeq = Math.max(lastSeq, data.seq);
      const atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 8;
      logs.append(h("span", { class: data.stream }, h("span", { class: "seq" }, `${data.attempt}│ `), data.line, "\n"));
      if (atBottom) logs.scrollTop = logs.scrollHeight;
      logState.textContent = `${logs.childElementCount} line${logs.childElementCount === 1 ? "" : "s"}, following`;
    } else if (event === "end") {
      ended = true;
      logState.textContent = `${logs.childElementCount} line${logs.childElementCount === 1 ? "" : "s"}, task ${String(data.status).replace("_", " ")}`;
      return false;
    }
    return true;
  }, (connected) => {
    setLive(connected || ended ? true : false);
    if (connected && !logs.childElementCount) logState.textContent = "waiting for output…";
  });
  signal.addEventListener("abort", stop);

  // Status, attempts and progress: re-read every second until the task has finished.
  while (!signal.aborted && !TERMINAL.has(task.status)) {
    await delay(1000, signal);
    if (signal.aborted) break;
    try {
      await refresh();
    } catch (error) {
      if (!signal.aborted) setLive(false);
    }
  }
  // The task ended: its webhook delivery may still be retried; follow it until it settles.
  while (!signal.aborted && webhookOpen()) {
    await delay(1000, signal);
    if (signal.aborted) break;
    try {
      await readWebhook();
    } catch (error) {
      if (!signal.aborted) setLive(false);
    }
  }
}

const DELIVERY_BADGES = { pending: "pending", delivered: "succeeded", given_up: "failed" };

/** The webhook panel: the URL, then each delivery's state, attempts, last answer and times. */
function drawWebhook(section, task, items) {
  section.hidden = false;
  // "HTTP 500" (the error would only repeat it), or why no answer came.
  const last = (d) => {
    const answered = d.last_status_code !== null && d.last_status_code !== undefined;
    const error = d.last_error && !(answered && d.last_error === `answered HTTP ${d.last_status_code}`) ? d.last_error : null;
    if (!answered && !error) return h("span", { class: "muted" }, d.attempts ? "—" : "not sent yet");
    return [answered ? `HTTP ${d.last_status_code}` : null, error ? h("span", { class: "error" }, answered ? ` — ${error}` : error) : null];
  };
  fill(section,
    h("div", { class: "spread" }, h("h2", {}, "Webhook"), h("span", { class: "muted small" }, "its final status is POSTed here, signed, retried until answered 2xx")),
    h("dl", { class: "kv" }, h("dt", {}, "URL"), h("dd", { class: "mono", id: "webhook-url" }, task.webhook_url),
      items.length ? items.map((d) => h("div", { class: "delivery", dataset: { id: d.id, state: d.state } },
        h("dt", {}, "Delivery"), h("dd", { class: "delivery-state" }, badge(DELIVERY_BADGES[d.state] || d.state, d.state.replace("_", " ")),
          h("span", { class: "small muted" }, ` of its ${String(d.status).replace("_", " ")} status · id `, h("span", { class: "mono" }, d.id.slice(0, 8)))),
        h("dt", {}, "Attempts"), h("dd", { class: "delivery-attempts" }, String(d.attempts)),
        h("dt", {}, "Last answer"), h("dd", { class: "delivery-last" }, last(d),
          d.last_attempt_at ? h("span", { class: "small muted", title: when(d.last_attempt_at) }, ` (${relative(d.last_attempt_at)})`) : null),
        d.state === "pending" && d.next_attempt_at ? [h("dt", {}, "Next attempt"),
          h("dd", { class: "delivery-next", title: when(d.next_attempt_at) }, `${when(d.next_attempt_at)} (${relative(d.next_attempt_at)})`)] : null,
        d.delivered_at ? [h("dt", {}, "Delivered"), h("dd", { class: "delivery-delivered" }, when(d.delivered_at))] : null))
        : [h("dt", {}, "Delivery"), h("dd", { class: "muted", id: "webhook-none" }, TERMINAL.has(task.status) ? "none recorded" : "sent once the task ends")]));
}

// --- create -----------------------------------------------------------------------------------

export async function renderTaskForm(view, { signal }) {
  const taskType = h("input", { name: "task_type", required: true, list: "known-task-types", placeholder: "shell", autocomplete: "off" });
  const name = h("input", { name: "name", placeholder: "defaults to the task type" });
  const priority = h("select", { name: "priority" }, PRIORITIES.map((p) => h("option", { value: p, selected: p === "normal" }, p)));
  const capabilities = h("input", { name: "capabilities", placeholder: "e.g. chrome headless" });
  const payload = h("textarea", { name: "payload", spellcheck: "false" }, '{\n  "command": "echo hello"\n}');
  const payloadHint = h("div", { class: "hint", id: "payload-hint" });
  const timeout = h("input", { name: "timeout_seconds", type: "number", min: "0", step: "any", placeholder: "none" });
  const retries = h("input", { name: "max_retries", type: "number", min: "0", step: "1", value: "0" });
  const delaySeconds = h("input", { name: "delay_seconds", type: "number", min: "0", step: "any", placeholder: "0" });
  const formError = h("p", { class: "error", id: "form-error", hidden: true });
  const submit = h("button", { class: "primary", type: "submit" }, "Create task");
  const types = h("datalist", { id: "known-task-types" });

  const check = () => {
    const parsed = parsePayload(payload.value);
    payload.setAttribute("aria-invalid", parsed.error ? "true" : "false");
    payloadHint.className = `hint ${parsed.error ? "bad" : "good"}`;
    payloadHint.textContent = parsed.error || "Valid JSON object";
    submit.disabled = Boolean(parsed.error);
    return parsed;
  };
  payload.addEventListener("input", check);

  const onsubmit = async (event) => {
    event.preventDefault();
    const parsed = check();
    if (parsed.error) return;
    const body = { task_type: taskType.value.trim(), priority: priority.value, payload: parsed.value, required_capabilities: words(capabilities.value) };
    if (name.value.trim()) body.name = name.value.trim();
    if (timeout.value) body.timeout_seconds = Number(timeout.value);
    if (retries.value) body.max_retries = Number(retries.value);
    if (delaySeconds.value) body.delay_seconds = Number(delaySeconds.value);
    submit.disabled = true;
    formError.hidden = true;
    try {
      const task = await api("POST", "/api/tasks", body);
      toast(`Task ${task.name} created`);
      location.hash = `#/tasks/${task.id}`;
    } catch (error) {
      formError.hidden = false;
      formError.textContent = errorText(error);
      const field = error.field && view.querySelector(`[name="${CSS.escape(error.field === "required_capabilities" ? "capabilities" : error.field.split(/[.[]/)[0])}"]`);
      field?.setAttribute("aria-invalid", "true");
      field?.focus();
      submit.disabled = false;
    }
  };

  fill(view,
    h("div", { class: "spread" }, h("h1", {}, "New task"), h("a", { href: "#/tasks" }, "All tasks")),
    h("section", { class: "panel" },
      h("form", { class: "fields", id: "task-form", onsubmit, novalidate: true },
        h("div", { class: "two" },
          h("label", {}, h("span", {}, "Task type"), taskType),
          h("label", {}, h("span", {}, "Name"), name)),
        h("div", { class: "two" },
          h("label", {}, h("span", {}, "Priority"), priority),
          h("label", {}, h("span", {}, "Required capabilities (space separated)"), capabilities)),
        h("label", {}, h("span", {}, "Payload (JSON object)"), payload, payloadHint),
        h("div", { class: "two" },
          h("label", {}, h("span", {}, "Timeout (seconds)"), timeout),
          h("label", {}, h("span", {}, "Retries after a failure"), retries)),
        h("label", {}, h("span", {}, "Start after (seconds)"), delaySeconds),
        formError,
        h("div", { class: "row" }, submit, h("a", { href: "#/tasks" }, "Cancel"))),
      types));
  check();
  taskType.focus();
  try {
    const agents = (await api("GET", "/api/agents", undefined, { signal })).items;
    const known = new Set(["shell", ...agents.flatMap((a) => a.supported_task_types)]);
    fill(types, [...known].sort().map((t) => h("option", { value: t })));
  } catch {
    /* suggestions only */
  }
}
