// Cron jobs: the list (next fire in the job's time zone and the viewer's), enable / disable,
// run now, and the create / edit form with live expression validation and a preview.
import {
  api, badge, chips, delay, errorText, fill, h, parsePayload, pretty, relative, setLive, toast,
  displayZone, viewerZone, when, words,
} from "./lib.js";
import { drawTicks } from "./cron_ticks.js";
import { waitingHref } from "./limits.js";

const PRIORITIES = ["low", "normal", "high", "critical"];
const MISFIRE = ["run_once", "skip", "catch_up"];
const OVERLAP = ["allow", "skip", "queue", "cancel_previous"];

const fireTimes = (data) => (Array.isArray(data) ? data : data.fire_times || data.items || []);
const listOf = (data) => (Array.isArray(data) ? data : data.items || []);

// --- list -------------------------------------------------------------------------------------

export async function renderCronJobs(view, { signal }) {
  const body = h("tbody", {}, h("tr", {}, h("td", { colspan: 6, class: "loading" }, "Loading…")));
  fill(view,
    h("div", { class: "spread" }, h("h1", {}, "Cron jobs"), h("a", { class: "button primary", href: "#/cron/new" }, "New cron job")),
    h("section", { class: "panel" }, h("div", { class: "table-wrap" }, h("table", { id: "cron-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Cron job"), h("th", {}, "Schedule"), h("th", {}, "Next fire"),
        h("th", { class: "wide" }, `In ${displayZone()}`), h("th", { class: "wide" }, "Last fire"), h("th", {}, ""))),
      body))));

  let jobs = [];
  const act = async (job, action, message) => {
    try {
      const result = await api("POST", `/api/cron-jobs/${job.id}/${action}`);
      toast(message);
      if (action === "trigger" && result && (result.id || result.task_id)) {
        toast(`${message}: task created`);
      }
      await load();
    } catch (error) {
      toast(errorText(error), true);
    }
  };
  const draw = () => {
    fill(body, jobs.length ? jobs.map((job) => h("tr", { dataset: { id: job.id, name: job.name } },
      h("td", {}, h("a", { href: `#/cron/${job.id}` }, h("strong", {}, job.name)), " ", job.enabled ? null : badge("disabled"),
        h("div", { class: "small muted" }, job.workflow ? `workflow ${job.workflow.name}` : job.task_type)),
      h("td", {}, h("code", {}, job.cron_expression), h("div", { class: "small muted" }, job.timezone)),
      h("td", { class: "next-fire" }, job.enabled && job.next_fire_at ? [relative(job.next_fire_at),
        h("div", { class: "small muted" }, `${when(job.next_fire_at, job.timezone)} (${job.timezone})`)] : h("span", { class: "muted" }, "—")),
      h("td", { class: "wide" }, job.enabled && job.next_fire_at ? when(job.next_fire_at) : "—"),
      h("td", { class: "wide" }, job.last_fire_at ? relative(job.last_fire_at) : "never"),
      h("td", {}, h("div", { class: "row" },
        h("button", { class: "run-now", onclick: () => act(job, "trigger", `${job.name} fired`) }, "Run now"),
        job.enabled
          ? h("button", { class: "disable", onclick: () => act(job, "disable", `${job.name} disabled`) }, "Disable")
          : h("button", { class: "enable", onclick: () => act(job, "enable", `${job.name} enabled`) }, "Enable"))))) : h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No cron job yet. ", h("a", { href: "#/cron/new" }, "Create one"), " to run a task on a schedule.")));
  };
  const load = async () => {
    jobs = listOf(await api("GET", "/api/cron-jobs", undefined, { signal }));
    draw();
  };
  let ticks = 0;
  while (!signal.aborted) {
    if (ticks % 5 === 0) {
      try {
        await load();
        setLive(true);
      } catch (error) {
        if (signal.aborted) return;
        setLive(false);
        toast(errorText(error), true);
      }
    } else {
      draw(); // "in 12 s" moves every second
    }
    ticks += 1;
    await delay(1000, signal);
  }
}

// --- create and edit --------------------------------------------------------------------------

