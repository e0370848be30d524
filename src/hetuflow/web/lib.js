// Shared helpers of the console: DOM building, the API client (with the bearer token), SSE
// over fetch, formatting. No framework: every page is a function that fills an element.

const TOKEN_KEY = "hetuflow.token";

/** h("div", {class: "x", onclick: f}, child, ...) — children are nodes or text (never HTML). */
export function h(tag, attrs = {}, ...children) {
  const svg = tag.startsWith("svg:");
  const el = svg
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (!svg && key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace an element's content. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
    this.field = error.field;
  }
}

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

let tokenPrompt = null;

/** Ask for a token (one dialog however many calls got a 401); resolves once one is given. */
export function askToken() {
  if (tokenPrompt) return tokenPrompt;
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  tokenPrompt = new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        const token = input.value.trim();
        if (token) sessionStorage.setItem(TOKEN_KEY, token);
        input.value = "";
        tokenPrompt = null;
        resolve();
      },
      { once: true },
    );
    dialog.showModal();
    input.focus();
  });
  return tokenPrompt;
}

/** Call the REST API. Resolves to the parsed JSON (or null); rejects with an ApiError. */
export async function api(method, path, body, { signal } = {}) {
  for (;;) {
    const headers = { Accept: "application/json", ...authHeaders() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      signal,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) {
      await askToken();
      continue;
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = { error: { code: `http_${response.status}`, message: text.slice(0, 200) } };
    }
    if (!response.ok) {
      throw new ApiError(response.status, (data && data.error) || { message: `HTTP ${response.status}` });
    }
    return data;
  }
}

/**
 * Follow a Server-Sent Events stream with fetch (so the bearer token can be sent), reconnecting
 * after a drop. onEvent(name, data) gets each event (data parsed as JSON when it is JSON);
 * onState(connected) reports the connection. Returns a function that stops it.
 */
export function follow(path, onEvent, onState = () => {}) {
  const controller = new AbortController();
  let retryMs = 2000;
  const run = async () => {
    while (!controller.signal.aborted) {
      try {
        const url = typeof path === "function" ? path() : path;
        const response = await fetch(url, {
          headers: { Accept: "text/event-stream", ...authHeaders() },
          signal: controller.signal,
        });
        if (response.status === 401) {
          onState(false);
          await askToken();
          continue;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        onState(true);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n?/g, "\n");
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const parsed = parseEvent(block);
            if (parsed.retry) retryMs = parsed.retry;
            if (parsed.data !== null && onEvent(parsed.event, parsed.data) === false) {
              controller.abort();
            }
          }
        }
      } catch (error) {
        if (controller.signal.aborted) break;
      }
      onState(false);
      if (!controller.signal.aborted) await delay(retryMs, controller.signal);
    }
  };
  run();
  return () => controller.abort();
}

function parseEvent(block) {
  let event = "message";
  const lines = [];
  let retry = 0;
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") lines.push(value);
    else if (field === "retry" && /^\d+$/.test(value)) retry = Number(value);
  }
  if (!lines.length) return { event, data: null, retry };
  const text = lines.join("\n");
  try {
    return { event, data: JSON.parse(text), retry };
  } catch {
    return { event, data: text, retry };
  }
}

export function delay(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

// --- live indicator -------------------------------------------------------------------------

/** Live indicator in the header: true (streaming), false (reconnecting), null (not live). */
export function setLive(state) {
  const live = document.getElementById("live");
  live.hidden = state === null;
  live.classList.toggle("on", state === true);
  live.textContent = state ? "live" : "reconnecting";
}

/** Run ``load`` now and every ``everyMs`` while ``signal`` holds: the header's live mark says
 * whether the last one worked, a failure is also shown as a toast. */
export async function reload(load, signal, everyMs) {
  while (!signal.aborted) {
    try {
      await load();
      setLive(true);
    } catch (error) {
      if (signal.aborted) return;
      setLive(false);
      toast(errorText(error), true);
    }
    await delay(everyMs, signal);
  }
}

// --- messages ---------------------------------------------------------------------------------

let toastTimer = 0;
export function toast(message, bad = false) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = bad ? "bad" : "";
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, bad ? 6000 : 3000);
}

export function errorText(error) {
  if (error instanceof ApiError) return error.field ? `${error.message} (${error.field})` : error.message;
  return String(error && error.message ? error.message : error);
}

// --- formatting -------------------------------------------------------------------------------

export const STATUSES = ["waiting", "pending", "dispatched", "running", "cancelling", "succeeded", "failed", "timed_out", "cancelled", "skipped"];
export const TERMINAL = new Set(["succeeded", "failed", "timed_out", "cancelled", "skipped"]);

