// Times on the pages are written in UTC ("2026-06-01 12:00 UTC"): the server cannot know
// the reader's time zone, and that is what a browser without JavaScript shows. This
// rewrites each <time data-local-time> into the browser's own zone and names the zone
// ("2026-06-01 08:00 Eastern Daylight Time"); the UTC text stays in its title. The
// formats are those of tsd_server/web/times.py. Loaded as a file, never inline (the
// Content-Security-Policy forbids inline script), with defer: the page is parsed by then.
"use strict";
(function () {
  function pad(number) {
    return (number < 10 ? "0" : "") + number;
  }

  // The zone's name in words, as of that date ("Eastern Standard Time", "India Standard
  // Time"; in English, as the page is), or its offset where the browser gives none.
  function zoneName(date) {
    try {
      const parts = new Intl.DateTimeFormat("en", { timeZoneName: "long" }).formatToParts(date);
      const zone = parts.find(function (part) { return part.type === "timeZoneName"; });
      if (zone && zone.value === "Coordinated Universal Time") return "UTC";  // as written
      if (zone && zone.value) return zone.value;
    } catch (error) {
      // No Intl: the offset below.
    }
    const minutes = -date.getTimezoneOffset();
    const sign = minutes < 0 ? "-" : "+";
    const size = Math.abs(minutes);
    return `UTC${sign}${pad(Math.floor(size / 60))}:${pad(size % 60)}`;
  }

  // The date's parts in the browser's zone (Date's getters are local time).
  function localText(date, shown) {
    const day = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
    const clock = `${pad(date.getHours())}:${pad(date.getMinutes())}`;
    const seconds = `:${pad(date.getSeconds())}`;
    if (shown === "time") return clock + seconds;
    if (shown === "seconds") return `${day} ${clock}${seconds}`;
    return `${day} ${clock}`;
  }

  document.querySelectorAll("time[data-local-time]").forEach(function (element) {
    const date = new Date(element.getAttribute("datetime"));
    if (Number.isNaN(date.getTime())) return;  // leave the UTC text as it is
    if (!element.title) element.title = element.textContent.trim();
    element.textContent = `${localText(date, element.dataset.localTime)} ${zoneName(date)}`;
  });
})();