export async function renderCronForm(view, { id, signal }) {
  let job = null;
  if (id) {
    try {
      job = await api("GET", `/api/cron-jobs/${id}`, undefined, { signal });
    } catch (error) {
      if (!signal.aborted) fill(view, h("section", { class: "panel" }, h("p", { class: "error" }, errorText(error)), h("a", { href: "#/cron" }, "All cron jobs")));
      return;
    }
  }
  const v = (key, fallback) => (job && job[key] !== undefined && job[key] !== null ? job[key] : fallback);
  const name = h("input", { name: "name", required: true, value: v("name", "") });
  const expression = h("input", { name: "cron_expression", required: true, class: "mono", value: v("cron_expression", "*/5 * * * *"), autocomplete: "off", spellcheck: "false" });
  const zone = h("input", { name: "timezone", value: v("timezone", viewerZone), list: "time-zones", autocomplete: "off" });
  const zones = h("datalist", { id: "time-zones" }, (Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : ["UTC"]).map((z) => h("option", { value: z })));
  const taskType = h("input", { name: "task_type", required: true, value: v("task_type", "shell") });
  const priority = h("select", { name: "priority" }, PRIORITIES.map((p) => h("option", { value: p, selected: p === v("priority", "normal") }, p)));
  const capabilities = h("input", { name: "capabilities", value: v("required_capabilities", []).join(" ") });
  const payload = h("textarea", { name: "payload", spellcheck: "false" }, pretty(v("payload", { command: "date" })));
  const payloadHint = h("div", { class: "hint" });
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: v("enabled", true) });
  const misfire = h("select", { name: "misfire_policy" }, MISFIRE.map((p) => h("option", { value: p, selected: p === v("misfire_policy", "run_once") }, p.replace("_", " "))));
  const overlap = h("select", { name: "overlap_policy" }, OVERLAP.map((p) => h("option", { value: p, selected: p === v("overlap_policy", "allow") }, p.replace("_", " "))));
  const exprHint = h("div", { class: "hint", id: "expression-hint" });
  const preview = h("ol", { id: "cron-preview", class: "small" });
  const formError = h("p", { class: "error", id: "form-error", hidden: true });
  const submit = h("button", { class: "primary", type: "submit" }, job ? "Save" : "Create cron job");
  const extra = h("div", { class: "stack" });
  const history = h("section", { class: "panel", id: "tick-history" }, h("h2", {}, "Tick history"), h("p", { class: "loading", role: "status" }, "Loading…"));

  let previewOk = true;
  let payloadOk = true;
  const update = () => { submit.disabled = !(previewOk && payloadOk); };
  const checkPayload = () => {
    const parsed = parsePayload(payload.value);
    payloadOk = !parsed.error;
    payload.setAttribute("aria-invalid", String(!payloadOk));
    payloadHint.className = `hint ${payloadOk ? "good" : "bad"}`;
    payloadHint.textContent = parsed.error || "Valid JSON object";
    update();
    return parsed;
  };
  let previewTimer = 0;
  let previewSeq = 0;
  const runPreview = async () => {
    const seq = ++previewSeq;
    const tz = zone.value.trim() || "UTC";
    try {
      const data = await api("POST", "/api/cron-jobs/preview", { cron_expression: expression.value.trim(), timezone: tz, count: 5 }, { signal });
      if (seq !== previewSeq) return;
      previewOk = true;
      expression.setAttribute("aria-invalid", "false");
      zone.setAttribute("aria-invalid", "false");
      exprHint.className = "hint good";
      exprHint.textContent = "Valid expression. Next fires:";
      fill(preview, fireTimes(data).map((t) => h("li", {}, `${when(t, tz)} (${tz})`, h("span", { class: "muted" }, ` · ${when(t)} your time · ${relative(t)}`))));
    } catch (error) {
      if (seq !== previewSeq || signal.aborted) return;
      previewOk = false;
      const onZone = error.field === "timezone";
      expression.setAttribute("aria-invalid", String(!onZone));
      zone.setAttribute("aria-invalid", String(onZone));
      exprHint.className = "hint bad";
      exprHint.textContent = errorText(error);
      fill(preview);
    }
    update();
  };
  const schedulePreview = () => {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(runPreview, 250);
  };
  expression.addEventListener("input", schedulePreview);
  zone.addEventListener("input", schedulePreview);
  zone.addEventListener("change", schedulePreview);
  payload.addEventListener("input", checkPayload);

  const onsubmit = async (event) => {
    event.preventDefault();
    const parsed = checkPayload();
    if (parsed.error || !previewOk) return;
    const body = {
      name: name.value.trim(), cron_expression: expression.value.trim(), timezone: zone.value.trim() || "UTC",
      task_type: taskType.value.trim(), priority: priority.value, payload: parsed.value,
      required_capabilities: words(capabilities.value), enabled: enabled.checked,
      misfire_policy: misfire.value, overlap_policy: overlap.value,
    };
    submit.disabled = true;
    formError.hidden = true;
    try {
      const saved = job ? await api("PATCH", `/api/cron-jobs/${job.id}`, body) : await api("POST", "/api/cron-jobs", body);
      toast(job ? "Saved" : `Cron job ${saved.name} created`);
      if (job) renderCronForm(view, { id: saved.id, signal });
      else location.hash = `#/cron/${saved.id}`;
    } catch (error) {
      formError.hidden = false;
      formError.textContent = errorText(error);
      const field = error.field && view.querySelector(`[name="${CSS.escape(error.field.split(/[.[]/)[0])}"]`);
      field?.setAttribute("aria-invalid", "true");
      field?.focus();
      submit.disabled = false;
    }
  };
  const remove = async () => {
    if (!confirm(`Delete the cron job ${job.name}? Tasks it created are kept.`)) return;
    try {
      await api("DELETE", `/api/cron-jobs/${job.id}`);
      toast("Deleted");
      location.hash = "#/cron";
    } catch (error) {
      toast(errorText(error), true);
    }
  };

  fill(view,
    h("div", { class: "spread" }, h("h1", {}, job ? job.name : "New cron job"), h("div", { class: "row" },
      job ? h("button", { onclick: async () => {
        try { await api("POST", `/api/cron-jobs/${job.id}/trigger`); toast("Fired: a task was created"); loadExtra(); } catch (error) { toast(errorText(error), true); }
      } }, "Run now") : null,
      job ? h("button", { class: "danger", onclick: remove }, "Delete") : null,
      h("a", { href: "#/cron" }, "All cron jobs"))),
    h("div", { class: "grid" },
      h("section", { class: "panel" },
        h("form", { class: "fields", id: "cron-form", onsubmit, novalidate: true },
          h("label", {}, h("span", {}, "Name"), name),
          h("div", { class: "two" },
            h("label", {}, h("span", {}, "Cron expression (5 fields, or 6 with seconds)"), expression),
            h("label", {}, h("span", {}, "Time zone"), zone)),
          exprHint, preview, zones,
          h("div", { class: "two" },
            h("label", {}, h("span", {}, "Task type"), taskType),
            h("label", {}, h("span", {}, "Priority"), priority)),
          h("label", {}, h("span", {}, "Required capabilities (space separated)"), capabilities),
          h("label", {}, h("span", {}, "Payload (JSON object)"), payload, payloadHint),
          h("div", { class: "two" },
            h("label", {}, h("span", {}, "Missed ticks"), misfire),
            h("label", {}, h("span", {}, "While the previous task runs"), overlap)),
          h("label", { class: "check" }, enabled, "Enabled"),
          formError,
          h("div", { class: "row" }, submit, h("a", { href: "#/cron" }, "Cancel")))),
      job ? extra : null),
    job ? history : null);

  const loadExtra = async () => {
    if (!job) return;
    try {
      const [fires, ticks] = await Promise.all([
        api("GET", `/api/cron-jobs/${job.id}/next-fires?count=10`, undefined, { signal }),
        api("GET", `/api/cron-jobs/${job.id}/ticks`, undefined, { signal }),
      ]);
      fill(extra,
        h("section", { class: "panel" }, h("h2", {}, "Next fires"),
          h("dl", { class: "kv small", id: "cron-flow" }, h("dt", {}, "Enabled"), h("dd", {}, job.enabled ? "yes" : "no"),
            h("dt", {}, "Capabilities"), h("dd", {}, chips(job.required_capabilities)),
            flowRows(job)),
          h("ol", { id: "next-fires", class: "small" }, fireTimes(fires).map((t) => h("li", {}, `${when(t, job.timezone)} (${job.timezone})`,
            h("div", { class: "muted" }, `${when(t)} (${displayZone()}), ${relative(t)}`))))));
      drawTicks(history, job, listOf(ticks));
    } catch (error) {
      if (!signal.aborted) fill(extra, h("p", { class: "error" }, errorText(error)));
    }
  };
  checkPayload();
  runPreview();
  if (job) {
    loadExtra();
    while (!signal.aborted) {
      await delay(3000, signal);
      if (!signal.aborted) await loadExtra();
    }
  }
}

