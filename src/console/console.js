// vodhook console: the only script (no inline script is allowed by the
// Content-Security-Policy). Live rows on /events through server-sent
// events, with a pause button; the copy button of a raw body. Every value
// is put in the page with textContent, never as HTML.
"use strict";

(function () {
  function cell(row, content) {
    var td = document.createElement("td");
    if (content instanceof Node) { td.appendChild(content); } else if (content != null) { td.textContent = String(content); }
    row.appendChild(td);
    return td;
  }
  function link(href, text) {
    var a = document.createElement("a");
    a.setAttribute("href", href);
    a.textContent = String(text);
    return a;
  }
  function timeOf(ms) {
    var text = new Date(ms).toISOString();
    var t = document.createElement("time");
    t.setAttribute("datetime", text);
    t.textContent = text.replace("T", " ").replace(/Z$/, "");
    return t;
  }
  function badge(status) {
    var s = document.createElement("span");
    var lower = String(status).toLowerCase();
    var kind = /^(ok|success|finish|0)$/.test(lower) ? "good"
      : /^(dead|fail|failed|error)$/.test(lower) ? "bad"
      : /^(retrying|pending|processing|waiting)$/.test(lower) ? "wait" : "plain";
    s.className = "badge " + kind;
    s.textContent = String(status);
    return s;
  }
  function eventRow(e) {
    var tr = document.createElement("tr");
    tr.className = "new";
    cell(tr, link("/events/" + encodeURIComponent(e.id), e.id));
    cell(tr, timeOf(e.received_at)).className = "wide";
    var type = cell(tr, e.event_type);
    if (e.parse_error) { type.appendChild(document.createTextNode(" ")); var b = badge("parse error"); b.className = "badge bad"; type.appendChild(b); }
    cell(tr, e.file_id ? link("/files/" + encodeURIComponent(e.file_id), e.file_id) : null);
    cell(tr, e.task_id ? link("/tasks/" + encodeURIComponent(e.task_id), e.task_id) : null).className = "wide";
    cell(tr, e.status ? badge(e.status) : null);
    cell(tr, e.source).className = "wide";
    cell(tr, e.times_seen).className = "num wide";
    return tr;
  }

  function live() {
    var button = document.getElementById("pause");
    var table = document.getElementById("events");
    if (!button || !table || !window.EventSource) { return; }
    var body = table.tBodies[0];
    var status = document.getElementById("live-status");
    var paused = false;
    var held = [];
    var source = new EventSource(button.getAttribute("data-stream"));
    function show(e) {
      var existing = body.querySelector('a[href="/events/' + encodeURIComponent(e.id) + '"]');
      if (existing) {
        var old = existing.closest("tr");
        old.parentNode.replaceChild(eventRow(e), old);
        return;
      }
      body.insertBefore(eventRow(e), body.firstChild);
      var empty = document.getElementById("empty");
      if (empty) { empty.remove(); }
    }
    source.addEventListener("event", function (message) {
      var e;
      try { e = JSON.parse(message.data); } catch (err) { return; }
      if (paused) {
        held.push(e);
        status.textContent = "paused: " + held.length + " new";
      } else {
        show(e);
      }
    });
    source.addEventListener("open", function () {
      if (!paused) { status.textContent = "live: new events appear at the top"; }
    });
    source.addEventListener("error", function () {
      status.textContent = "live updates interrupted; reconnecting…";
    });
    button.addEventListener("click", function () {
      paused = !paused;
      button.textContent = paused ? "Resume" : "Pause";
      if (paused) {
        status.textContent = "paused: 0 new";
      } else {
        held.forEach(show);
        held = [];
        status.textContent = "live: new events appear at the top";
      }
    });
  }

  function copy() {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var target = document.getElementById(button.getAttribute("data-copy"));
        if (!target || !navigator.clipboard) { return; }
        navigator.clipboard.writeText(target.textContent).then(function () {
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = "Copy"; }, 1500);
        });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { live(); copy(); });
})();
