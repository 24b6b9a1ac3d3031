// Waiting pages: reload every few seconds until the server has news (for example, the
// printer finished linking). Without JavaScript the page offers a Refresh link instead.
// Loaded as a file, never inline (the Content-Security-Policy forbids inline script).
"use strict";
(function () {
  const holder = document.querySelector("[data-refresh-seconds]");
  if (!holder) return;
  // The "use Refresh" note is for pages where this script does not run; what the page says
  // about refreshing by itself is true only where it does.
  document.querySelectorAll("[data-without-script]").forEach(function (el) { el.hidden = true; });
  document.querySelectorAll("[data-with-script]").forEach(function (el) { el.hidden = false; });
  const seconds = Math.max(2, Number(holder.dataset.refreshSeconds) || 5);
  window.setTimeout(function () { window.location.reload(); }, seconds * 1000);
})();
