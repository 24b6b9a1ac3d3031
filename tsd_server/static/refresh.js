// Waiting pages: ask the server for the page again every few seconds, in the background,
// and open it only once it has news (for example, the printer finished linking). Reloading
// every few seconds instead threw the keyboard focus and a screen reader's place back to
// the top each time (WCAG 2.2.1, F41). Without JavaScript the page offers a Refresh link.
// Loaded as a file, never inline (the Content-Security-Policy forbids inline script).
//
// The page marks one element: data-refresh-seconds (how often), data-refresh-url (the page
// to ask for: a GET, even when this page answered a POST), data-refresh-state (what the
// page shows; news is an answer with another state), data-refresh-ended (where to go when
// the page answers with a redirect: what it redirects to has already been told, by a
// flashed message, which asking for it again would lose). Its role="status" element says
// when the news is being opened.
"use strict";
(function () {
  const holder = document.querySelector("[data-refresh-seconds]");
  if (!holder || !window.fetch || !window.DOMParser) return;  // the Refresh link is there
  // The "use Refresh" note is for pages where this script does not run; what the page says
  // about refreshing by itself is true only where it does.
  document.querySelectorAll("[data-without-script]").forEach(function (el) { el.hidden = true; });
  document.querySelectorAll("[data-with-script]").forEach(function (el) { el.hidden = false; });
  const seconds = Math.max(2, Number(holder.dataset.refreshSeconds) || 5);
  const url = holder.dataset.refreshUrl || window.location.href;
  const state = holder.dataset.refreshState;
  const status = holder.querySelector("[role=status]");
  let asking = false;

  function openNews(address) {
    window.clearInterval(timer);
    if (status) status.textContent = "There is news: opening it.";
    // replace(), not reload(): this page may be the answer to a POST.
    window.location.replace(address);
  }

  async function check() {
    if (asking) return;  // a slow answer: one question at a time
    asking = true;
    try {
      const response = await fetch(url, { credentials: "same-origin", redirect: "manual",
        cache: "no-store", headers: { Accept: "text/html" } });
      if (response.type === "opaqueredirect") {
        openNews(holder.dataset.refreshEnded || url);
      } else if (response.ok) {
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        const shown = page.querySelector("[data-refresh-state]");
        if (!shown || shown.dataset.refreshState !== state) openNews(url);
      } else if (!response.headers.has("Retry-After")) {
        // A refusal the page itself shows (switched off, say). With Retry-After the server
        // is busy or cannot read its switches for a moment: ask again next time.
        openNews(url);
      }
    } catch (error) {
      // Offline, or the answer was cut: ask again next time.
    } finally {
      asking = false;
    }
  }

  const timer = window.setInterval(check, seconds * 1000);
})();
