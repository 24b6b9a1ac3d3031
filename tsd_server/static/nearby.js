// "Printers near you": refresh the list from the JSON API every poll interval.
// The page works without this script (forms and a Refresh link); no inline script (CSP).
// The list is updated in place, card by card (keyed by device id): a card whose printer
// did not change is left alone, so keyboard focus stays where it is. Only the short count
// line (#nearby-count, role=status) is announced, and only when its words change.
// Switched off meanwhile (503 strategy_disabled), or logged out (401 login_required: a
// log-out in another tab, a password change, an administrator), the page is asked for
// again: the server answers with its way-off page, which names the way in the person's
// words and links to the ways still on, or with the log-in page (neither has this script,
// so this cannot go round).
"use strict";
(function () {
  const section = document.getElementById("nearby");
  if (!section || !window.fetch) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const list = document.getElementById("nearby-devices");
  const status = document.getElementById("nearby-status");
  const empty = document.getElementById("nearby-empty");
  const count = document.getElementById("nearby-count");
  const url = (template, id) => template.replace("__ID__", encodeURIComponent(id));
  let last = null;

  function el(tag, props) {
    return Object.assign(document.createElement(tag), props || {});
  }

  // What a card shows: not last_seen (it changes on every announce) nor an offer's
  // expires_in (it changes every second), which the card does not show.
  function shown(device) {
    return JSON.stringify([device.device_id, device.name, device.model || null,
      device.offer ? [device.offer.offer_id, device.offer.status] : null, Boolean(device.busy)]);
  }

  // The same for a card on the page (the server writes it with other spacing).
  function cardShown(card) {
    try {
      return JSON.stringify(JSON.parse(card.dataset.shown));
    } catch (error) {
      return "";
    }
  }

  function item(device) {
    const li = el("li", { className: "card device" });
    li.dataset.device = device.device_id;
    li.dataset.shown = shown(device);
    li.append(el("h2", { textContent: device.name }));
    li.append(el("p", { className: "muted",
      textContent: [device.model, device.device_id].filter(Boolean).join(" · ") }));
    if (device.offer) {
      const link = el("a", { href: url(section.dataset.offerUrl, device.offer.offer_id),
        textContent: "Enter the code" });
      link.setAttribute("aria-label", `Enter the code of “${device.name}”`);
      li.append(link);
    } else if (device.busy) {
      li.append(el("p", { className: "muted", textContent: "Someone else is linking this printer." }));
    } else {
      const form = el("form", { method: "post", action: url(section.dataset.linkUrl, device.device_id) });
      form.append(el("input", { type: "hidden", name: "csrf_token", value: csrf }));
      const button = el("button", { type: "submit", textContent: "Link this printer" });
      button.setAttribute("aria-label", `Link this printer: “${device.name}”`);
      button.dataset.clickGuard = "";
      form.append(button);
      li.append(form);
    }
    return li;
  }

  function countText(data) {
    if (!data.eligible) return data.message || "";
    const n = data.devices.length;
    return n === 0 ? "No printers found" : `${n} ${n === 1 ? "printer" : "printers"} found`;
  }

  // Where the buttons are on the screen, and whose they are.
  function buttonPlaces() {
    return Array.from(list.querySelectorAll("li[data-device] button"), (button) => {
      const box = button.getBoundingClientRect();
      return `${button.closest("li").dataset.device}@${Math.round(box.left)},${Math.round(box.top)}`;
    }).join(" ");
  }

  function cardsById() {
    const cards = new Map();
    list.querySelectorAll(":scope > li[data-device]").forEach((li) => {
      cards.set(li.dataset.device, li);
    });
    return cards;
  }

  // The device whose card holds the focus, if one does.
  function focusedDevice() {
    const active = document.activeElement;
    const card = active && active !== document.body ? active.closest("li[data-device]") : null;
    return card && list.contains(card) ? card.dataset.device : null;
  }

  function update(devices) {
    const focused = focusedDevice();
    const cards = cardsById();
    const wanted = devices.map((device) => {
      const card = cards.get(device.device_id);
      return card && cardShown(card) === shown(device) ? card : item(device);
    });
    const keep = new Set(wanted);
    cards.forEach((card) => { if (!keep.has(card)) card.remove(); });
    // Into their order, moving a card only where it is out of place.
    let cursor = list.firstElementChild;
    wanted.forEach((card) => {
      if (card === cursor) {
        cursor = cursor.nextElementSibling;
      } else {
        list.insertBefore(card, cursor);
      }
    });
    // A card that was replaced or moved took the focus with it: give it back to the same
    // printer's control. (A held button gets it back from click_guard.js on release.)
    if (focused && (!document.activeElement || document.activeElement === document.body)) {
      const card = list.querySelector(`li[data-device="${CSS.escape(focused)}"]`);
      const control = card && card.querySelector("button, a[href]");
      if (control && !control.disabled) control.focus();
    }
  }

  function render(data) {
    const key = JSON.stringify([data.eligible, data.reason, data.message,
      data.devices.map(shown)]);
    if (key === last) return;  // nothing shown changed: leave the page alone
    last = key;
    status.hidden = data.eligible;
    // Why, in words; the reason's code only in data-reason (read out, it means nothing).
    const statusText = data.eligible ? "" : data.message || "";
    if (status.textContent !== statusText) status.textContent = statusText;
    status.dataset.reason = data.eligible ? "" : data.reason || "";
    empty.hidden = !(data.eligible && data.devices.length === 0);
    const before = buttonPlaces();
    update(data.devices);
    const words = countText(data);
    if (count && count.textContent.trim() !== words) count.textContent = words;
    // A button moved, or another printer's is now where one was: a click meant for the
    // button that was there must not press the one drawn there now (static/click_guard.js).
    // An update that moved nothing holds nothing.
    if (buttonPlaces() !== before) document.dispatchEvent(new Event("click-guard:hold"));
  }

  async function refresh() {
    try {
      const response = await fetch(section.dataset.api, {
        credentials: "same-origin", headers: { Accept: "application/json" } });
      const data = await response.json();
      if (response.ok) {
        render(data);
      } else if (data && data.disabled_by === "flag_store_unreadable") {
        // Not a switch-off: the server cannot read its switches for a moment (its
        // database), and says when to ask again. Keep the last list until the next try.
      } else if (data && (data.error === "strategy_disabled" || data.error === "login_required")) {
        // The page's own address, not reload(): a page shown by a refused Link is the
        // answer to a POST, which a reload would send again.
        clearInterval(timer);
        location.replace(section.dataset.page);
      } else if (data && data.error) {
        render({ eligible: false, reason: data.error, message: data.message, devices: [] });
      }
    } catch (error) {
      // Offline, or an answer that is not JSON: keep showing the last list until the next try.
    }
  }

  // The "use Refresh" note is for browsers where this script does not run.
  document.querySelectorAll("[data-without-script]").forEach((note) => { note.hidden = true; });
  // Opened from another site: the page did not look, and neither does this script (it
  // would count this account towards the household's limits); Refresh looks.
  if (section.dataset.looked === "no") return;
  const seconds = Math.max(2, Number(section.dataset.poll) || 5);
  const timer = setInterval(refresh, seconds * 1000);
})();
