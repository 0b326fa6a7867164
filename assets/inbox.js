// The inbox's only script, served by Airlock itself (no CDN): it keeps the
// pending list live from `GET /v1/events`, counts time left down, checks
// JSON before it is sent, shows an edit's diff against the original, and
// takes the keys of the help overlay. Every page works without it.
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
        .then(function (html) { if (html !== null) { list.innerHTML = html; markSelected(); countDown(); } })
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

  // Keys: j/k move through the pending list, a approves, d and e go to
  // the deny reason and the editor, ? shows the help. Never while typing.
  var selected = null;

  function rows() { return Array.prototype.slice.call(document.querySelectorAll("tr.held")); }

  // Marks the selected row again after the list was swapped in.
  function markSelected() {
    rows().forEach(function (r) {
      var on = r.dataset.id === selected;
      r.classList.toggle("selected", on);
      r.setAttribute("aria-selected", on ? "true" : "false");
    });
  }

  function move(by) {
    var all = rows();
    if (all.length === 0) return;
    var at = all.findIndex(function (r) { return r.dataset.id === selected; });
    at = at < 0 ? (by > 0 ? 0 : all.length - 1) : Math.min(all.length - 1, Math.max(0, at + by));
    selected = all[at].dataset.id;
    markSelected();
    all[at].scrollIntoView({ block: "nearest" });
  }

  // Approves the selected call with a form post of the page's own, so
  // that it carries the session's CSRF token and the page's origin.
  function approveSelected() {
    var csrf = document.querySelector("input[name=csrf]");
    var listed = rows().some(function (r) { return r.dataset.id === selected; });
    if (!listed || !csrf) return;
    var form = document.createElement("form");
    form.method = "post";
    form.action = "/approvals/" + encodeURIComponent(selected) + "/approve";
    var token = document.createElement("input");
    token.type = "hidden"; token.name = "csrf"; token.value = csrf.value;
    form.appendChild(token);
    document.body.appendChild(form);
    form.submit();
  }

  function typing(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }

  function toggleHelp(show) {
    var help = document.getElementById("help");
    if (!help) return;
    help.hidden = show === undefined ? !help.hidden : !show;
    if (!help.hidden) document.getElementById("help-close").focus();
  }

  function onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) return;
    var approve = document.getElementById("approve");
    var focus = function (id) { var el = document.getElementById(id); if (el) { e.preventDefault(); el.focus(); } };
    if (e.key === "?") { e.preventDefault(); toggleHelp(); }
    else if (e.key === "Escape") toggleHelp(false);
    else if (e.key === "j") move(1);
    else if (e.key === "k") move(-1);
    else if (e.key === "a" && approve) approve.requestSubmit();
    else if (e.key === "a") approveSelected();
    else if (e.key === "d" && approve) focus("deny-reason");
    else if (e.key === "e" && approve) focus("edited");
    else if ((e.key === "d" || e.key === "e") && selected) {
      location.href = "/approvals/" + encodeURIComponent(selected) + (e.key === "d" ? "#deny" : "#edit");
    }
  }

  function keyboard() {
    document.addEventListener("keydown", onKey);
    var open = document.getElementById("help-open"), close = document.getElementById("help-close");
    if (open) open.addEventListener("click", function () { toggleHelp(true); });
    if (close) close.addEventListener("click", function () { toggleHelp(false); });
    var field = { "#deny": "deny-reason", "#edit": "edited" }[location.hash];
    if (field && document.getElementById(field)) document.getElementById(field).focus();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var list = document.getElementById("pending");
    if (list && window.EventSource) followPending(list);
    document.querySelectorAll("form").forEach(checkJson);
    var edited = document.getElementById("edited"), original = document.getElementById("original");
    if (edited && original) {
      showDiff(edited, original, document.getElementById("diff-box"), document.getElementById("diff"));
    }
    keyboard();
    countDown();
    setInterval(countDown, 1000);
  });
})();
