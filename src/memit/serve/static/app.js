// The playground page: plain JavaScript, no framework, nothing fetched from outside this server.
"use strict";

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
const pct = (p) => (p === null || p === undefined ? "–" : p.toFixed(3));
let polling = null;

async function api(path, body) {
  const opts = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const res = await fetch(path, opts);
  const data = await res.json().catch(() => ({error: `${res.status} ${res.statusText}`}));
  return {ok: res.ok, status: res.status, data};
}

// -- facts ------------------------------------------------------------------------------------
function addFact(f = {}) {
  const tr = document.createElement("tr");
  tr.innerHTML = ["subject", "prompt", "target_new", "target_true"].map(
    (k) => `<td><input data-k="${k}" value="${esc(f[k])}"></td>`).join("") +
    `<td><button type="button" class="remove" title="remove">×</button></td>`;
  tr.querySelector(".remove").onclick = () => tr.remove();
  $("facts").tBodies[0].appendChild(tr);
  return tr;
}

function tableRecords() {
  return [...$("facts").tBodies[0].rows].map((tr) => {
    const rec = {};
    tr.querySelectorAll("input").forEach((i) => { if (i.value.trim()) rec[i.dataset.k] = i.value.trim(); });
    return rec;
  });
}

function showErrors(errors) {
  const rows = [...$("facts").tBodies[0].rows];
  rows.forEach((tr) => tr.classList.remove("bad"));
  $("errors").innerHTML = (errors || []).map((e) => `<li>${esc(e.error)}</li>`).join("");
  (errors || []).forEach((e) => { if (e.record !== null && rows[e.record]) rows[e.record].classList.add("bad"); });
}

async function usePasted() {
  const r = await api("/api/check", {text: $("paste").value, name: $("upload").files[0]?.name || "pasted text"});
  if (!r.ok) { showErrors(r.data.errors || [{record: null, error: r.data.error}]); return; }
  $("facts").tBodies[0].innerHTML = "";
  r.data.facts.forEach((f) => addFact(f));
  showErrors([]);
}

// -- edit ---------------------------------------------------------------------------------------
async function startEdit() {
  const recs = tableRecords().filter((r) => Object.keys(r).length);
  if (!recs.length) { showErrors([{record: null, error: "add a fact first"}]); return; }
  const r = await api("/api/edit", {text: JSON.stringify(recs), name: "the table"});
  if (!r.ok) { showErrors(r.data.errors || [{record: null, error: r.data.error}]); return; }
  showErrors([]);
  poll();
}

function poll() {
  clearTimeout(polling);
  polling = setTimeout(refresh, 300);
}

async function refresh() {
  const r = await api("/api/info");
  if (!r.ok) return;
  const info = r.data, job = info.job;
  $("model").textContent = `${info.model} · ${info.method} · layers ${info.layers.join(", ")}`;
  const running = job && job.state === "running";
  $("status").textContent = running ? "editing" : "idle";
  $("status").className = running ? "pill busy" : "pill";
  $("edit").disabled = running; $("cancel").disabled = !running;
  $("revert").disabled = running || !info.steps.length; $("probe").disabled = running;
  if (job) {
    $("phase").textContent = running ? `${job.phase}${job.total ? ` (${job.done} of ${job.total})` : ""}` :
      job.state === "done" ? `edit ${job.step} done` : job.state === "cancelled" ? "cancelled: the model is as it was" :
      `failed: ${job.error}; the model is as it was`;
    $("bar").value = running ? (job.total ? job.done / job.total : 0) : (job.state === "done" ? 1 : 0);
  }
  renderHistory(info.steps);
  renderResult(info.steps[info.steps.length - 1]);
  if (running) poll();
}

