// Limits: flow control in use. The rate limits (units used in the window now, the tasks they
// hold back, when the next unit frees) and the busiest concurrency keys (active of limit, the
// tasks waiting on each), every count linking to the tasks behind it; re-read every 2 seconds.
import { api, badge, fill, h, relative, reload, when } from "./lib.js";

const KEYS = 50;

/** The task list of the pending tasks waiting on a key or a rate limit. */
export function waitingHref(filter, value) {
  return `#/tasks?${new URLSearchParams({ status: "pending", [filter]: value })}`;
}

/** "100 per 60 s", "5 per 1.5 s", "1000 per hour". */
export function perText(limit) {
  const s = limit.per_seconds;
  const window = s === 3600 ? "hour" : s === 86400 ? "day" : s === 60 ? "minute" : `${s} s`;
  return `${limit.limit} per ${window}`;
}

function meter(used, of) {
  const share = of > 0 ? Math.min(1, used / of) : 0;
  const bar = h("span");
  bar.style.width = `${Math.round(share * 100)}%`;
  return h("span", { class: `meter${share >= 1 ? " full" : ""}`, title: `${used} of ${of}` }, bar);
}

export async function renderLimits(view, { query, signal }) {
  const rateBody = h("tbody", {}, h("tr", {}, h("td", { colspan: 5, class: "loading" }, "Loading rate limits…")));
  const keyBody = h("tbody", {}, h("tr", {}, h("td", { colspan: 5, class: "loading" }, "Loading concurrency keys…")));
  const prefix = h("input", { type: "search", name: "prefix", id: "key-prefix", placeholder: "Key prefix, e.g. customer:", value: query.get("prefix") || "", "aria-label": "Key prefix" });
  const keyNote = h("span", { class: "muted small", id: "key-note" });
  const onsubmit = (event) => {
    event.preventDefault();
    const value = prefix.value.trim();
    location.hash = `#/limits${value ? `?${new URLSearchParams({ prefix: value })}` : ""}`;
  };

  fill(view,
    h("div", { class: "spread" }, h("h1", {}, "Limits")),
    h("section", { class: "panel" },
      h("h2", {}, "Rate limits"),
      h("p", { class: "muted small" }, "At most ", h("em", {}, "limit"), " units dispatched in any window, across all nodes. Waiting: due tasks a limit holds back now."),
      h("div", { class: "table-wrap" }, h("table", { id: "rate-limit-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Rate limit"), h("th", {}, "Used now"), h("th", {}, "Waiting"),
          h("th", {}, "Next unit frees"), h("th", { class: "wide" }, "Created"))),
        rateBody))),
    h("section", { class: "panel" },
      h("h2", {}, "Concurrency keys"),
      h("p", { class: "muted small" }, "Keys with unfinished tasks, busiest first. Waiting: due tasks the key's limit holds back now. The strategy (queue, cancel newest, cancel in progress) acts when a task is created."),
      h("form", { class: "row", id: "key-filter", onsubmit }, prefix, h("button", { type: "submit" }, "Filter"),
        query.get("prefix") ? h("a", { href: "#/limits" }, "Clear") : null, keyNote),
      h("div", { class: "table-wrap" }, h("table", { id: "concurrency-key-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Key"), h("th", {}, "Active"), h("th", {}, "Waiting"),
          h("th", { class: "wide" }, "Pending"), h("th", {}, ""))),
        keyBody))));

  const drawRates = (items) => {
    fill(rateBody, items.length ? items.map((limit) => h("tr", { dataset: { name: limit.name } },
      h("td", {}, h("a", { href: waitingHref("rate_limit", limit.name), class: "limit-name" }, h("strong", {}, limit.name)),
        h("div", { class: "small muted per" }, perText(limit))),
      h("td", { class: "num used" }, meter(limit.used, limit.limit), ` ${limit.used} / ${limit.limit}`),
      h("td", { class: "num waiting" }, limit.waiting
        ? h("a", { href: waitingHref("rate_limit", limit.name), class: "count" }, `${limit.waiting} waiting`)
        : h("span", { class: "muted" }, "0")),
      h("td", { class: "next-free", title: limit.next_free_at ? when(limit.next_free_at) : "" },
        limit.next_free_at ? (limit.used >= limit.limit ? relative(limit.next_free_at) : h("span", { class: "muted" }, "units left now")) : h("span", { class: "muted" }, "—")),
      h("td", { class: "wide", title: when(limit.created_at) }, relative(limit.created_at))))
      : h("tr", {}, h("td", { colspan: 5, class: "empty" }, "No rate limit. Create one with POST /api/rate-limits, then name it in a task's rate_limits.")));
  };

  const drawKeys = (items) => {
    keyNote.textContent = items.length >= KEYS ? `the ${KEYS} busiest shown` : "";
    fill(keyBody, items.length ? items.map((key) => h("tr", { dataset: { key: key.key } },
      h("td", { class: "mono key" }, h("a", { href: waitingHref("concurrency_key", key.key) }, key.key)),
      h("td", { class: "num active" }, meter(key.active, key.limit), ` ${key.active} / ${key.limit}`),
      h("td", { class: "num waiting" }, key.waiting
        ? h("a", { href: waitingHref("concurrency_key", key.key), class: "count" }, `${key.waiting} waiting`)
        : h("span", { class: "muted" }, "0")),
      h("td", { class: "wide num" }, String(key.pending)),
      h("td", {}, key.at_limit ? badge("cancelling", "at limit") : null)))
      : h("tr", {}, h("td", { colspan: 5, class: "empty" }, query.get("prefix")
        ? ["No key in use starts with that. ", h("a", { href: "#/limits" }, "All keys")]
        : "No concurrency key in use: no unfinished task has a concurrency_key.")));
  };

  const load = async () => {
    const params = new URLSearchParams({ limit: String(KEYS) });
    if (query.get("prefix")) params.set("prefix", query.get("prefix"));
    const [rates, keys] = await Promise.all([
      api("GET", "/api/rate-limits", undefined, { signal }),
      api("GET", `/api/concurrency-keys?${params}`, undefined, { signal }),
    ]);
    drawRates(rates.items);
    drawKeys(keys.items);
  };
  await reload(load, signal, 2000);
}