/** What every task of the job carries for flow control and reporting: its webhook, its
 * concurrency key and limit, the rate limits it names (each linking to the tasks it holds). */
function flowRows(job) {
  const uses = job.rate_limits || [];
  return [
    h("dt", {}, "Webhook"), h("dd", { id: "cron-webhook-url", class: job.webhook_url ? "mono" : "muted" }, job.webhook_url || "none"),
    h("dt", {}, "Concurrency key"), h("dd", { id: "cron-concurrency-key" }, job.concurrency_key
      ? [h("a", { href: waitingHref("concurrency_key", job.concurrency_key), class: "mono" }, job.concurrency_key),
        job.max_concurrent_per_key ? ` (at most ${job.max_concurrent_per_key} at once)` : "",
        job.concurrency_strategy && job.concurrency_strategy !== "queue" ? `, ${job.concurrency_strategy}` : ""]
      : h("span", { class: "muted" }, "none")),
    h("dt", {}, "Rate limits"), h("dd", { id: "cron-rate-limits" }, uses.length
      ? uses.map((use, i) => [i ? ", " : "", h("a", { href: waitingHref("rate_limit", use.name) }, use.name), ` ${use.units} unit${use.units === 1 ? "" : "s"}`])
      : h("span", { class: "muted" }, "none")),
  ];
}
