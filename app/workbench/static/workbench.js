// The workbench page: columns of the same query in different modes or profiles, "why here" per hit,
// pooled judging into the index's judgements folder, and the comparison of two profiles. Plain JS, no build.
"use strict";

const MODES = ["bm25", "knn", "hybrid", "hybrid+rerank", "sparse", "hybrid3", "hybrid3+rerank"];
const DEFAULT_COLUMNS = ["bm25", "knn", "hybrid", "hybrid+rerank"];
const state = { index: window.HS_INDEX, fields: {}, profiles: [], columns: [], results: [], grades: {} };

function key() {
  return sessionStorage.getItem("hs-api-key") || "";
}

async function api(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (key()) headers["Authorization"] = "Bearer " + key();
  const response = await fetch(path, body === undefined ? { headers } : { method: "POST", headers, body: JSON.stringify(body) });
  if (response.status === 401) {
    const given = prompt("This workbench needs its API key:");
    if (given) { sessionStorage.setItem("hs-api-key", given); return api(path, body); }
  }
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function showError(err) {
  document.getElementById("error").textContent = err ? String(err.message || err) : "";
}

// rank-biased overlap (p = 0.9) of two id lists, truncated at the shorter one, as the server computes it
function rbo(a, b, p = 0.9) {
  const depth = Math.min(a.length, b.length);
  if (!depth) return a.length || b.length ? 0 : 1;
  const seenA = new Set(), seenB = new Set();
  let overlap = 0, total = 0;
  for (let d = 1; d <= depth; d++) {
    const x = a[d - 1], y = b[d - 1];
    if (x === y) overlap += 1; else overlap += (seenB.has(x) ? 1 : 0) + (seenA.has(y) ? 1 : 0);
    seenA.add(x); seenB.add(y);
    total += Math.pow(p, d - 1) * overlap / d;
  }
  return (1 - p) * total / (1 - Math.pow(p, depth));
}

async function loadIndexes() {
  const indexes = await api("/indexes");
  const select = document.getElementById("index");
  select.replaceChildren(...indexes.map(i => el("option", { value: i.name }, `${i.name} (${i.count} docs)`)));
  if (!indexes.some(i => i.name === state.index) && indexes.length) state.index = indexes[0].name;
  select.value = state.index;
  select.onchange = () => { state.index = select.value; loadIndex(); };
  await loadIndex();
}

async function loadIndex() {
  const info = await api("/indexes/" + encodeURIComponent(state.index));
  state.fields = info.metadata_fields || {};
  const box = document.getElementById("filters");
  box.replaceChildren(...Object.entries(state.fields).map(([name, type]) =>
    el("label", {}, name + " ", el("input", { "data-field": name, "data-type": type, placeholder: type === "keyword" ? "value" : ">=2019" }))));
  state.sparse = Boolean(info.spec && info.spec.sparse_model);
  await refreshJudged();
}

function filters() {
  const out = {};
  for (const input of document.querySelectorAll("#filters input")) {
    const raw = input.value.trim();
    if (!raw) continue;
    const name = input.dataset.field, numeric = ["long", "double", "integer", "float"].includes(input.dataset.type);
    const range = raw.match(/^(>=|<=|>|<)\s*(.+)$/);
    const value = v => (numeric ? Number(v) : v === "true" ? true : v === "false" ? false : v);
    if (range) out[name] = { [{ ">=": "gte", ">": "gt", "<=": "lte", "<": "lt" }[range[1]]]: value(range[2]) };
    else out[name] = raw.includes("|") ? raw.split("|").map(value) : value(raw);
  }
  return Object.keys(out).length ? out : undefined;
}

function columnChoices() {
  const modes = MODES.filter(m => state.sparse || !m.includes("sparse") && !m.startsWith("hybrid3"));
  return modes.map(m => ["mode:" + m, m]).concat(state.profiles.map(p => ["profile:" + p, "profile " + p]));
}

function buildColumns() {
  const n = Number(document.getElementById("ncols").value);
  const box = document.getElementById("columns");
  box.style.gridTemplateColumns = `repeat(${n}, minmax(0, 1fr))`;
  while (state.columns.length < n) state.columns.push("mode:" + DEFAULT_COLUMNS[state.columns.length % 4]);
  state.columns.length = n;
}

async function search() {
  const query = document.getElementById("query").value.trim();
  if (!query) return;
  showError("");
  buildColumns();
  document.getElementById("status").textContent = "searching…";
  try {
    state.results = await Promise.all(state.columns.map(choice => {
      const [kind, name] = choice.split(/:(.*)/s);
      const body = { index: state.index, query, top_k: 10, filters: filters() };
      if (kind === "mode") body.mode = name; else body.profile = name;
      return api("/search", body);
    }));
    state.grades = {};
    for (const result of state.results) for (const hit of result.hits) if (hit.grade !== null) state.grades[hit.doc_id] = hit.grade;
    document.getElementById("status").textContent = state.results.map(r => `${r.mode} ${r.took_ms} ms`).join(" · ");
  } catch (err) {
    showError(err);
    document.getElementById("status").textContent = "";
  }
  render();
}

function render() {
  const box = document.getElementById("columns");
  box.replaceChildren(...state.columns.map((choice, i) => renderColumn(choice, i, state.results[i])));
  const ids = state.results.map(r => (r ? r.hits.map(h => h.doc_id) : []));
  const pairs = [];
  for (let i = 0; i < ids.length; i++) for (let j = i + 1; j < ids.length; j++)
    pairs.push(`${i + 1}–${j + 1}: ${rbo(ids[i], ids[j]).toFixed(2)}`);
  document.getElementById("overlap").textContent = pairs.length ? "overlap (RBO, p=0.9)  " + pairs.join("   ") : "";
}

function renderColumn(choice, i, result) {
  const select = el("select", { onchange: e => { state.columns[i] = e.target.value; search(); } },
    ...columnChoices().map(([value, label]) => el("option", { value }, label)));
  select.value = choice;
  const column = el("div", { class: "column", "data-column": String(i) }, el("h2", {}, `${i + 1}.`, select));
  for (const hit of result ? result.hits : []) column.append(renderHit(hit, result));
  return column;
}

function renderHit(hit, result) {
  const grade = state.grades[hit.doc_id];
  const why = Object.entries(hit.leg_ranks).map(([leg, rank]) =>
    `${leg} #${rank}` + (hit.contribution[leg] !== undefined ? ` (+${hit.contribution[leg].toFixed(4)})` : ""));
  if (hit.rank_before_rerank) why.push(`reranked from #${hit.rank_before_rerank}`);
  const judge = el("span", { class: "judge" }, ...[0, 1, 2].map(g =>
    el("button", { class: grade === g ? "on" : "", "data-grade": String(g), title: ["not relevant", "relevant", "highly relevant"][g],
      onclick: () => judgeHit(result.query, hit.doc_id, grade === g ? null : g) }, String(g))));
  return el("div", { class: "hit" + (grade !== undefined ? " grade-" + grade : ""), "data-doc": hit.doc_id },
    el("div", {}, `${hit.rank}. `, el("span", { class: "title" }, hit.title || hit.doc_id), `  [${hit.doc_id}] ${hit.score.toFixed(4)}`),
    renderText(hit),
    el("div", { class: "why" }, why.join(" · ") || result.mode),
    judge);
}

// a long document shows its best passage, marked, with a little of the text around it
function renderText(hit) {
  const p = hit.passage;
  if (!p || (p.start === 0 && p.end === hit.text.length)) return el("div", { class: "text" }, hit.text);
  const before = hit.text.slice(Math.max(0, p.start - 120), p.start), after = hit.text.slice(p.end, p.end + 120);
  return el("div", { class: "text", "data-passage": String(p.index) },
    (p.start > 120 ? "… " : "") + before, el("mark", { class: "passage" }, hit.text.slice(p.start, p.end)),
    after + (p.end + 120 < hit.text.length ? " …" : ""));
}

async function judgeHit(query, docId, grade) {
  try {
    const summary = await api("/judgements", { index: state.index, query, doc_id: docId, grade });
    if (grade === null) delete state.grades[docId]; else state.grades[docId] = grade;
    document.getElementById("judged").textContent = summary.judged_queries;
    render();
  } catch (err) { showError(err); }
}

async function refreshJudged() {
  const judged = await api("/judgements?index=" + encodeURIComponent(state.index));
  document.getElementById("judged").textContent = judged.judged_queries;
}

async function exportJudgements(event) {
  event.preventDefault();
  const files = await api("/judgements/export?index=" + encodeURIComponent(state.index));
  for (const [name, text] of Object.entries(files)) {
    const link = el("a", { href: URL.createObjectURL(new Blob([text])), download: name.replace("/", "-") });
    link.click();
  }
}

async function importJudgements(event) {
  const body = { index: state.index };
  for (const file of event.target.files) body[file.name.endsWith(".jsonl") ? "queries.jsonl" : "qrels/test.tsv"] = await file.text();
  try { const s = await api("/judgements/import", body); document.getElementById("judged").textContent = s.judged_queries; }
  catch (err) { showError(err); }
}

async function compare() {
  const a = document.getElementById("profileA").value, b = document.getElementById("profileB").value;
  const out = document.getElementById("compareOut");
  out.textContent = "comparing…";
  try {
    const r = await api("/compare", { index: state.index, profiles: [a, b] });
    out.replaceChildren(el("table", {},
      el("tr", {}, el("th", {}, "profile"), el("th", {}, "mode"), el("th", {}, "nDCG@10"), el("th", {}, "R@100")),
      ...r.profiles.map(p => el("tr", {}, el("td", {}, p.profile), el("td", {}, p.mode), el("td", {}, p["ndcg@10"]), el("td", {}, p["recall@100"])))),
      el("div", {}, `${r.queries} judged queries; paired randomisation test p = ${r.p_value}` + (r.significant ? " (significant at 0.05)" : "")));
  } catch (err) { out.textContent = ""; showError(err); }
}

async function start() {
  document.getElementById("go").onclick = search;
  document.getElementById("query").addEventListener("keydown", e => { if (e.key === "Enter") search(); });
  document.getElementById("ncols").onchange = () => { buildColumns(); render(); search(); };
  document.getElementById("export").onclick = exportJudgements;
  document.getElementById("import").onchange = importJudgements;
  document.getElementById("compareGo").onclick = compare;
  try {
    state.profiles = await api("/profiles");
    for (const id of ["profileA", "profileB"]) {
      document.getElementById(id).replaceChildren(el("option", { value: "" }, "served settings"),
        ...state.profiles.map(p => el("option", { value: p }, p)));
    }
    await loadIndexes();
  } catch (err) { showError(err); }
  buildColumns();
  render();
}

start();
