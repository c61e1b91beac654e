// The overview refreshes its figures in place (no full reload, so the page keeps
// its scroll). Served from this server: the Content Security Policy allows no
// inline script.
(function () {
  "use strict";
  function refreshLoop() {
    var box = document.getElementById("figures");
    if (!box) { return; }
    var every = parseInt(box.getAttribute("data-refresh"), 10) || 5000;
    var src = box.getAttribute("data-src");
    var stamp = document.getElementById("refreshed");
    function tick() {
      if (document.hidden) { return; }
      fetch(src, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
        .then(function (html) {
          box.innerHTML = html;  // the server's own escaped template, nothing else
          if (stamp) { stamp.textContent = "refreshed " + new Date().toISOString().slice(11, 19) + " UTC"; }
        })
        .catch(function (e) { if (stamp) { stamp.textContent = "refresh failed (" + e.message + ")"; } });
    }
    setInterval(tick, every);
  }
  document.addEventListener("DOMContentLoaded", refreshLoop);
}());
