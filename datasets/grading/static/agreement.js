"use strict";
// The agreement page: fetch the report and lay it out as tables (all text, no HTML from the data).

const fmt = (x) => (x === null || x === undefined ? "-" : typeof x === "number" && !Number.isInteger(x) ? x.toFixed(3) : String(x));

function table(headers, rows) {
  const t = document.createElement("table");
  const head = t.createTHead().insertRow();
  for (const h of headers) {
    const th = document.createElement("th");
    th.textContent = h;
    head.append(th);
  }
  const body = t.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    row.forEach((cell, i) => {
      const td = tr.insertCell();
      td.textContent = fmt(cell);
      if (i > 0 && typeof cell === "number") td.className = "num";
    });
  }
  return t;
}

const BINARY = ["n", "positives", "accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "kappa", "ece"];

function binaryRow(name, m) {
  return [name, ...BINARY.map((k) => m[k])];
}

function judgeSection(j) {
  const box = document.createElement("div");
  const h = document.createElement("h3");
  h.textContent = `${j.judge} vs human ${j.human_field}` + (j.judge_key ? ` (${j.judge_key})` : "");
  box.append(h);
  const pairwise = j.human_field === "winner";
  const slices = [["(all)", j.overall], ...Object.entries(j.slices)];
  if (pairwise) {
    box.append(table(["slice", "n", "accuracy", "kappa", "decisive n", "decisive accuracy", "decisive kappa"],
      slices.map(([s, m]) => [s, m.n, m.accuracy, m.kappa, m.decisive.n, m.decisive.accuracy, m.decisive.kappa])));
  } else {
    box.append(table(["slice", ...BINARY], slices.map(([s, m]) => binaryRow(s, m))));
  }
  return box;
}

(async () => {
  const resp = await fetch("api/agreement");
  if (resp.status === 401) { location.href = "signin?next=agreement"; return; }
  const data = await resp.json();
  const status = document.getElementById("status");
  if (!resp.ok) { status.textContent = data.error ? data.error.message : `HTTP ${resp.status}`; return; }
  status.hidden = true;
  document.getElementById("summary").textContent =
    `${data.items} pairs queued · ${data.grades} grades · ${data.skipped} skipped`;
  const judges = document.getElementById("judge-tables");
  for (const j of data.judges) judges.append(judgeSection(j));
  if (!data.judges.length) judges.textContent = "No judged pair has been graded yet.";
  document.getElementById("judges").hidden = false;
  const raters = document.getElementById("rater-tables");
  raters.append(table(["field", "units", "values", "percent agreement", "Krippendorff's alpha"],
    data.raters.map((r) => [r.field, r.units, r.values, r.percent_agreement, r.alpha])));
  const pairs = data.raters.flatMap((r) => r.pairs.map((p) => [r.field, `${p.a} / ${p.b}`, p.n, p.agreement, p.kappa]));
  if (pairs.length) raters.append(table(["field", "evaluators", "n", "agreement", "Cohen's kappa"], pairs));
  document.getElementById("raters").hidden = false;
  document.getElementById("bias-table").append(table(["evaluator", "n", "left (A) wins", "right (B) wins", "ties", "left share", "p"],
    data.position_bias.map((b) => [b.evaluator, b.n, b.left, b.right, b.ties, b.left_share, b.p_value])));
  document.getElementById("bias").hidden = false;
})();
