// ddsmonitor page: builds tabs of canvas grids from /api/layout, draws each histogram of a
// package from its uhi JSON with uPlot, and redraws a package when the event stream
// (/api/events) says its serial grew. Freshness: green while the package changed within its
// stale_after seconds, red after. window.ddsMonitor exposes the state for tests and consoles.
"use strict";

(function () {
  const state = {
    layout: null,
    packages: {},      // name -> {serial, updated, stale_after, objects}
    canvases: [],      // {object, package, spec, el, plot, log, drawn}
    skew: 0,           // server clock minus this clock, seconds
    draws: [],         // {package, serial, object, entries, at}: one per redraw (the last 500)
    published: null,   // the pane of packages not in the layout
  };
  window.ddsMonitor = state;

  const $ = (tag, cls, text) => {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    if (text !== undefined) el.textContent = text;
    return el;
  };

  // uhi JSON may hold NaN and Infinity (Python's json writes them); JSON.parse does not take them
  function parseJSON(text) {
    return JSON.parse(text.replace(/\bNaN\b|-?\bInfinity\b/g, "null"));
  }

  async function getJSON(url) {
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return parseJSON(await response.text());
  }

  // ---- tabs -------------------------------------------------------------------

  function addTab(title, columns) {
    const button = $("button", "", title);
    const pane = $("section", "pane");
    pane.style.gridTemplateColumns = `repeat(${columns}, minmax(0, 1fr))`;
    pane.dataset.tab = title;
    button.addEventListener("click", () => show(button, pane));
    document.getElementById("tabs").appendChild(button);
    document.getElementById("panes").appendChild(pane);
    if (document.querySelectorAll("nav button").length === 1) show(button, pane);
    return { button, pane };
  }

  function show(button, pane) {
    document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b === button));
    document.querySelectorAll(".pane").forEach((p) => p.classList.toggle("active", p === pane));
    for (const c of state.canvases) if (c.el.parentNode === pane) draw(c, true);
    if (pane.dataset.tab === "Status") refreshStatus();
  }

  function addCanvas(pane, spec) {
    const el = $("div", "canvas");
    el.dataset.object = spec.object;
    el.dataset.package = spec.package;
    const head = $("div", "head");
    const name = $("span", "name", spec.title || spec.object);
    name.title = `${spec.package} / ${spec.object}`;
    const entries = $("span", "entries", "no entries");
    const fresh = $("span", "fresh stale", "no data");
    const log = $("button", "", "log");
    log.title = "logarithmic scale (y, or z for 2-D); drag on the plot to zoom, double-click to unzoom";
    head.append(name, entries, fresh, log);
    const error = $("div", "error");
    const plotEl = $("div", "plot");
    el.append(head, error, plotEl);
    pane.appendChild(el);
    const canvas = { object: spec.object, package: spec.package, spec, el, plotEl, entries, fresh, error, log: false,
                     plot: null, drawnSerial: -1, shape: "" };
    canvas.log = Boolean(spec.logy || spec.logz);
    log.classList.toggle("on", canvas.log);
    log.addEventListener("click", () => {
      canvas.log = !canvas.log;
      log.classList.toggle("on", canvas.log);
      rebuild(canvas);
    });
    state.canvases.push(canvas);
    return canvas;
  }

  // ---- from uhi JSON to plot data ----------------------------------------------------

  function edges(axis) {
    if (axis.type === "regular") {
      const out = [];
      for (let i = 0; i <= axis.bins; i++) out.push(axis.lower + (axis.upper - axis.lower) * i / axis.bins);
      return out;
    }
    if (axis.type === "variable") return axis.edges.slice();
    const n = (axis.categories || []).length;
    return Array.from({ length: n + 1 }, (_, i) => i);
  }

  const flowOffset = (axis) => (axis.underflow ? 1 : 0);

  function storageValues(storage) {
    if (storage.type === "mean" || storage.type === "weighted_mean") return storage.values;
    return storage.values;
  }

  function bins1d(obj) {
    const axis = obj.axes[0];
    const e = edges(axis);
    const n = e.length - 1;
    const off = flowOffset(axis);
    const raw = storageValues(obj.storage);
    const counts = obj.storage.counts || null;
    const values = [];
    for (let i = 0; i < n; i++) {
      let v = raw[i + off];
      if (counts && !(counts[i + off] > 0)) v = null;
      values.push(v === undefined ? null : v);
    }
    return { edges: e, values };
  }

  function kindOf(obj) {
    const meta = obj.metadata || {};
    return meta.kind || (obj.axes.length === 2 ? "hist2d" : "hist1d");
  }

  // ---- drawing ----------------------------------------------------------------------

  function size(canvas) {
    const width = Math.max(240, canvas.el.clientWidth - 12);
    return { width, height: Math.round(Math.min(320, Math.max(180, width * 0.55))) };
  }

  function refLines(canvas) {
    return (u) => {
      const ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = "#d32f2f";
      ctx.setLineDash([6, 4]);
      ctx.lineWidth = 1.5;
      for (const x of canvas.spec.xlines || []) {
        const px = u.valToPos(x, "x", true);
        ctx.beginPath(); ctx.moveTo(px, u.bbox.top); ctx.lineTo(px, u.bbox.top + u.bbox.height); ctx.stroke();
      }
      for (const y of canvas.spec.ylines || []) {
        const py = u.valToPos(y, "y", true);
        ctx.beginPath(); ctx.moveTo(u.bbox.left, py); ctx.lineTo(u.bbox.left + u.bbox.width, py); ctx.stroke();
      }
      ctx.restore();
    };
  }

  function colour(t) {
    // a perceptual ramp (dark blue -> teal -> yellow), t in [0, 1]
    const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
    const x = Math.min(0.9999, Math.max(0, t)) * (stops.length - 1);
    const i = Math.floor(x), f = x - i;
    const a = stops[i], b = stops[i + 1];
    return `rgb(${a.map((v, k) => Math.round(v + (b[k] - v) * f)).join(",")})`;
  }

  function plotData(canvas, obj) {
    const kind = kindOf(obj);
    if (kind === "hist2d") {
      const ax = obj.axes[0], ay = obj.axes[1];
      const ex = edges(ax), ey = edges(ay);
      return { kind, data: [[ex[0], ex[ex.length - 1]], [ey[0], ey[ey.length - 1]]], ex, ey,
               values: obj.storage.values, ox: flowOffset(ax), oy: flowOffset(ay) };
    }
    const { edges: e, values } = bins1d(obj);
    if (kind === "rate" || kind === "mean") {
      const width = e[1] - e[0];
      const xs = [], ys = [];
      // a rate's newest bin is still filling: leave it out
      const last = kind === "rate" ? values.length - 1 : values.length;
      for (let i = 0; i < last; i++) {
        xs.push((e[i] + e[i + 1]) / 2);
        let v = values[i];
        if (kind === "rate" && v !== null) v = v / width;
        ys.push(canvas.log && !(v > 0) ? null : v);
      }
      return { kind, data: [xs, ys] };
    }
    const ys = values.map((v) => (canvas.log && !(v > 0) ? null : v));
    ys.push(ys[ys.length - 1]);
    return { kind, data: [e, ys] };
  }

  function options(canvas, pd, obj) {
    const meta = obj.metadata || {};
    const { width, height } = size(canvas);
    const hooks = { draw: [refLines(canvas)] };
    const base = { width, height, legend: { show: false }, hooks,
                   cursor: { drag: { x: true, y: pd.kind === "hist2d", uni: 20 } } };
    const xTime = pd.kind === "rate" || pd.kind === "mean";
    const xlabel = meta.xlabel || "";
    const ylabel = meta.ylabel || "";
    if (pd.kind === "hist2d") {
      hooks.draw.unshift((u) => draw2d(u, canvas, pd));
      return { ...base,
        scales: { x: { time: false, auto: false, range: () => [pd.data[0][0], pd.data[0][1]] },
                  y: { auto: false, range: () => [pd.data[1][0], pd.data[1][1]] } },
        axes: [{ label: xlabel }, { label: ylabel }],
        series: [{}, { stroke: "transparent", points: { show: false } }] };
    }
    return { ...base,
      scales: { x: { time: xTime }, y: canvas.log ? { distr: 3 } : { range: (u, lo, hi) => [Math.min(0, lo), hi > 0 ? hi * 1.1 : 1] } },
      axes: [{ label: xlabel }, { label: ylabel }],
      series: [{}, xTime
        ? { stroke: "#1565c0", width: 1.5, spanGaps: false, points: { show: pd.data[0].length <= 30 } }
        : { stroke: "#1565c0", fill: "rgba(21,101,192,0.15)", width: 1.2, paths: uPlot.paths.stepped({ align: 1 }),
            points: { show: false } }] };
  }

  function draw2d(u, canvas, pd) {
    const ctx = u.ctx;
    let max = 0;
    for (let i = 0; i < pd.ex.length - 1; i++)
      for (let j = 0; j < pd.ey.length - 1; j++) max = Math.max(max, pd.values[i + pd.ox][j + pd.oy] || 0);
    if (!(max > 0)) return;
    const scale = canvas.log ? (v) => Math.log(v) / Math.log(max) : (v) => v / max;
    ctx.save();
    ctx.beginPath();
    ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
    ctx.clip();
    for (let i = 0; i < pd.ex.length - 1; i++) {
      const x0 = u.valToPos(pd.ex[i], "x", true), x1 = u.valToPos(pd.ex[i + 1], "x", true);
      for (let j = 0; j < pd.ey.length - 1; j++) {
        const v = pd.values[i + pd.ox][j + pd.oy];
        if (!(v > 0)) continue;
        const y0 = u.valToPos(pd.ey[j], "y", true), y1 = u.valToPos(pd.ey[j + 1], "y", true);
        ctx.fillStyle = colour(canvas.log ? Math.max(0.05, scale(v)) : 0.05 + 0.95 * scale(v));
        ctx.fillRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0) + 0.5, Math.abs(y1 - y0) + 0.5);
      }
    }
    ctx.restore();
  }

  function rebuild(canvas) {
    if (canvas.plot) { canvas.plot.destroy(); canvas.plot = null; }
    canvas.drawnSerial = -1;
    draw(canvas, true);
  }

  function draw(canvas, force) {
    const pkg = state.packages[canvas.package];
    if (!pkg) return;
    const obj = (pkg.objects || {})[canvas.object];
    const meta = (obj && obj.metadata) || {};
    canvas.error.textContent = obj ? (meta.error || "") : `no object ${canvas.object} in package ${canvas.package}`;
    if (!obj) return;
    const entries = meta.entries !== undefined ? meta.entries : "?";
    canvas.entries.textContent = `${entries} entries`;
    canvas.el.dataset.entries = String(entries);
    canvas.el.dataset.serial = String(pkg.serial);
    if (!canvas.el.parentNode.classList.contains("active")) return;  // drawn when its tab is shown
    if (!force && canvas.drawnSerial === pkg.serial) return;
    const pd = plotData(canvas, obj);
    const shape = `${pd.kind}:${pd.data[0].length}:${canvas.log}`;
    if (canvas.plot && canvas.shape === shape && pd.kind !== "hist2d") {
      const x = canvas.plot.scales.x;
      const zoomed = canvas.zoomed && x.min !== undefined;
      canvas.plot.setData(pd.data, !zoomed);
    } else if (canvas.plot && canvas.shape === shape) {
      canvas.plot.hooks.draw[0] = (u) => draw2d(u, canvas, pd);
      canvas.plot.redraw();
    } else {
      if (canvas.plot) canvas.plot.destroy();
      const opts = options(canvas, pd, obj);
      opts.hooks.setSelect = [(u) => { if (u.select.width > 0) canvas.zoomed = true; }];
      canvas.plotEl.textContent = "";
      canvas.plot = new uPlot(opts, pd.data, canvas.plotEl);
      canvas.plot.over.addEventListener("dblclick", () => { canvas.zoomed = false; });
      canvas.shape = shape;
    }
    canvas.drawnSerial = pkg.serial;
    state.draws.push({ package: canvas.package, serial: pkg.serial, object: canvas.object, entries, at: Date.now() });
    if (state.draws.length > 500) state.draws.splice(0, state.draws.length - 500);
  }

  // ---- freshness --------------------------------------------------------------------

  function paintFreshness() {
    const now = Date.now() / 1000 + state.skew;
    for (const c of state.canvases) {
      const pkg = state.packages[c.package];
      if (!pkg || !pkg.updated) {
        c.fresh.textContent = "no data";
        c.fresh.className = "fresh stale";
        continue;
      }
      const age = Math.max(0, now - pkg.updated);
      const stale = age > pkg.stale_after;
      c.fresh.textContent = age < 1 ? "just now" : age < 120 ? `${age.toFixed(0)} s ago` : `${(age / 60).toFixed(0)} min ago`;
      c.fresh.className = `fresh ${stale ? "stale" : "ok"}`;
      c.fresh.title = `serial ${pkg.serial}; red when unchanged for more than ${pkg.stale_after} s`;
      c.el.dataset.stale = String(stale);
    }
  }

  // ---- packages ---------------------------------------------------------------------

  async function update(name, serial) {
    const known = state.packages[name];
    if (known && known.serial >= serial) return;
    const pkg = await getJSON(`api/packages/${encodeURIComponent(name)}`);
    const held = state.packages[name];
    if (held && held.serial >= pkg.serial) return;  // a newer one arrived meanwhile
    state.packages[name] = pkg;
    if (!state.layout.packages[name]) showPublished(pkg);
    for (const c of state.canvases) if (c.package === name) draw(c, false);
    paintFreshness();
  }

  const pending = {};  // package -> newest serial announced; fetched one at a time per package
  function announce(list) {
    for (const { name, serial } of list) {
      const running = pending[name] !== undefined;
      pending[name] = Math.max(pending[name] || 0, serial);
      if (!running) fetchLoop(name);
    }
  }

  async function fetchLoop(name) {
    try {
      while (pending[name] !== undefined) {
        const serial = pending[name];
        try { await update(name, serial); } catch (err) { console.warn(err); }
        if (pending[name] === serial) delete pending[name];
      }
    } finally {
      delete pending[name];
    }
  }

  function showPublished(pkg) {
    if (!state.published) state.published = addTab("Published", 2).pane;
    for (const object of Object.keys(pkg.objects || {})) {
      if (state.canvases.some((c) => c.package === pkg.name && c.object === object)) continue;
      const meta = pkg.objects[object].metadata || {};
      addCanvas(state.published, { object, package: pkg.name, title: `${pkg.name} / ${meta.title || object}` });
    }
  }

  // ---- status -----------------------------------------------------------------------

  async function refreshStatus() {
    const pane = document.querySelector('.pane[data-tab="Status"]');
    if (!pane || !pane.classList.contains("active")) return;
    let status;
    try { status = await getJSON("api/status"); } catch (err) { return; }
    const table = $("table", "status");
    const head = ["stream", "cut", "server", "keep-up", "state", "file", "records", "last batch", "histograms", "error"];
    const tr = $("tr");
    head.forEach((h) => tr.appendChild($("th", "", h)));
    table.appendChild(tr);
    for (const s of status.sessions) {
      const row = $("tr");
      const ago = s.last_batch ? `${Math.max(0, status.monitor.now - s.last_batch).toFixed(1)} s ago` : "none";
      const failed = Object.entries(s.failed || {}).map(([h, why]) => `${h}: ${why}`).join("; ");
      [s.stream, s.cut, s.server, s.keep_up, s.state, s.file, s.records, ago, s.histograms.join(", "),
       [s.error, failed].filter(Boolean).join("; ")].forEach((v) => row.appendChild($("td", "", String(v))));
      table.appendChild(row);
    }
    pane.textContent = "";
    pane.append($("p", "note", `config ${status.monitor.config}; ${status.monitor.viewers} viewer(s) connected`), table);
  }

  // ---- start ------------------------------------------------------------------------

  async function start() {
    state.layout = await getJSON("api/layout");
    document.getElementById("title").textContent = state.layout.title;
    document.title = state.layout.title;
    for (const tab of state.layout.tabs) {
      const { pane } = addTab(tab.title, tab.columns);
      for (const spec of tab.canvases) addCanvas(pane, spec);
    }
    addTab("Status", 1);
    const link = document.getElementById("link");
    const events = new EventSource("api/events");
    events.addEventListener("open", () => { link.textContent = "live"; link.className = "link up"; });
    events.addEventListener("error", () => { link.textContent = "reconnecting"; link.className = "link down"; });
    events.addEventListener("packages", (e) => {
      const msg = JSON.parse(e.data);
      state.skew = msg.now - Date.now() / 1000;
      announce(msg.packages);
    });
    events.addEventListener("tick", (e) => { state.skew = JSON.parse(e.data).now - Date.now() / 1000; });
    setInterval(paintFreshness, 1000);
    setInterval(refreshStatus, 2000);
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => {
        for (const c of state.canvases) if (c.plot) c.plot.setSize(size(c));
      }, 150);
    });
    state.ready = true;
  }

  start().catch((err) => {
    document.getElementById("panes").textContent = `the monitor could not start: ${err}`;
  });
})();
