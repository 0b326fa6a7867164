// The inbox's only script, served by Airlock itself (no CDN): it keeps the
// pending list live from `GET /v1/events`, counts time left down, and
// checks an edit's JSON before it is sent. Every page works without it.
(function () {
  "use strict";

  function countDown() {
    var cells = document.querySelectorAll("[data-expires]");
    var now = Date.now();
    cells.forEach(function (cell) {
      var ms = Number(cell.getAttribute("data-expires")) - now;
      if (ms <= 0) { cell.textContent = "expired"; return; }
      var s = Math.floor(ms / 1000), h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
      s = s % 60;
      var two = function (n) { return (n < 10 ? "0" : "") + n; };
      cell.textContent = h > 0 ? h + "h " + two(m) + "m left"
        : m > 0 ? m + "m " + two(s) + "s left" : s + "s left";
    });
  }

  // The list is rendered (and escaped) by the server; the script only
  // swaps the fresh fragment in.
  function followPending(list) {
    var busy = false, again = false;
    function refresh() {
      if (busy) { again = true; return; }
      busy = true;
      fetch("/pending", { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) { list.innerHTML = html; countDown(); } })
        .catch(function () {})
        .then(function () { busy = false; if (again) { again = false; refresh(); } });
    }
    var events = new EventSource("/v1/events");
    events.addEventListener("decision", function (e) {
      try { if (JSON.parse(e.data).verdict === "hold") refresh(); } catch (_) {}
    });
    ["requested", "approve", "deny", "respond", "expired", "voided", "executing", "executed",
     "interrupted", "refused"].forEach(function (verdict) {
      events.addEventListener("approval." + verdict, refresh);
    });
    // After a reconnect the list may have missed changes.
    events.addEventListener("open", refresh);
    events.addEventListener("lagged", refresh);
  }

  // Every JSON box (`data-json` names what it holds) is checked before
  // its form is sent; the server checks again.
  function checkJson(form) {
    var box = form.querySelector("textarea[data-json]");
    var shown = form.querySelector(".json-error");
    if (!box || !shown) return;
    form.addEventListener("submit", function (e) {
      if (box.hasAttribute("data-empty-ok") && box.value.trim() === "") { shown.hidden = true; return; }
      try {
        JSON.parse(box.value);
        shown.hidden = true;
      } catch (err) {
        e.preventDefault();
        shown.textContent = box.getAttribute("data-json") + " is not valid JSON: " + err.message;
        shown.hidden = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var list = document.getElementById("pending");
    if (list && window.EventSource) followPending(list);
    document.querySelectorAll("form").forEach(checkJson);
    countDown();
    setInterval(countDown, 1000);
  });
})();
