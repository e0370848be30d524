// A cron job's tick history: every settled tick, fired on time, fired late or skipped, and why
// (GET /api/cron-jobs/{id}/ticks), with the task it created.
import { badge, displayZone, duration, fill, h, when } from "./lib.js";

/** A fired tick settled this long after its instant counts as late (the loop wakes each second). */
export const LATE_AFTER_MS = 5000;

/** "on_time", "late" or "skipped". */
export function tickKind(tick) {
  if (tick.outcome !== "fired") return "skipped";
  const lateMs = new Date(tick.recorded_at) - new Date(tick.tick_at);
  return lateMs > LATE_AFTER_MS || (tick.reason && /late|ran once|waited/.test(tick.reason)) ? "late" : "on_time";
}

const KIND_BADGE = { on_time: ["succeeded", "fired"], late: ["cancelling", "fired late"], skipped: ["cancelled", "skipped"] };

/** Fill `panel` with the history of `job` from `ticks` (newest first). */
export function drawTicks(panel, job, ticks) {
  const kinds = ticks.map(tickKind);
  const count = (kind) => kinds.filter((k) => k === kind).length;
  const tally = h("div", { class: "row small", id: "tick-counts" },
    h("span", { class: "count-chip", dataset: { kind: "on_time" } }, h("i", { class: "fill-succeeded" }), `${count("on_time")} fired on time`),
    h("span", { class: "count-chip", dataset: { kind: "late" } }, h("i", { class: "fill-cancelling" }), `${count("late")} fired late`),
    h("span", { class: "count-chip", dataset: { kind: "skipped" } }, h("i", { class: "fill-cancelled" }), `${count("skipped")} skipped`));
  fill(panel,
    h("div", { class: "spread" }, h("h2", {}, "Tick history"),
      h("div", { class: "row" }, ticks.length ? tally : null, h("a", { class: "small", href: `#/tasks?cron_job_id=${job.id}`, id: "cron-tasks" }, "All its tasks"))),
    ticks.length ? h("div", { class: "table-wrap" }, h("table", { id: "cron-ticks" },
      h("thead", {}, h("tr", {}, h("th", {}, `Tick (${job.timezone})`), h("th", {}, "Outcome"), h("th", {}, "Settled"), h("th", {}, "Why"), h("th", {}, "Task"))),
      h("tbody", {}, ticks.map((tick, i) => {
        const kind = kinds[i];
        const [status, label] = KIND_BADGE[kind];
        const lateBy = duration(tick.tick_at, tick.recorded_at);
        return h("tr", { dataset: { kind, tick: tick.tick_at } },
          h("td", {}, when(tick.tick_at, job.timezone), job.timezone !== displayZone() ? h("div", { class: "small muted" }, when(tick.tick_at)) : null),
          h("td", {}, badge(status, label)),
          h("td", { class: "small", title: when(tick.recorded_at) }, kind === "late" ? `${lateBy} after the tick` : kind === "on_time" ? "on time" : `${lateBy} after the tick`),
          h("td", { class: "small" }, tick.reason || (kind === "on_time" ? "—" : "")),
          h("td", {}, tick.task_id ? h("a", { href: `#/tasks/${tick.task_id}`, class: "mono small" }, tick.task_id.slice(0, 8)) : "—"));
      })))) : h("p", { class: "empty" }, "No tick yet: the history fills as the schedule fires (or Run now)."));
}
