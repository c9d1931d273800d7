// voltmodels web tool: one structure (voltage, interval, local voltages, cell view) or a CSV screen.
// Talks to its own origin only: /api/predict (proxy to the endpoint's /invocations) and /api/cell.
"use strict";

// Rows per request of a CSV screen; `?chunk=N` (1-100) overrides it.
const CHUNK_ROWS = (() => {
  const n = parseInt(new URLSearchParams(window.location.search).get("chunk"), 10);
  return n >= 1 && n <= 100 ? n : 10;
})();
const COLUMNS = ["structure", "working_ion", "structure_charged"];
const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------------------------------------
// Requests

/** One sentence from an error body: the scoring server's message without its echo of the input. */
function errorSentence(body, status) {
  let text = body && typeof body.message === "string" ? body.message : "";
  if (!text) return `The endpoint answered HTTP ${status}.`;
  const marker = "\nError: ";
  const at = text.lastIndexOf(marker);
  if (at >= 0) text = text.slice(at + marker.length);
  text = text.split("\n")[0].trim();
  if (text.length > 600) text = text.slice(0, 600) + "…";
  if (!/[.!?…]$/.test(text)) text += ".";
  return text;
}

async function postJSON(url, body) {
  let response;
  try {
    response = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  } catch (err) {
    return { ok: false, status: 0, message: `The web tool did not answer (${err.message}).` };
  }
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = null;
  }
  if (!response.ok) return { ok: false, status: response.status, message: errorSentence(data, response.status) };
  return { ok: true, status: response.status, data };
}

function predict(rows, params, columns = COLUMNS) {
  return postJSON("/api/predict", { dataframe_split: { columns, data: rows }, params });
}

// ------------------------------------------------------------------------------------------------
// Small helpers

function fmt(x, digits = 3) {
  return typeof x === "number" && isFinite(x) ? x.toFixed(digits) : "";
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function clearRows(table) {
  const body = table.tBodies[0];
  while (body.firstChild) body.removeChild(body.firstChild);
  return body;
}

function showError(box, message) {
  box.textContent = message;
  box.hidden = !message;
}

function readFileInto(input, textarea) {
  input.addEventListener("change", () => {
    const file = input.files && input.files[0];
    if (!file) return;
    file.text().then((text) => { textarea.value = text; });
  });
}

function modelLabel(p) {
  return p.model_name ? `${p.model_name}${p.model_version ? " v" + p.model_version : ""}` : "";
}

// ------------------------------------------------------------------------------------------------
// Colors

const VIRIDIS = ["#440154", "#482878", "#3e4a89", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];

function hexToRgb(h) {
  return [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16));
}

function viridis(t) {
  t = Math.min(1, Math.max(0, isFinite(t) ? t : 0.5));
  const x = t * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const a = hexToRgb(VIRIDIS[i]);
  const b = hexToRgb(VIRIDIS[i + 1]);
  return `rgb(${a.map((v, k) => Math.round(v + f * (b[k] - v))).join(",")})`;
}

const ELEMENT_COLORS = {
  H: "#ffffff", Li: "#cc80ff", Na: "#ab5cf2", K: "#8f40d4", Rb: "#702eb0", Cs: "#57178f", Mg: "#8aff00", Ca: "#3dff00",
  Zn: "#7d80b0", Al: "#bfa6a6", Y: "#94ffff", O: "#ff0d0d", S: "#ffff30", Se: "#ffa100", F: "#90e050", Cl: "#1ff01f",
  N: "#3050f8", C: "#909090", B: "#ffb5b5", P: "#ff8000", Si: "#f0c8a0", Ti: "#bfc2c7", V: "#a6a6ab", Cr: "#8a99c7",
  Mn: "#9c7ac7", Fe: "#e06633", Co: "#f090a0", Ni: "#50d050", Cu: "#c88033", Mo: "#54b5b5", Nb: "#73c2c9", W: "#2194d6",
  Sn: "#668080", Sb: "#9e63b5", Bi: "#9e4fb5", Ge: "#668f8f", Ga: "#c28f8f", Zr: "#94e0e0", Ru: "#248f8f", Te: "#d47a00",
};