function renderResult(step) {
  if (!step) { $("results").hidden = true; $("summary").textContent = ""; $("layers").innerHTML = ""; return; }
  const n = step.facts.length, held = step.facts.filter((f) => f.holds).length;
  $("summary").textContent = held === n ? `${n} of ${n} facts hold.` : `${held} of ${n} facts hold; ${n - held} did not.`;
  $("results").hidden = false;
  $("results").tBodies[0].innerHTML = step.facts.map((f) => `<tr>
    <td>${esc(f.subject)}</td><td>${esc(f.prompt)}</td><td>${esc(f.target_new)}</td>
    <td class="${f.holds ? "held" : "failed"}">${f.holds ? "held" : "failed"}</td>
    <td>${pct(f.p_new[0])} → ${pct(f.p_new[1])}</td><td>${pct(f.p_true[0])} → ${pct(f.p_true[1])}</td>
    <td>${f.round ?? "–"}</td><td>${esc(f.stop ?? "–")}</td><td>${esc(f.reason ?? "")}</td></tr>`).join("");
  $("layers").innerHTML = layerPlot(step.layers);
}

// ‖ΔW‖/‖W‖ per layer as bars, each labelled with its condition number.
function layerPlot(layers) {
  if (!layers.length) return "";
  const w = 60, h = 110, top = Math.max(...layers.map((l) => l.delta_rel_norm || 0), 1e-12);
  const bars = layers.map((l, i) => {
    const bh = Math.round(80 * (l.delta_rel_norm || 0) / top), x = 30 + i * w;
    return `<rect x="${x}" y="${90 - bh}" width="${w - 16}" height="${bh}" fill="#457b9d"></rect>
      <text x="${x + (w - 16) / 2}" y="104" text-anchor="middle">layer ${l.layer}</text>
      <text x="${x + (w - 16) / 2}" y="${86 - bh}" text-anchor="middle">${(l.delta_rel_norm ?? 0).toFixed(3)}</text>
      <title>layer ${l.layer}: ‖ΔW‖/‖W‖ ${l.delta_rel_norm}, condition number ${l.cond}</title>`;
  }).join("");
  const conds = layers.map((l) => `layer ${l.layer}: ${l.cond ? l.cond.toExponential(1) : "n/a"}`).join(" · ");
  return `<svg id="layer-plot" width="${40 + layers.length * w}" height="${h}" font-size="10">${bars}</svg>
    <p class="hint">‖ΔW‖/‖W‖ per edited layer. Condition number of the solve: ${conds}</p>`;
}

function renderHistory(steps) {
  $("history").innerHTML = steps.map((s) => `<li>edit ${s.step}: ${s.facts.length} facts, ` +
    `${s.verification.held ?? "?"} held after ${s.verification.rounds_used ?? 1} round(s)</li>`).join("") ||
    "<li class='hint'>no edits yet</li>";
  ["dl-delta", "dl-adapter"].forEach((id) => $(id).classList.toggle("disabled", !steps.length));
}

// -- probe, revert --------------------------------------------------------------------------------
async function probe() {
  const r = await api("/api/probe", {prompt: $("prompt").value, k: 5});
  if (!r.ok) { showErrors([{record: null, error: r.data.error}]); return; }
  $("probe-out").hidden = false;
  for (const side of ["before", "after"]) {
    $(`gen-${side}`).textContent = r.data.prompt + " ⟶ " + r.data[side].text;
    $(`top-${side}`).innerHTML = r.data[side].top.map((t) => `<tr><td>${esc(JSON.stringify(t.token))}</td><td>${t.p.toFixed(3)}</td></tr>`).join("");
  }
}

async function revert() {
  const r = await api("/api/revert", {});
  if (!r.ok) showErrors([{record: null, error: r.data.error}]);
  refresh();
}

$("add-fact").onclick = () => addFact();
$("load-paste").onclick = usePasted;
$("upload").onchange = async () => { const f = $("upload").files[0]; if (f) { $("paste").value = await f.text(); usePasted(); } };
$("edit").onclick = startEdit;
$("cancel").onclick = async () => { await api("/api/cancel", {}); poll(); };
$("probe").onclick = probe;
$("revert").onclick = revert;
addFact();
refresh();
