// nebula-credential console: live updates and countdowns. No dependencies.
// Pages marked data-live follow the watch stream (server-sent events) and
// reload their content in place when a credential changes; data-poll adds a
// timed reload while a rotation is moving (its steps are not events).
"use strict";
(function () {
  var body = document.body;
  var live = document.getElementById("live");
  window.__consoleLoads = (window.__consoleLoads || 0) + 1;

  function fmt(ms) {
    var s = Math.floor(ms / 1000);
    if (s < 60) return s + "s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + "m " + (s % 60) + "s";
    var h = Math.floor(m / 60);
    if (h < 48) return h + "h " + (m % 60) + "m";
    return Math.floor(h / 24) + "d " + (h % 24) + "h";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-until]").forEach(function (el) {
      var t = Date.parse(el.getAttribute("data-until"));
      if (isNaN(t)) return;
      var d = t - now;
      el.textContent = d > 0 ? fmt(d) + " left" : "ended " + fmt(-d) + " ago";
      el.classList.toggle("over", d <= 0);
    });
  }
  tick();
  setInterval(tick, 1000);

  if (!body.hasAttribute("data-live")) return;

  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (res) {
        if (res.redirected || !res.ok) { return null; }
        return res.text();
      })
      .then(function (html) {
        if (html === null) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("content");
        var main = document.getElementById("content");
        if (!fresh || !main) return;
        // Keep the focused element's id, so keyboard users keep their place.
        var focused = document.activeElement && document.activeElement.id;
        main.innerHTML = fresh.innerHTML;
        if (focused) { var el = document.getElementById(focused); if (el) el.focus(); }
        var poll = doc.body.getAttribute("data-poll");
        if (poll) body.setAttribute("data-poll", poll); else body.removeAttribute("data-poll");
        tick();
        document.dispatchEvent(new CustomEvent("console:refreshed"));
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) { again = false; setTimeout(refresh, 200); }
      });
  }

  function status(text, ok) {
    if (!live) return;
    live.textContent = text;
    live.classList.toggle("down", !ok);
  }

  var kinds = ["rotation_started", "current_changed", "rolled_back", "rotation_failed", "retired", "grace_warning", "needs_attention", "message"];
  var prefix = body.getAttribute("data-prefix") || "";
  var url = "/ui/live" + (prefix ? "?prefix=" + encodeURIComponent(prefix) : "");
  var es = null, timer = null;
  function connect() {
    es = new EventSource(url);
    es.onopen = function () { status("live", true); };
    kinds.forEach(function (k) {
      es.addEventListener(k, function () { refresh(); });
    });
    es.onerror = function () {
      if (es.readyState === EventSource.CLOSED) {
        // Refused (no read grant, or signed out): fall back to polling.
        status("polling", false);
        if (!timer) timer = setInterval(refresh, 10000);
      } else {
        status("reconnecting", false);
      }
    };
  }
  connect();

  // While a rotation moves, its steps are not events: poll its page.
  setInterval(function () {
    if (body.hasAttribute("data-poll")) refresh();
  }, 2000);
})();