function elementColor(el) {
  if (ELEMENT_COLORS[el]) return ELEMENT_COLORS[el];
  let h = 0;
  for (const c of el) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${h},55%,55%)`;
}

// ------------------------------------------------------------------------------------------------
// Cell view: an orthographic SVG projection of the cell's atoms and edges

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, parent) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

function project(p) {
  // Rotate about z by 30 degrees, then tilt about x by -70 degrees: c points up, the cell seen from above.
  const a = (30 * Math.PI) / 180, b = (-70 * Math.PI) / 180;
  const x1 = p[0] * Math.cos(a) - p[1] * Math.sin(a);
  const y1 = p[0] * Math.sin(a) + p[1] * Math.cos(a);
  const z1 = p[2];
  return { x: x1, y: y1 * Math.cos(b) - z1 * Math.sin(b), depth: y1 * Math.sin(b) + z1 * Math.cos(b) };
}

/** Draw `cellData` (from /api/cell); `values` maps site -> local voltage, or null to color by element. */
function drawCell(container, cellData, values) {
  container.textContent = "";
  const L = cellData.lattice;
  const corners = [];
  for (let i = 0; i < 8; i++) {
    const f = [(i >> 2) & 1, (i >> 1) & 1, i & 1];
    corners.push([0, 1, 2].map((k) => f[0] * L[0][k] + f[1] * L[1][k] + f[2] * L[2][k]));
  }
  const edges = [];
  for (let i = 0; i < 8; i++) for (let j = i + 1; j < 8; j++) if ([1, 2, 4].includes(i ^ j)) edges.push([i, j]);
  const pc = corners.map(project);
  const atoms = cellData.sites.map((s) => ({ ...s, p: project(s.cart), r: Math.min(1.1, Math.max(0.35, 0.45 * s.radius)) }));
  const xs = [...pc.map((q) => q.x), ...atoms.map((a) => a.p.x - a.r), ...atoms.map((a) => a.p.x + a.r)];
  const ys = [...pc.map((q) => -q.y), ...atoms.map((a) => -a.p.y - a.r), ...atoms.map((a) => -a.p.y + a.r)];
  const minX = Math.min(...xs), maxX = Math.max(...xs), minY = Math.min(...ys), maxY = Math.max(...ys);
  const W = 600, H = 480, legendH = 60, pad = 16;
  const scale = Math.min((W - 2 * pad) / (maxX - minX || 1), (H - legendH - 2 * pad) / (maxY - minY || 1));
  const sx = (x) => pad + (x - minX) * scale;
  const sy = (y) => pad + (-y - minY) * scale;

  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, id: "cell-svg", role: "img" }, container);
  svgEl("title", {}, svg).textContent = `${cellData.formula}: ${cellData.sites.length} sites`;
  const back = svgEl("g", { class: "edges", stroke: "#999", "stroke-width": 1 }, svg);
  for (const [i, j] of edges) svgEl("line", { x1: sx(pc[i].x), y1: sy(pc[i].y), x2: sx(pc[j].x), y2: sy(pc[j].y) }, back);

  let lo = 0, hi = 1;
  if (values) {
    const v = Object.values(values).filter((x) => isFinite(x));
    lo = Math.min(...v);
    hi = Math.max(...v);
    if (!(hi > lo)) { lo -= 0.5; hi += 0.5; }
  }
  const colorOf = (a) => (values ? viridis((values[a.site] - lo) / (hi - lo)) : elementColor(a.element));
  const g = svgEl("g", { class: "atoms" }, svg);
  for (const a of [...atoms].sort((u, w) => u.p.depth - w.p.depth)) {
    const c = svgEl("circle", {
      class: "atom", cx: sx(a.p.x).toFixed(2), cy: sy(a.p.y).toFixed(2), r: (a.r * scale).toFixed(2),
      fill: colorOf(a), stroke: "#333", "stroke-width": 0.8, "data-site": a.site, "data-element": a.element,
    }, g);
    const v = values ? ` ${fmt(values[a.site])} V` : "";
    svgEl("title", {}, c).textContent = `site ${a.site} ${a.element}${v}`;
    if (a.r * scale >= 9) {
      const label = svgEl("text", {
        x: sx(a.p.x).toFixed(2), y: (sy(a.p.y) + 4).toFixed(2), "text-anchor": "middle", "font-size": 11,
        "font-family": "sans-serif", fill: "#111", stroke: "#fff", "stroke-width": 2.5, "paint-order": "stroke",
        "pointer-events": "none",
      }, g);
      label.textContent = a.element;
    }
  }

  // Legend (rectangles and text only: every circle in the SVG is an atom).
  const legend = svgEl("g", { class: "legend", "font-size": 12, "font-family": "sans-serif" }, svg);
  const y0 = H - legendH + 12;
  if (values) {
    const defs = svgEl("defs", {}, svg);
    const grad = svgEl("linearGradient", { id: "lv-gradient", x1: "0%", x2: "100%", y1: "0%", y2: "0%" }, defs);
    VIRIDIS.forEach((c, i) => svgEl("stop", { offset: `${(100 * i) / (VIRIDIS.length - 1)}%`, "stop-color": c }, grad));
    svgEl("text", { x: pad, y: y0 }, legend).textContent = "local voltage (V)";
    svgEl("rect", { x: pad, y: y0 + 6, width: 300, height: 14, fill: "url(#lv-gradient)", stroke: "#666" }, legend);
    svgEl("text", { x: pad, y: y0 + 36 }, legend).textContent = fmt(lo, 2);
    svgEl("text", { x: pad + 300, y: y0 + 36, "text-anchor": "end" }, legend).textContent = fmt(hi, 2);
  } else {
    let x = pad;
    for (const el of [...new Set(cellData.sites.map((s) => s.element))]) {
      svgEl("rect", { x, y: y0 + 6, width: 14, height: 14, fill: elementColor(el), stroke: "#333" }, legend);
      svgEl("text", { x: x + 18, y: y0 + 18 }, legend).textContent = el;
      x += 26 + 8 * el.length;
    }
  }
}

// ------------------------------------------------------------------------------------------------
// One structure

async function predictOne(event) {
  event.preventDefault();
  const structure = $("structure").value;
  const charged = $("structure-charged").value.trim() ? $("structure-charged").value : null;
  const materialId = $("material-id").value.trim();
  const ion = $("ion").value;
  showError($("single-error"), "");
  $("single-result").hidden = true;
  if (!structure.trim() && !materialId) {
    showError($("single-error"), "Paste or upload a structure, or type a material id, first.");
    return;
  }
  if (structure.trim() && materialId) {
    showError($("single-error"), "Give a structure or a material id, not both.");
    return;
  }
  $("predict").disabled = true;
  $("single-status").textContent = "Predicting…";
  try {
    // A material id is resolved by the endpoint (the structures bundled with the model, or the MP API);
    // the page then has no structure text to draw.
    const [answer, cellAnswer] = await Promise.all([
      materialId
        ? predict([[materialId, ion]], { local_voltages: true }, ["material_id", "working_ion"])
        : predict([[structure, ion, charged]], { local_voltages: true }),
      materialId
        ? Promise.resolve({ ok: false, message: `the structure of ${materialId} was looked up by the endpoint; paste it to see the cell` })
        : postJSON("/api/cell", { structure }),
    ]);
    if (!answer.ok) {
      showError($("single-error"), answer.message);
      return;
    }
    renderOne(answer.data.predictions[0], cellAnswer);
  } finally {
    $("predict").disabled = false;
    $("single-status").textContent = "";
  }
}

function renderOne(p, cellAnswer) {
  $("voltage").textContent = fmt(p.voltage);
  $("interval").textContent = `${fmt(p.voltage_lower)} – ${fmt(p.voltage_upper)}`;
  $("model").textContent = modelLabel(p);
  $("model-extra").textContent = ["mode", "family", "potential", "relaxation"].filter((k) => p[k]).map((k) => `${k}: ${p[k]}`).join(" · ");

  let local = null;
  if (typeof p.local_voltages === "string" && p.local_voltages) {
    try { local = JSON.parse(p.local_voltages); } catch (err) { local = null; }
  } else if (Array.isArray(p.local_voltages)) {
    local = p.local_voltages;
  }
  const body = clearRows($("local-table"));
  const sites = cellAnswer.ok ? cellAnswer.data.sites : [];
  let values = null;
  if (local) {
    values = {};
    $("local-note").textContent = `${local.length} sites; the cell is colored by local voltage.`;
    for (const s of local) {
      values[s.site] = s.local_voltage;
      const tr = document.createElement("tr");
      cell(tr, String(s.site));
      cell(tr, s.element);
      const frac = sites[s.site] ? sites[s.site].frac.map((x) => x.toFixed(3)).join(", ") : "";
      cell(tr, frac);
      cell(tr, fmt(s.local_voltage), "num");
      body.appendChild(tr);
    }
    $("local-table").hidden = false;
  } else {
    $("local-note").textContent = `Local voltages are not available for this model (${modelLabel(p) || "unknown"}); the cell is colored by element.`;
    $("local-table").hidden = true;
  }
  if (cellAnswer.ok) {
    $("formula").textContent = `${cellAnswer.data.formula}, ${cellAnswer.data.sites.length} sites`;
    $("cell-note").textContent = "";
    drawCell($("cell-view"), cellAnswer.data, values);
  } else {
    $("formula").textContent = "";
    $("cell-view").textContent = "";
    $("cell-note").textContent = `The cell cannot be drawn: ${cellAnswer.message}`;
  }
  $("single-result").hidden = false;
}

// ------------------------------------------------------------------------------------------------
// CSV screening

/** RFC 4180 CSV (quoted fields may hold commas, quotes and newlines) to an array of rows. */
function parseCSV(text) {
  const rows = [];
  let row = [], field = "", quoted = false, i = 0;
  if (text.charCodeAt(0) === 0xfeff) i = 1;
  for (; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') { field += '"'; i++; } else quoted = false;
      } else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") { row.push(field); field = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field); field = "";
      rows.push(row); row = [];
    } else field += c;
  }
  if (field !== "" || row.length) { row.push(field); rows.push(row); }
  return rows.filter((r) => r.length > 1 || (r.length === 1 && r[0].trim() !== ""));
}

function csvField(v) {
  const s = v === null || v === undefined ? "" : String(v);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

let batchResults = null;

async function screen() {
  showError($("batch-error"), "");
  const file = $("csv-file").files && $("csv-file").files[0];
  if (!file) {
    showError($("batch-error"), "Choose a CSV file first.");
    return;
  }
  const table = parseCSV(await file.text());
  if (table.length < 2) {
    showError($("batch-error"), "The CSV has no data rows.");
    return;
  }
  const header = table[0].map((h) => h.trim().toLowerCase());
  const col = (name) => header.indexOf(name);
  const missing = ["structure", "working_ion"].filter((c) => col(c) < 0);
  if (missing.length) {
    showError($("batch-error"), `The CSV lacks column(s) ${missing.join(", ")}; its columns are ${header.join(", ")}.`);
    return;
  }
  const get = (r, name) => (col(name) >= 0 && r[col(name)] !== undefined ? r[col(name)] : "");
  const rows = table.slice(1).map((r, k) => ({
    row: k + 1,
    id: get(r, "id").trim() || `row ${k + 1}`,
    structure: get(r, "structure"),
    working_ion: get(r, "working_ion").trim(),
    structure_charged: get(r, "structure_charged").trim() ? get(r, "structure_charged") : null,
  }));

  $("screen").disabled = true;
  $("download").disabled = true;
  $("batch-result").hidden = true;
  $("progress-box").hidden = false;
  setProgress(0, rows.length);
  const results = [];
  for (let start = 0; start < rows.length; start += CHUNK_ROWS) {
    const chunk = rows.slice(start, start + CHUNK_ROWS);
    const answer = await predict(chunk.map((r) => [r.structure, r.working_ion, r.structure_charged]), { on_error: "row" });
    chunk.forEach((r, k) => {
      const p = answer.ok ? answer.data.predictions[k] || {} : {};
      const error = answer.ok ? p.error || (isFinite(p.voltage) && p.voltage !== null ? "" : "no voltage returned") : answer.message;
      results.push({ ...r, ...(answer.ok ? p : {}), working_ion: r.working_ion, error });
    });
    setProgress(Math.min(rows.length, start + CHUNK_ROWS), rows.length);
  }
  batchResults = results;
  renderBatch(results);
  $("screen").disabled = false;
  $("download").disabled = false;
}

function setProgress(done, total) {
  const pct = total ? Math.round((100 * done) / total) : 100;
  $("progress").value = pct;
  $("progress-text").textContent = `${done} / ${total} rows (${pct} %)`;
}

function ranked(results) {
  return results.filter((r) => !r.error).sort((a, b) => b.voltage - a.voltage);
}

function renderBatch(results) {
  const good = ranked(results);
  const bad = results.filter((r) => r.error);
  const body = clearRows($("ranked-table"));
  good.forEach((r, k) => {
    const tr = document.createElement("tr");
    cell(tr, String(k + 1), "num");
    cell(tr, r.id);
    cell(tr, r.working_ion);
    cell(tr, fmt(r.voltage), "num");
    cell(tr, `${fmt(r.voltage_lower)} – ${fmt(r.voltage_upper)}`);
    cell(tr, modelLabel(r));
    cell(tr, r.mode || "");
    body.appendChild(tr);
  });
  const failed = clearRows($("failed-table"));
  for (const r of bad) {
    const tr = document.createElement("tr");
    cell(tr, String(r.row), "num");
    cell(tr, r.id);
    cell(tr, r.working_ion);
    cell(tr, r.error);
    failed.appendChild(tr);
  }
  $("ranked-count").textContent = String(good.length);
  $("failed-count").textContent = String(bad.length);
  $("batch-result").hidden = false;
}

function download() {
  if (!batchResults) return;
  const cols = ["rank", "id", "working_ion", "voltage", "voltage_lower", "voltage_upper", "model_name", "model_version", "mode", "family", "potential", "relaxation", "error"];
  const good = ranked(batchResults).map((r, k) => ({ ...r, rank: k + 1 }));
  const bad = batchResults.filter((r) => r.error).map((r) => ({ ...r, rank: "", voltage: "", voltage_lower: "", voltage_upper: "" }));
  const lines = [cols.join(","), ...[...good, ...bad].map((r) => cols.map((c) => csvField(r[c])).join(","))];
  const url = URL.createObjectURL(new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = "voltmodels_screen.csv";
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// ------------------------------------------------------------------------------------------------

function init() {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
      $("tab-single").hidden = tab.dataset.tab !== "single";
      $("tab-batch").hidden = tab.dataset.tab !== "batch";
    });
  }
  $("chunk-size").textContent = String(CHUNK_ROWS);
  readFileInto($("structure-file"), $("structure"));
  readFileInto($("structure-charged-file"), $("structure-charged"));
  $("single-form").addEventListener("submit", predictOne);
  $("screen").addEventListener("click", screen);
  $("download").addEventListener("click", download);
}

document.addEventListener("DOMContentLoaded", init);
