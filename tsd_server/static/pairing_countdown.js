// Counts down the lifetime of a pairing code shown on the page. Without JavaScript the page
// still says when the code expires; this only adds "mm:ss left" and "expired".
// The ticking text is not a live region (a screen reader would read it out every second):
// the page's status line ([data-countdown-announce]) says only "1 minute left" and "expired".
(function () {
  "use strict";

  function format(seconds) {
    var m = Math.floor(seconds / 60);
    var s = seconds % 60;
    return m + ":" + (s < 10 ? "0" : "") + s;
  }

  function start(element) {
    var total = parseInt(element.getAttribute("data-expires-in"), 10);
    if (isNaN(total)) {
      return;
    }
    var deadline = Date.now() + total * 1000;
    var code = document.querySelector("[data-pairing-code]");
    var announcer = document.querySelector("[data-countdown-announce]");
    // A code issued with a minute or less to live says nothing until it expires.
    var minuteAnnounced = total <= 60;

    function announce(text) {
      if (announcer) {
        announcer.textContent = text;
      }
    }

    function tick() {
      var left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
      if (left > 0) {
        element.textContent = format(left) + " left.";
        if (left <= 60 && !minuteAnnounced) {
          minuteAnnounced = true;
          announce("1 minute left for this code.");
        }
        window.setTimeout(tick, 1000);
        return;
      }
      element.textContent = "This code has expired; get a new one.";
      element.classList.add("error");
      announce("This code has expired; get a new one.");
      // "(in 10 minutes)" was true when the page was drawn; it is not any more.
      var words = document.querySelectorAll("[data-expires-in-words]");
      for (var i = 0; i < words.length; i += 1) {
        words[i].hidden = true;
      }
      if (code) {
        code.classList.add("expired");
      }
    }
    tick();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var elements = document.querySelectorAll("[data-expires-in]");
    for (var i = 0; i < elements.length; i += 1) {
      start(elements[i]);
    }
  });
})();
