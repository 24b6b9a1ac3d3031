// Double-clickjacking: another site's "double-click me" button opens one of our pages with
// the first click (top-level, so frame-ancestors cannot help) and the second click lands on
// whatever button is drawn there. Buttons marked data-click-guard are therefore disabled
// for a moment each time the page is shown: a click that comes within HOLD_MS of the page
// appearing (the second of a double-click) presses nothing. A game that makes the person
// wait longer before clicking again is not stopped by this; they have the page before them.
// The HTML draws them enabled: without JavaScript they work at once.
// Loaded without defer, in <head>: the "clicks-held" class (style.css: no pointer events on
// guarded buttons) is set before any of the body is drawn, so no click can reach a button
// between the first paint and the moment the buttons exist to be disabled.
"use strict";
(function () {
  const HOLD_MS = 500;
  const root = document.documentElement;
  let timer = 0;
  let refocus = null;

  function guarded() {
    return document.querySelectorAll("[data-click-guard]");
  }

  function hold() {
    window.clearTimeout(timer);
    // Disabling a focused button drops its focus: keyboard users get it back on release.
    if (document.activeElement && document.activeElement.matches("[data-click-guard]")) {
      refocus = document.activeElement;
    }
    root.classList.add("clicks-held");
    guarded().forEach(function (button) { button.disabled = true; });
    // A hidden page stays held until it is shown again.
    if (document.visibilityState === "visible") timer = window.setTimeout(release, HOLD_MS);
  }

  function release() {
    // Every guarded button, not only those disabled here: Firefox restores a button's
    // disabled state on reload, so one left while held would otherwise stay disabled.
    guarded().forEach(function (button) { button.disabled = false; });
    root.classList.remove("clicks-held");
    if (refocus && document.activeElement === document.body) refocus.focus();
    refocus = null;
  }

  root.classList.add("clicks-held");
  document.addEventListener("DOMContentLoaded", hold);
  document.addEventListener("visibilitychange", hold);
  // A script redrew part of the page (nearby.js): buttons may now sit under the cursor.
  document.addEventListener("click-guard:hold", hold);
  // Restored from the back/forward cache.
  window.addEventListener("pageshow", function (event) { if (event.persisted) hold(); });
  // The window comes to the front again: another site's pop-up over it has just closed.
  window.addEventListener("focus", function (event) { if (event.target === window) hold(); });
})();
