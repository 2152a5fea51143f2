// registry-cache dashboard: swaps in fresh server-rendered sections.
// Fills every second, everything else every 5 s; nothing while the tab is hidden,
// paused by the button, or while keyboard focus is inside the section to replace.
"use strict";
(function () {
  const FAST_MS = 1000;
  const SLOW_MS = 5000;
  const SLOW_PARTS = ["summary", "charts", "upstreams", "disk", "cluster", "top", "recent"];
  const pause = document.getElementById("pause");
  const updated = document.getElementById("updated");
  let paused = false;
  const busy = {};

  pause.addEventListener("click", function () {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume updates" : "Pause updates";
  });

  function stamp(ok) {
    updated.textContent = ok
      ? new Date().toISOString().slice(11, 19) + " UTC"
      : "update failed, retrying";
  }

  async function refresh(names) {
    const key = names.join(",");
    if (paused || document.hidden || busy[key]) {
      return;
    }
    busy[key] = true;
    try {
      const response = await fetch("/dashboard/parts?only=" + encodeURIComponent(key), {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
        cache: "no-store",
      });
      if (!response.ok) {
        stamp(false);
        return;
      }
      const parts = await response.json();
      for (const name of names) {
        const target = document.querySelector('[data-part="' + name + '"]');
        if (!target || typeof parts[name] !== "string") {
          continue;
        }
        if (target.contains(document.activeElement)) {
          continue; // never take focus away from a keyboard user
        }
        target.innerHTML = parts[name]; // rendered and escaped by the server
      }
      stamp(true);
    } catch (error) {
      stamp(false);
    } finally {
      busy[key] = false;
    }
  }

  setInterval(function () { refresh(["fills"]); }, FAST_MS);
  setInterval(function () { refresh(SLOW_PARTS); }, SLOW_MS);
})();
