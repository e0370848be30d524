// The console's entry point: hash routing, theme toggle, live indicator.
import { renderAgent } from "./agent.js";
import { renderAgents } from "./agents.js";
import { renderCronForm, renderCronJobs } from "./cron.js";
import { renderDashboard } from "./dashboard.js";
import { fill, h, setLive, setTimeMode, timeMode } from "./lib.js";
import { renderLimits } from "./limits.js";
import { renderTask, renderTaskForm, renderTasks } from "./tasks.js";
import { renderTaskTypes } from "./types.js";
import { renderWorkflow, renderWorkflows } from "./workflows.js";

const ROUTES = [
  [/^\/?$/, "dashboard", renderDashboard],
  [/^\/tasks\/new$/, "tasks", renderTaskForm],
  [/^\/tasks\/types$/, "tasks", renderTaskTypes],
  [/^\/tasks\/([0-9a-f-]{36})$/i, "tasks", renderTask],
  [/^\/tasks$/, "tasks", renderTasks],
  [/^\/workflows\/([0-9a-f-]{36})$/i, "workflows", renderWorkflow],
  [/^\/workflows$/, "workflows", renderWorkflows],
  [/^\/agents\/([0-9a-f-]{36})$/i, "agents", renderAgent],
  [/^\/agents$/, "agents", renderAgents],
  [/^\/cron\/new$/, "cron", renderCronForm],
  [/^\/cron\/([0-9a-f-]{36})$/i, "cron", renderCronForm],
  [/^\/cron$/, "cron", renderCronJobs],
  [/^\/limits$/, "limits", renderLimits],
];

const view = document.getElementById("view");
let current = null; // AbortController of the page on screen

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  current?.abort();
  current = new AbortController();
  setLive(null);
  for (const [pattern, page, render] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    for (const link of document.querySelectorAll("nav.main a")) {
      link.classList.toggle("active", link.dataset.page === page);
    }
    fill(view);
    view.dataset.page = page;
    render(view, { id: match[1], query: new URLSearchParams(query), signal: current.signal });
    return;
  }
  fill(view, h("div", { class: "panel" }, h("h1", {}, "Not found"), h("a", { href: "#/" }, "Back to the dashboard")));
}

function setupTheme() {
  const button = document.getElementById("theme-toggle");
  const label = () => {
    const dark = document.documentElement.dataset.theme === "dark";
    button.textContent = dark ? "Light" : "Dark";
    button.setAttribute("aria-label", dark ? "Switch to the light theme" : "Switch to the dark theme");
  };
  button.addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    localStorage.setItem("hetuflow.theme", next);
    label();
  });
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", (event) => {
    if (localStorage.getItem("hetuflow.theme")) return;
    document.documentElement.dataset.theme = event.matches ? "dark" : "light";
    label();
  });
  label();
}

// Times: the viewer's zone or UTC, remembered; switching redraws the page on screen.
function setupTime() {
  const button = document.getElementById("time-toggle");
  const label = () => {
    const utc = timeMode() === "utc";
    button.textContent = utc ? "UTC" : "Local time";
    button.setAttribute("aria-label", utc ? "Times in UTC: show them in your time zone" : "Times in your time zone: show them in UTC");
  };
  button.addEventListener("click", () => {
    setTimeMode(timeMode() === "utc" ? "local" : "utc");
    label();
    route();
  });
  label();
}

setupTheme();
setupTime();
window.addEventListener("hashchange", route);
route();
