// Counts down the lifetime of a pairing code shown on the page. Without JavaScript the page
// still says when the code expires; this only adds "mm:ss left" and "expired".
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

    function tick() {
      var left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
      if (left > 0) {
        element.textContent = format(left) + " left.";
        window.setTimeout(tick, 1000);
        return;
      }
      element.textContent = "This code has expired; get a new one.";
      element.classList.add("error");
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
