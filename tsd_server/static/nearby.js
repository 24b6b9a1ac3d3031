// "Printers near you": refresh the list from the JSON API every poll interval.
// The page works without this script (forms and a Refresh link); no inline script (CSP).
"use strict";
(function () {
  const section = document.getElementById("nearby");
  if (!section || !window.fetch) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const list = document.getElementById("nearby-devices");
  const status = document.getElementById("nearby-status");
  const empty = document.getElementById("nearby-empty");
  const url = (template, id) => template.replace("__ID__", encodeURIComponent(id));
  let last = "";

  function el(tag, props) {
    return Object.assign(document.createElement(tag), props || {});
  }

  function item(device) {
    const li = el("li", { className: "card device" });
    li.dataset.device = device.device_id;
    li.append(el("h2", { textContent: device.name }));
    li.append(el("p", { className: "muted",
      textContent: [device.model, device.device_id].filter(Boolean).join(" · ") }));
    if (device.offer) {
      li.append(el("a", { href: url(section.dataset.offerUrl, device.offer.offer_id),
        textContent: "Enter the code" }));
    } else if (device.busy) {
      li.append(el("p", { className: "muted", textContent: "Someone else is linking this printer." }));
    } else {
      const form = el("form", { method: "post", action: url(section.dataset.linkUrl, device.device_id) });
      form.append(el("input", { type: "hidden", name: "csrf_token", value: csrf }));
      const button = el("button", { type: "submit", textContent: "Link this printer" });
      button.dataset.clickGuard = "";
      form.append(button);
      li.append(form);
    }
    return li;
  }

  // Where the buttons are on the screen, and whose they are.
  function buttonPlaces() {
    return Array.from(list.querySelectorAll("li[data-device] button"), (button) => {
      const box = button.getBoundingClientRect();
      return `${button.closest("li").dataset.device}@${Math.round(box.left)},${Math.round(box.top)}`;
    }).join(" ");
  }

  function render(data) {
    const text = JSON.stringify(data);
    if (text === last) return;  // unchanged: keep focus and scroll where they are
    last = text;
    status.hidden = data.eligible;
    status.textContent = data.eligible ? "" : `${data.message} (reason: ${data.reason})`;
    empty.hidden = !(data.eligible && data.devices.length === 0);
    const before = buttonPlaces();
    list.replaceChildren(...data.devices.map(item));
    // A button moved, or another printer's is now where one was: a click meant for the
    // button that was there must not press the one drawn there now (static/click_guard.js).
    // A redraw that moved nothing (a last-seen time, an offer's countdown) holds nothing.
    if (buttonPlaces() !== before) document.dispatchEvent(new Event("click-guard:hold"));
  }

  async function refresh() {
    try {
      const response = await fetch(section.dataset.api, {
        credentials: "same-origin", headers: { Accept: "application/json" } });
      const data = await response.json();
      if (response.ok) {
        render(data);
      } else if (data && data.error) {
        render({ eligible: false, reason: data.error, message: data.message, devices: [] });
      }
    } catch (error) {
      // Offline or logged out: keep showing the last list until the next try.
    }
  }

  // The "use Refresh" note is for browsers where this script does not run.
  document.querySelectorAll("[data-without-script]").forEach((note) => { note.hidden = true; });
  // Opened from another site: the page did not look, and neither does this script (it
  // would count this account towards the household's limits); Refresh looks.
  if (section.dataset.looked === "no") return;
  const seconds = Math.max(2, Number(section.dataset.poll) || 5);
  setInterval(refresh, seconds * 1000);
})();
