// The /ui page: parse a series (CSV long format or the JSON body), ask POST /v1/predict, plot
// the answer as SVG (observations, mean, 50% and 90% bands, interpolation and extrapolation
// regions) and build the CSV download (the frame format's columns). No library, no CDN: every
// URL is relative to the page, so the service (and any prefix it is served under) serves all.
"use strict";

(function () {
  const QUANTILES = [0.05, 0.25, 0.75, 0.95];
  const MAX_QUERIES = 5000; // per series: the service's own limits are larger, a plot is not
  const UNIT_MS = {
    seconds: 1e3, minutes: 6e4, hours: 3.6e6, days: 8.64e7, weeks: 6.048e8,
  };
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const state = { model: null, request: null, answer: null, inputs: null };

  // ------------------------------------------------------------------------------ API calls

  function headers(extra) {
    const out = Object.assign({ Accept: "application/json" }, extra || {});
    const key = $("api-key").value.trim();
    if (key) out.Authorization = "Bearer " + key;
    return out;
  }

  async function call(path, options) {
    let response;
    try {
      response = await fetch(path, options);
    } catch (err) {
      throw new Error("the service did not answer (" + err.message + ")");
    }
    const text = await response.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
    if (!response.ok) {
      const detail = body && typeof body.detail === "string" ? body.detail : text;
      const err = new Error(response.status + " " + response.statusText + ": " + detail);
      err.status = response.status;
      throw err;
    }
    return body;
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  function status(message) { $("status").textContent = message; }

  async function loadModel() {
    try {
      const model = await call("v1/model", { headers: headers() });
      state.model = model;
      $("model-line").textContent = "Model " + model.name + " version " + model.version +
        ": channels " + model.channels.join(", ") + "; times in " + model.time_unit + ".";
      document.querySelectorAll(".unit").forEach((el) => { el.textContent = model.time_unit; });
    } catch (err) {
      $("model-line").textContent = "No model information: " + err.message;
    }
  }

  // ------------------------------------------------------------------------------- parsing

  function parseTime(text, where) {
    const s = String(text).trim();
    if (s === "") throw new Error(where + ": the time is empty.");
    const n = Number(s);
    if (Number.isFinite(n)) return n;
    return s; // an ISO-8601 string: the service converts it (and says so if it cannot)
  }

  function parseCsvLine(line) {
    // RFC 4180 enough for numbers, ids and quoted ids with commas.
    const cells = [];
    let cell = "";
    let quoted = false;
    for (let i = 0; i < line.length; i += 1) {
      const c = line[i];
      if (quoted) {
        if (c === '"' && line[i + 1] === '"') { cell += '"'; i += 1; }
        else if (c === '"') quoted = false;
        else cell += c;
      } else if (c === '"') quoted = true;
      else if (c === ",") { cells.push(cell); cell = ""; }
      else cell += c;
    }
    cells.push(cell);
    return cells.map((x) => x.trim());
  }

  const TRUE = new Set(["true", "1", "yes", "t", "y"]);
  const FALSE = new Set(["false", "0", "no", "f", "n", ""]);

  function parseCsv(text) {
    const lines = text.split(/\r?\n/).filter((l) => l.trim() !== "");
    if (lines.length < 2) throw new Error("the CSV needs a header line and at least one row.");
    const header = parseCsvLine(lines[0]);
    const idCol = header.indexOf("series_id");
    const timeCol = header.indexOf("time");
    if (idCol < 0 || timeCol < 0) {
      throw new Error("the CSV header must name the columns series_id and time; got " +
        header.join(", ") + ".");
    }
    const queryCol = header.indexOf("query");
    const channelCols = header.map((h, i) => i).filter((i) => i !== idCol && i !== timeCol && i !== queryCol);
    const channels = channelCols.map((i) => header[i]);
    if (channels.length === 0) throw new Error("the CSV has no channel column besides series_id, time and query.");
    const byId = new Map();
    for (let k = 1; k < lines.length; k += 1) {
      const cells = parseCsvLine(lines[k]);
      const where = "line " + (k + 1);
      if (cells.length !== header.length) {
        throw new Error(where + ": " + cells.length + " cells; the header has " + header.length + ".");
      }
      const id = cells[idCol];
      if (!byId.has(id)) byId.set(id, { id: id, times: [], values: [], channels: channels, query_times: [] });
      const item = byId.get(id);
      const time = parseTime(cells[timeCol], where);
      if (queryCol >= 0) {
        const q = cells[queryCol].toLowerCase();
        if (!TRUE.has(q) && !FALSE.has(q)) {
          throw new Error(where + ", column query: expected true or false; got '" + cells[queryCol] + "'.");
        }
        if (TRUE.has(q)) { item.query_times.push(time); continue; }
      }
      const row = channelCols.map((i) => {
        const cell = cells[i];
        if (cell === "" || cell.toLowerCase() === "nan") return null;
        const v = Number(cell);
        if (!Number.isFinite(v)) {
          throw new Error(where + ", column " + header[i] + ": expected a number or an empty cell; got '" + cell + "'.");
        }
        return v;
      });
      if (row.every((v) => v === null)) continue; // a row observing nothing says nothing
      item.times.push(time);
      item.values.push(row);
    }
    return Array.from(byId.values());
  }

  function parseInput(text) {
    const trimmed = text.trim();
    if (trimmed === "") throw new Error("paste a series, upload a file or click Load example first.");
    if (trimmed[0] === "{" || trimmed[0] === "[") {
      let body;
      try { body = JSON.parse(trimmed); } catch (err) { throw new Error("the JSON does not parse: " + err.message); }
      const series = Array.isArray(body) ? body : body.series;
      if (!Array.isArray(series)) throw new Error("the JSON must be a predict body with a `series` list.");
      return series.map((s) => Object.assign({ query_times: [] }, s));
    }
    return parseCsv(trimmed);
  }

  // ---------------------------------------------------------------------------- query times

  function toMs(t) { return typeof t === "number" ? t : Date.parse(t); }

  function horizonQueries(item, horizon, every, inside) {
    if (!(every > 0)) throw new Error("the step must be a positive number.");
    if (!(horizon >= 0)) throw new Error("the horizon must be a number of at least 0.");
    if (item.times.length === 0) throw new Error("series '" + item.id + "' has no observation.");
    const iso = typeof item.times[0] === "string";
    let scale = 1;
    if (iso) {
      const unit = state.model ? state.model.time_unit : null;
      scale = UNIT_MS[unit];
      if (!scale) throw new Error("a horizon over ISO times needs a model time unit among " + Object.keys(UNIT_MS).join(", ") + "; got " + unit + ". List the query times instead.");
    }
    const numeric = item.times.map((t) => (iso ? toMs(t) / scale : t));
    const first = Math.min.apply(null, numeric);
    const last = Math.max.apply(null, numeric);
    const start = inside ? first : last + every;
    const count = Math.floor((last + horizon - start) / every + 1e-9) + 1;
    if (count > MAX_QUERIES) {
      throw new Error("that asks " + count + " query times for series '" + item.id + "'; the page plots at most " + MAX_QUERIES + ": make the step larger.");
    }
    const out = [];
    for (let k = 0; k < count; k += 1) {
      const t = Number((start + k * every).toPrecision(12));
      out.push(iso ? new Date(t * scale).toISOString() : t);
    }
    return out;
  }

  function listedQueries() {
    const text = $("times").value.trim();
    if (text === "") throw new Error("list at least one query time, separated by commas.");
    return text.split(/[,;\s]+/).filter((x) => x !== "").map((x) => parseTime(x, "query times"));
  }

  function buildRequest(inputs) {
    const mode = document.querySelector('input[name="mode"]:checked').value;
    const samples = Number($("samples").value);
    const series = inputs.map((item) => {
      let queries;
      if (mode === "horizon") {
        queries = horizonQueries(item, Number($("horizon").value), Number($("every").value), $("inside").checked);
      } else if (mode === "times") {
        queries = listedQueries();
      } else {
        queries = item.query_times || [];
        if (queries.length === 0) throw new Error("series '" + item.id + "' has no query rows; choose a horizon or list query times.");
      }
      const out = { id: item.id == null ? null : String(item.id), times: item.times, values: item.values, query_times: queries };
      if (item.channels) out.channels = item.channels;
      return out;
    });
    const body = { series: series, quantiles: QUANTILES };
    if (Number.isFinite(samples) && samples >= 1) body.num_samples = Math.floor(samples);
    return body;
  }

  // --------------------------------------------------------------------------------- plots

  function niceTicks(lo, hi, n) {
    if (!(hi > lo)) return [lo];
    const raw = (hi - lo) / n;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step) out.push(Number(v.toPrecision(12)));
    return out;
  }

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG_NS, name);
    Object.keys(attrs || {}).forEach((k) => node.setAttribute(k, attrs[k]));
    if (parent) parent.appendChild(node);
    return node;
  }

  function fmt(v) { return Math.abs(v) >= 1e5 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(2) : String(Number(v.toPrecision(6))); }

  function plotChannel(container, opts) {
    const W = 560; const H = 260;
    const m = { left: 58, right: 14, top: 26, bottom: 40 };
    const svg = el("svg", { class: "plot", viewBox: "0 0 " + W + " " + H, role: "img", "data-channel": opts.channel });
    el("title", {}, svg).textContent = "Forecast of " + opts.channel;
    const xs = opts.obs.map((p) => p[0]).concat(opts.q.map((p) => p.x));
    const ys = opts.obs.map((p) => p[1]);
    opts.q.forEach((p) => { ys.push(p.lo90, p.hi90, p.mean); });
    let x0 = Math.min.apply(null, xs); let x1 = Math.max.apply(null, xs);
    let y0 = Math.min.apply(null, ys); let y1 = Math.max.apply(null, ys);
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { y0 -= 1; y1 += 1; }
    const pad = 0.06 * (y1 - y0); y0 -= pad; y1 += pad;
    const sx = (x) => m.left + (x - x0) / (x1 - x0) * (W - m.left - m.right);
    const sy = (y) => H - m.bottom - (y - y0) / (y1 - y0) * (H - m.top - m.bottom);
    const top = m.top; const bottom = H - m.bottom;

    // Regions: the observed window (interpolation) and what lies outside it.
    const win = opts.window;
    const regions = [];
    if (win) {
      if (x0 < win[0]) regions.push(["extrapolation", x0, win[0], "backcast"]);
      regions.push(["interpolation", Math.max(x0, win[0]), Math.min(x1, win[1]), "interpolation"]);
      if (x1 > win[1]) regions.push(["extrapolation", win[1], x1, "extrapolation"]);
    }
    regions.forEach((r) => {
      if (!(r[2] > r[1])) return;
      el("rect", { class: "region region-" + r[0], x: sx(r[1]), y: top, width: sx(r[2]) - sx(r[1]), height: bottom - top }, svg);
      const label = el("text", { class: "region-label", x: (sx(r[1]) + sx(r[2])) / 2, y: top - 6, "text-anchor": "middle" }, svg);
      label.textContent = r[3];
    });

    // Axes and ticks.
    const axis = el("g", { class: "axis" }, svg);
    niceTicks(y0, y1, 5).forEach((v) => {
      el("line", { class: "grid", x1: m.left, x2: W - m.right, y1: sy(v), y2: sy(v) }, axis);
      el("text", { x: m.left - 6, y: sy(v) + 4, "text-anchor": "end" }, axis).textContent = fmt(v);
    });
    niceTicks(x0, x1, 6).forEach((v) => {
      el("line", { class: "tick", x1: sx(v), x2: sx(v), y1: bottom, y2: bottom + 4 }, axis);
      const text = opts.iso ? new Date(v * opts.isoScale).toISOString().slice(0, 16).replace("T", " ") : fmt(v);
      el("text", { x: sx(v), y: bottom + 16, "text-anchor": "middle" }, axis).textContent = text;
    });
    el("line", { class: "frame", x1: m.left, x2: W - m.right, y1: bottom, y2: bottom }, axis);
    el("line", { class: "frame", x1: m.left, x2: m.left, y1: top, y2: bottom }, axis);
    el("text", { class: "axis-label", x: (m.left + W - m.right) / 2, y: H - 6, "text-anchor": "middle" }, axis)
      .textContent = "time (" + opts.unit + ")";
    el("text", { class: "axis-label", x: 14, y: (top + bottom) / 2, "text-anchor": "middle",
      transform: "rotate(-90 14 " + (top + bottom) / 2 + ")" }, axis).textContent = opts.channel + " (data units)";

    // Bands, mean, observations (in this order: points stay on top).
    const q = opts.q.slice().sort((a, b) => a.x - b.x);
    const band = (lo, hi) => "M" + q.map((p) => sx(p.x) + "," + sy(p[hi])).join("L") +
      "L" + q.slice().reverse().map((p) => sx(p.x) + "," + sy(p[lo])).join("L") + "Z";
    if (q.length > 0) {
      el("path", { class: "band band90", d: band("lo90", "hi90") }, svg);
      el("path", { class: "band band50", d: band("lo50", "hi50") }, svg);
      el("path", { class: "mean", d: "M" + q.map((p) => sx(p.x) + "," + sy(p.mean)).join("L") }, svg);
    }
    opts.obs.forEach((p) => {
      el("circle", { class: "obs", cx: sx(p[0]), cy: sy(p[1]), r: 3.2 }, svg);
    });
    el("text", { class: "plot-title", x: m.left, y: 14 }, svg).textContent = opts.channel;
    container.appendChild(svg);
  }

  function render(index) {
    const plots = $("plots");
    plots.setAttribute("data-state", "drawing");
    plots.textContent = "";
    const answer = state.answer;
    const asked = state.request.series[index];
    const out = answer.series[index];
    const iso = typeof asked.times[0] === "string";
    const isoScale = iso ? UNIT_MS[answer.time_unit] || 1 : 1;
    const x = (t) => (iso ? toMs(t) / isoScale : t);
    const obsTimes = asked.times.map(x);
    const window = [Math.min.apply(null, obsTimes), Math.max.apply(null, obsTimes)];
    const level = (lv) => out.quantiles.find((qq) => qq.quantile === lv);
    const q05 = level(0.05); const q25 = level(0.25); const q75 = level(0.75); const q95 = level(0.95);
    answer.channels.forEach((channel, d) => {
      const column = asked.channels ? asked.channels.indexOf(channel) : d;
      const obs = [];
      if (column >= 0) {
        asked.times.forEach((t, i) => {
          const v = asked.values[i][column];
          if (v !== null && v !== undefined) obs.push([x(t), v]);
        });
      }
      const q = out.query_times.map((t, j) => ({
        x: x(t), mean: out.mean[j][d],
        lo90: q05.values[j][d], hi90: q95.values[j][d], lo50: q25.values[j][d], hi50: q75.values[j][d],
      }));
      const box = document.createElement("figure");
      box.className = "plot-box";
      plots.appendChild(box);
      plotChannel(box, { channel: channel, obs: obs, q: q, window: window, unit: answer.time_unit, iso: iso, isoScale: isoScale });
    });
    plots.setAttribute("data-state", "done");
  }

  // ---------------------------------------------------------------------------- CSV export

  function pyRepr(x) {
    // Python's repr(float) for quantile levels: exponent form below 1e-4, two-digit exponents.
    if (x !== 0 && Math.abs(x) < 1e-4) {
      const [mant, exp] = x.toExponential().split("e");
      const sign = exp[0] === "-" ? "-" : "+";
      const digits = exp.replace(/^[+-]/, "");
      return mant + "e" + sign + (digits.length < 2 ? "0" + digits : digits);
    }
    const s = String(x);
    return Number.isInteger(x) ? s + ".0" : s;
  }

  function csvCell(v) {
    const s = v === null || v === undefined ? "" : String(v);
    return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function answerCsv() {
    const answer = state.answer;
    const levels = answer.series.length ? answer.series[0].quantiles.map((q) => q.quantile) : QUANTILES;
    const cols = ["series_id", "time", "mode"];
    answer.channels.forEach((c) => {
      cols.push(c + "_mean", c + "_std");
      levels.forEach((lv) => cols.push(c + "_q" + pyRepr(lv)));
    });
    const lines = [cols.join(",")];
    answer.series.forEach((s) => {
      s.query_times.forEach((t, j) => {
        const row = [s.id, t, s.mode[j]];
        answer.channels.forEach((c, d) => {
          row.push(s.mean[j][d], s.std[j][d]);
          s.quantiles.forEach((q) => row.push(q.values[j][d]));
        });
        lines.push(row.map(csvCell).join(","));
      });
    });
    return lines.join("\n") + "\n";
  }

  function download() {
    const blob = new Blob([answerCsv()], { type: "text/csv" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "forecast.csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  // ------------------------------------------------------------------------------- actions

  async function loadExample() {
    clearError();
    status("Loading a synthetic example for the served model…");
    try {
      const ex = await call("ui/example", { headers: headers() });
      $("data").value = ex.csv;
      $("horizon").value = ex.horizon;
      $("every").value = ex.every;
      $("inside").checked = true;
      document.querySelector('input[name="mode"][value="horizon"]').checked = true;
      $("example-note").textContent = "A synthetic series (" + ex.num_observations +
        " observations of " + ex.channels.join(", ") + "), not training data.";
      status("Example loaded: press Forecast.");
    } catch (err) {
      status("");
      showError(err.message);
    }
  }

  async function submit() {
    clearError();
    let request;
    try {
      state.inputs = parseInput($("data").value);
      request = buildRequest(state.inputs);
    } catch (err) {
      showError(err.message);
      return;
    }
    status("Forecasting…");
    $("submit").disabled = true;
    try {
      const answer = await call("v1/predict", {
        method: "POST", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(request),
      });
      state.request = request;
      state.answer = answer;
      const select = $("series-select");
      select.textContent = "";
      answer.series.forEach((s, i) => {
        const option = document.createElement("option");
        option.value = String(i);
        option.textContent = s.id == null ? "series " + i : s.id;
        select.appendChild(option);
      });
      $("series-label").hidden = answer.series.length < 2;
      $("result-section").hidden = false;
      render(0);
      status("Forecast by " + answer.model.name + " version " + answer.model.version + " (" +
        answer.num_samples + " samples) for " + answer.series.length + " series.");
    } catch (err) {
      status("");
      showError(err.message);
    } finally {
      $("submit").disabled = false;
    }
  }

  function readFile(event) {
    const file = event.target.files[0];
    if (!file) return;
    const reader = new FileReader();
    reader.onload = () => { $("data").value = reader.result; status("Loaded " + file.name + "."); };
    reader.onerror = () => showError("could not read " + file.name + ".");
    reader.readAsText(file);
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (document.body.getAttribute("data-key-required") === "true") {
      $("key-label").hidden = false;
      $("api-key").value = sessionStorage.getItem("latent-ode-api-key") || "";
    }
    $("api-key").addEventListener("change", () => {
      sessionStorage.setItem("latent-ode-api-key", $("api-key").value.trim());
      loadModel();
    });
    $("load-example").addEventListener("click", loadExample);
    $("submit").addEventListener("click", submit);
    $("download").addEventListener("click", download);
    $("file").addEventListener("change", readFile);
    $("series-select").addEventListener("change", (e) => render(Number(e.target.value)));
    loadModel();
  });
})();
