// Runs before the first paint: the saved theme, else the system's preference.
(function () {
  var saved = null;
  try { saved = localStorage.getItem("hetuflow.theme"); } catch (e) { /* storage disabled */ }
  var dark = saved ? saved === "dark" : window.matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
})();