export function badge(status, label) {
  return h("span", { class: `badge ${status}` }, label ?? String(status).replace("_", " "));
}

export function chips(values) {
  return values && values.length ? values.map((value) => h("span", { class: "chip" }, value)) : h("span", { class: "muted" }, "—");
}

// Times are shown 24-hour with their zone, in the viewer's zone or in UTC (the header's toggle,
// remembered in localStorage).
const TIME_KEY = "hetuflow.time";

export const viewerZone = Intl.DateTimeFormat().resolvedOptions().timeZone;

/** "utc" or "local". */
export function timeMode() {
  try {
    return localStorage.getItem(TIME_KEY) === "utc" ? "utc" : "local";
  } catch {
    return "local";
  }
}

export function setTimeMode(mode) {
  localStorage.setItem(TIME_KEY, mode === "utc" ? "utc" : "local");
}

/** The zone times are shown in: "UTC" or the viewer's. */
export function displayZone() {
  return timeMode() === "utc" ? "UTC" : viewerZone;
}

const formats = new Map();
function format(timeZone, options) {
  const key = `${timeZone}|${JSON.stringify(options)}`;
  if (!formats.has(key)) {
    try {
      formats.set(key, new Intl.DateTimeFormat(undefined, { ...options, hourCycle: "h23", timeZone }));
    } catch {
      formats.set(key, new Intl.DateTimeFormat(undefined, { ...options, hourCycle: "h23", timeZone: "UTC" }));
    }
  }
  return formats.get(key);
}

/** A timestamp, 24-hour with its zone: in the display zone, or in `timeZone` when given. */
export function when(iso, timeZone) {
  if (!iso) return "—";
  return format(timeZone || displayZone(), { dateStyle: "medium", timeStyle: "long" }).format(new Date(iso));
}

/** "14:05" in the display zone (chart labels). */
export function clock(date, { seconds = false } = {}) {
  const options = seconds ? { hour: "2-digit", minute: "2-digit", second: "2-digit" } : { hour: "2-digit", minute: "2-digit" };
  return format(displayZone(), options).format(date);
}

/** "Dec 6" in the display zone (chart labels over days). */
export function day(date) {
  return format(displayZone(), { month: "short", day: "numeric" }).format(date);
}

/** The element shown while a part of a page waits for its first data. */
export function loading(text = "Loading…") {
  return h("p", { class: "loading", role: "status" }, text);
}

/** "12 s ago", "in 3 min". */
export function relative(iso, now = Date.now()) {
  if (!iso) return "—";
  const seconds = Math.round((new Date(iso).getTime() - now) / 1000);
  const abs = Math.abs(seconds);
  const text = abs < 60 ? `${abs} s` : abs < 3600 ? `${Math.round(abs / 60)} min` : abs < 86400 ? `${Math.round(abs / 3600)} h` : `${Math.round(abs / 86400)} d`;
  return seconds < 0 ? `${text} ago` : seconds === 0 ? "now" : `in ${text}`;
}

/** Seconds as "850 ms", "4.2 s", "3 min 5 s", "2 h 10 min"; "—" for null. */
export function seconds(value) {
  if (value === null || value === undefined) return "—";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 60) return `${value.toFixed(1)} s`;
  if (value < 3600) return `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
  return `${Math.floor(value / 3600)} h ${Math.round((value % 3600) / 60)} min`;
}

export function duration(fromIso, toIso) {
  if (!fromIso || !toIso) return "";
  const ms = new Date(toIso) - new Date(fromIso);
  return ms < 1000 ? `${ms} ms` : ms < 60000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

/** Parse text as a JSON object for a payload field: {value} or {error: "line 2: ..."}. */
export function parsePayload(text) {
  if (!text.trim()) return { value: {} };
  try {
    const value = JSON.parse(text);
    if (value === null || typeof value !== "object" || Array.isArray(value)) return { error: "the payload must be a JSON object ({...})" };
    return { value };
  } catch (error) {
    const match = /position (\d+)/.exec(error.message);
    if (match) {
      const before = text.slice(0, Number(match[1]));
      const line = before.split("\n").length;
      const column = before.length - before.lastIndexOf("\n");
      return { error: `${error.message.replace(/ in JSON at position \d+.*$/, "")} at line ${line}, column ${column}` };
    }
    return { error: error.message };
  }
}

/** "a, b c" -> ["a", "b", "c"] */
export function words(text) {
  return text.split(/[\s,]+/).map((word) => word.trim()).filter(Boolean);
}

export function pretty(value) {
  return JSON.stringify(value, null, 2);
}
