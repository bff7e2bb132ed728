// hybridgrid dashboard: renders /api/v1/snapshot, then follows the
// server-sent events of /api/v1/events. No libraries, no network access
// beyond the coordinator that served this page.
(function () {
  "use strict";

  var HISTORY_MS = 120000;
  var history = []; // {t, total, hits, misses}
  var seenTasks = {};
  var firstRender = true;

  function $(id) { return document.getElementById(id); }
  function setText(id, v) { var e = $(id); if (e) e.textContent = v; }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function fmtMs(ms) {
    if (ms === null || ms === undefined || isNaN(ms)) return "–";
    if (ms >= 10000) return (ms / 1000).toFixed(1) + " s";
    if (ms >= 1000) return (ms / 1000).toFixed(2) + " s";
    return ms.toFixed(ms < 10 ? 1 : 0) + " ms";
  }
  function fmtUptime(s) {
    s = Math.floor(s || 0);
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + (s % 60) + "s";
    return s + "s";
  }
  function pct(x) { return (x * 100).toFixed(1) + "%"; }

  // Circuit states: color AND icon AND text, so they differ without color too.
  var CIRCUIT = {
    "closed": { icon: "●", text: "closed", title: "Circuit closed: the worker gets tasks" },
    "half-open": { icon: "◐", text: "half-open", title: "Circuit half-open: trial tasks only" },
    "open": { icon: "✕", text: "open", title: "Circuit open: the worker gets no tasks" }
  };
  function circuitKey(s) {
    s = String(s || "closed").toLowerCase().replace("_", "-");
    if (s === "halfopen") s = "half-open";
    return CIRCUIT[s] ? s : "open";
  }

  function renderStats(st) {
    setText("stat-workers-healthy", st.workers.healthy);
    setText("stat-workers-total", st.workers.total);
    setText("stat-tasks-active", st.tasks.active);
    setText("stat-tasks-queued", st.tasks.queued);
    setText("stat-tasks-total", st.tasks.total);
    setText("stat-tasks-successful", st.tasks.successful);
    setText("stat-tasks-failed", st.tasks.failed);
    setText("stat-cache-hits", st.cache.hits);
    setText("stat-cache-misses", st.cache.misses);
    var lookups = st.cache.hits + st.cache.misses;
    setText("stat-cache-hit-rate", lookups ? pct(st.cache.hit_rate) : "–");
    setText("uptime", fmtUptime(st.uptime_seconds));
  }

  function renderWorkers(ws) {
    var body = $("workers-body");
    body.textContent = "";
    setText("workers-count", "(" + ws.length + ")");
    if (!ws.length) {
      var tr = el("tr", "empty");
      var td = el("td", null, "No workers registered yet.");
      td.colSpan = 10;
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    ws.forEach(function (w) {
      var key = circuitKey(w.circuit_state);
      var c = CIRCUIT[key];
      var tr = el("tr", key === "open" ? "row-open" : "");
      tr.dataset.workerId = w.id;
      tr.dataset.circuit = key;
      tr.appendChild(el("td", "wid", w.id));
      var ctd = el("td");
      var badge = el("span", "badge circuit circuit-" + key);
      badge.title = c.title;
      badge.dataset.circuit = key;
      badge.appendChild(el("span", "icon", c.icon));
      badge.appendChild(el("span", "label", c.text));
      ctd.appendChild(badge);
      tr.appendChild(ctd);
      tr.appendChild(el("td", null, w.address));
      tr.appendChild(el("td", null, w.arch || "–"));
      tr.appendChild(el("td", "num", w.cores));
      tr.appendChild(el("td", "num", w.active_tasks + " / " + (w.max_parallel_tasks || "?")));
      tr.appendChild(el("td", "num", w.completed));
      tr.appendChild(el("td", "num" + (w.failed ? " bad" : ""), w.failed));
      tr.appendChild(el("td", "num", w.completed ? fmtMs(w.average_latency_ms) : "–"));
      tr.appendChild(el("td", "muted", w.source));
      body.appendChild(tr);
    });
  }

  function renderTasks(tasks) {
    var body = $("tasks-body");
    body.textContent = "";
    if (!tasks.length) {
      var tr = el("tr", "empty");
      var td = el("td", null, "No tasks yet.");
      td.colSpan = 7;
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    tasks.forEach(function (t) {
      var isNew = !firstRender && !seenTasks[t.task_id];
      seenTasks[t.task_id] = true;
      var tr = el("tr", isNew ? "row-new" : "");
      tr.dataset.taskId = t.task_id;
      tr.dataset.result = t.result;
      var when = new Date(t.finished_at_ms);
      var td = el("td", null, when.toLocaleTimeString());
      td.title = t.timestamp;
      tr.appendChild(td);
      tr.appendChild(el("td", "muted", t.task_id.replace(/^task-/, "").slice(0, 8)));
      var src = el("td", "src", t.source || "–");
      src.title = t.source;
      tr.appendChild(src);
      tr.appendChild(el("td", null, t.from_cache ? "cache" : (t.worker || "–")));
      tr.appendChild(el("td", "num", fmtMs(t.duration_ms)));
      tr.appendChild(el("td", "num", t.from_cache ? "–" : fmtMs(t.queue_ms)));
      var rtd = el("td");
      var label = { success: "✓ success", compile_error: "! compile error", error: "✕ error" }[t.result] || t.result;
      var b = el("span", "badge result-" + t.result, label);
      if (t.error) b.title = t.error;
      rtd.appendChild(b);
      if (t.from_cache) { rtd.appendChild(document.createTextNode(" ")); rtd.appendChild(el("span", "badge result-cache", "cached")); }
      tr.appendChild(rtd);
      body.appendChild(tr);
    });
  }

  var SVGNS = "http://www.w3.org/2000/svg";
  function svgEl(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  // Draws points [{t, v}] (v may be null) into an SVG with a 600x140 view box.
  function drawChart(svg, pts, now, maxHint, fmt) {
    svg.textContent = "";
    var W = 600, H = 140, top = 8, bottom = 18;
    var vals = pts.filter(function (p) { return p.v !== null; }).map(function (p) { return p.v; });
    var max = Math.max(maxHint || 0, vals.length ? Math.max.apply(null, vals) : 0);
    if (max <= 0) max = 1;
    for (var i = 0; i <= 2; i++) {
      var y = top + (H - top - bottom) * i / 2;
      svg.appendChild(svgEl("line", { x1: 0, x2: W, y1: y, y2: y, "class": "gridline" }));
      var label = svgEl("text", { x: 4, y: y + (i === 2 ? -3 : 11) });
      label.textContent = fmt(max * (1 - i / 2));
      svg.appendChild(label);
    }
    var t0 = now - HISTORY_MS;
    function x(t) { return (t - t0) / HISTORY_MS * W; }
    function yv(v) { return top + (H - top - bottom) * (1 - v / max); }
    var seg = [];
    var segs = [];
    pts.forEach(function (p) {
      if (p.v === null) { if (seg.length) segs.push(seg); seg = []; return; }
      seg.push([x(p.t), yv(p.v)]);
    });
    if (seg.length) segs.push(seg);
    segs.forEach(function (s) {
      if (s.length === 1) s.push([s[0][0] + 2, s[0][1]]);
      var d = s.map(function (q, i) { return (i ? "L" : "M") + q[0].toFixed(1) + "," + q[1].toFixed(1); }).join(" ");
      var base = (H - bottom).toFixed(1);
      svg.appendChild(svgEl("path", { d: d + " L" + s[s.length - 1][0].toFixed(1) + "," + base + " L" + s[0][0].toFixed(1) + "," + base + " Z", "class": "area" }));
      svg.appendChild(svgEl("path", { d: d, "class": "series" }));
    });
    var l1 = svgEl("text", { x: 4, y: H - 3 }); l1.textContent = "−2 min";
    var l2 = svgEl("text", { x: W - 30, y: H - 3 }); l2.textContent = "now";
    svg.appendChild(l1); svg.appendChild(l2);
  }

  function renderCharts(snap) {
    var now = Date.now();
    var st = snap.stats;
    history.push({ t: now, total: st.tasks.total, hits: st.cache.hits, misses: st.cache.misses });
    while (history.length && history[0].t < now - HISTORY_MS - 5000) history.shift();
    // Throughput over a sliding 5 s window (events arrive at uneven
    // intervals: every second and just after each finished task).
    var thr = [], hr = [];
    var j = 0;
    for (var i = 1; i < history.length; i++) {
      var b = history[i];
      while (j < i - 1 && history[j + 1].t <= b.t - 5000) j++;
      var a = history[j];
      var dt = (b.t - a.t) / 1000;
      if (dt < 0.9) continue;
      thr.push({ t: b.t, v: Math.max(0, b.total - a.total) / dt });
      var look = b.hits + b.misses;
      hr.push({ t: b.t, v: look ? 100 * b.hits / look : null });
    }
    var lastThr = thr.length ? thr[thr.length - 1].v : 0;
    setText("throughput-now", lastThr.toFixed(2) + " /s");
    var look = st.cache.hits + st.cache.misses;
    setText("hitrate-now", look ? pct(st.cache.hit_rate) : "no lookups yet");
    drawChart($("chart-throughput"), thr, now, 1, function (v) { return v.toFixed(v < 10 ? 1 : 0) + "/s"; });
    drawChart($("chart-hitrate"), hr, now, 100, function (v) { return v.toFixed(0) + "%"; });
  }

  function render(snap) {
    if (!snap || !snap.stats) return;
    setText("version", "v" + snap.version);
    renderStats(snap.stats);
    renderWorkers(snap.workers || []);
    renderTasks(snap.tasks || []);
    renderCharts(snap);
    firstRender = false;
    document.body.dataset.updated = String(snap.time_ms);
  }

  function setLive(state, text) {
    var e = $("live");
    e.className = "live live-" + state;
    setText("live-text", text);
  }

  function connect() {
    if (!window.EventSource) { setLive("off", "no live updates (browser)"); return; }
    var es = new EventSource("/api/v1/events");
    es.addEventListener("snapshot", function (ev) {
      try { render(JSON.parse(ev.data)); setLive("on", "live"); } catch (e) { setLive("off", "bad data"); }
    });
    es.onerror = function () { setLive("off", "reconnecting…"); };
  }

  function initTheme() {
    var btn = $("theme-toggle");
    btn.addEventListener("click", function () {
      var root = document.documentElement;
      var cur = root.dataset.theme ||
        (window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
      var next = cur === "dark" ? "light" : "dark";
      root.dataset.theme = next;
      try { localStorage.setItem("hg-theme", next); } catch (e) {}
    });
  }

  initTheme();
  fetch("/api/v1/snapshot")
    .then(function (r) { return r.json(); })
    .then(render)
    .catch(function () { setLive("off", "cannot reach the coordinator"); })
    .then(connect);
})();
