// The inbox's only script, served by Airlock itself (no CDN): it keeps the
// pending list live from `GET /v1/events`, counts time left down, checks
// JSON before it is sent, and shows an edit's diff against the original.
// Every page works without it.
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

  // A line diff (longest common subsequence) of two texts: a list of
  // [mark, line] with mark " ", "-" or "+". Past a size where the table
  // would be large, every line of both is shown as changed.
  function lineDiff(a, b) {
    var x = a.split("\n"), y = b.split("\n"), n = x.length, m = y.length, i, j;
    if (n * m > 1000000) {
      return x.map(function (l) { return ["-", l]; }).concat(y.map(function (l) { return ["+", l]; }));
    }
    var common = [];
    for (i = 0; i <= n; i++) common.push(new Int32Array(m + 1));
    for (i = n - 1; i >= 0; i--) {
      for (j = m - 1; j >= 0; j--) {
        common[i][j] = x[i] === y[j] ? common[i + 1][j + 1] + 1
          : Math.max(common[i + 1][j], common[i][j + 1]);
      }
    }
    var out = [];
    i = 0; j = 0;
    while (i < n && j < m) {
      if (x[i] === y[j]) { out.push([" ", x[i]]); i++; j++; }
      else if (common[i + 1][j] >= common[i][j + 1]) { out.push(["-", x[i]]); i++; }
      else { out.push(["+", y[j]]); j++; }
    }
    for (; i < n; i++) out.push(["-", x[i]]);
    for (; j < m; j++) out.push(["+", y[j]]);
    return out;
  }

  // Shows the edit against the original as it is typed. Lines are added
  // as text nodes: the payload is never parsed as markup.
  function showDiff(box, original, wrap, out) {
    function update() {
      var lines = lineDiff(original.textContent, box.value);
      var changed = lines.some(function (l) { return l[0] !== " "; });
      wrap.hidden = !changed;
      out.textContent = "";
      if (!changed) return;
      lines.forEach(function (l) {
        var span = document.createElement("span");
        span.className = l[0] === "+" ? "add" : l[0] === "-" ? "del" : "same";
        span.textContent = l[0] + " " + l[1] + "\n";
        out.appendChild(span);
      });
    }
    box.addEventListener("input", update);
    update();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var list = document.getElementById("pending");
    if (list && window.EventSource) followPending(list);
    document.querySelectorAll("form").forEach(checkJson);
    var edited = document.getElementById("edited"), original = document.getElementById("original");
    if (edited && original) {
      showDiff(edited, original, document.getElementById("diff-box"), document.getElementById("diff"));
    }
    countDown();
    setInterval(countDown, 1000);
  });
})();
