"use strict";
// The grading page: load a pair, collect the rubric with the keyboard (or the mouse), post the grade.
// HTML from the server is already sanitized (datasets/render.py); everything else goes in as text.

const $ = (id) => document.getElementById(id);
const rows = Array.from(document.querySelectorAll("#rubric .row"));
let item = null;        // the pair on screen
let values = {};        // field -> chosen value (strings, as in data-value)
let focusRow = 0;
let visibleMs = 0;      // time on task: counted only while the page is visible
let visibleSince = null;
let busy = false;

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  };
  const resp = await fetch(path, init);
  if (resp.status === 401) {
    location.href = "signin";
    throw new Error("signed out");
  }
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error((data.error && data.error.message) || `HTTP ${resp.status}`);
  return data;
}

function showProgress(p) {
  $("progress").textContent =
    `${p.graded_by_you} graded by you · ${p.fully_graded} of ${p.queued} pairs fully graded`;
}

function startClock() {
  visibleMs = 0;
  visibleSince = document.hidden ? null : performance.now();
}

function seconds() {
  const running = visibleSince === null ? 0 : performance.now() - visibleSince;
  return Math.round((visibleMs + running) / 100) / 10;
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden && visibleSince !== null) {
    visibleMs += performance.now() - visibleSince;
    visibleSince = null;
  } else if (!document.hidden && visibleSince === null && item) {
    visibleSince = performance.now();
  }
});

function render(view) {
  item = view;
  values = {};
  $("note").value = "";
  $("corrected").value = "";
  $("form-error").textContent = "";
  const conv = $("conversation");
  conv.replaceChildren();
  for (const turn of view.turns) {
    const box = document.createElement(turn.role === "system" ? "details" : "div");
    box.className = `turn ${turn.role}`;
    const role = document.createElement(turn.role === "system" ? "summary" : "div");
    role.className = "role";
    role.textContent = turn.role === "system" ? "System prompt (click to show)" : turn.role;
    const text = document.createElement("div");
    text.className = "text";
    text.innerHTML = turn.html;  // sanitized by the server
    box.append(role, text);
    conv.append(box);
  }
  const ctx = $("context");
  ctx.replaceChildren();
  for (const p of view.context) {
    const li = document.createElement("li");
    const head = document.createElement("div");
    head.className = "passage-head";
    head.textContent = [p.id && `[${p.id}]`, p.title].filter(Boolean).join(" ");
    const text = document.createElement("div");
    text.innerHTML = p.html;  // sanitized by the server
    li.append(head, text);
    ctx.append(li);
  }
  $("context-count").textContent = String(view.context.length);
  $("context-box").hidden = view.context.length === 0;
  $("answer-a").querySelector(".body").innerHTML = view.answers.a.html;  // sanitized by the server
  $("answer-b").querySelector(".body").innerHTML = view.answers.b.html;
  for (const row of rows) row.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", "false"));
  setFocus(0);
  $("status").hidden = true;
  $("pair").hidden = false;
  window.scrollTo(0, 0);
  startClock();
}

async function loadNext(exclude) {
  busy = true;
  try {
    const data = await api(`api/next${exclude ? `?exclude=${encodeURIComponent(exclude)}` : ""}`);
    showProgress(data.progress);
    if (data.item) {
      render(data.item);
    } else {
      item = null;
      $("pair").hidden = true;
      $("status").hidden = false;
      $("status").textContent = "Nothing left to grade for you. Thank you!";
    }
  } catch (err) {
    $("status").hidden = false;
    $("status").textContent = `Could not load a pair: ${err.message}`;
  } finally {
    busy = false;
  }
}

function setFocus(index) {
  focusRow = Math.max(0, Math.min(rows.length - 1, index));
  rows.forEach((r, i) => r.classList.toggle("focused", i === focusRow));
  rows[focusRow].scrollIntoView({ block: "nearest" });
}

function choose(row, value) {
  values[row.dataset.field] = value;
  row.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.value === value)));
}

function chooseNth(n) {
  const row = rows[focusRow];
  const buttons = row.querySelectorAll("button");
  if (n < 1 || n > buttons.length) return;
  choose(row, buttons[n - 1].dataset.value);
  setFocus(focusRow + 1);
  if (rows[focusRow].classList.contains("text")) setFocus(focusRow);  // stop at the text boxes
}

function cycle(step) {
  const row = rows[focusRow];
  const buttons = Array.from(row.querySelectorAll("button"));
  if (!buttons.length) return;
  const at = buttons.findIndex((b) => b.dataset.value === values[row.dataset.field]);
  const next = at < 0 ? (step > 0 ? 0 : buttons.length - 1) : (at + step + buttons.length) % buttons.length;
  choose(row, buttons[next].dataset.value);
}

const bool = (v) => (v === undefined || v === "" ? null : v === "true");

async function submit(skipped) {
  if (!item || busy) return;
  if (!skipped && !values.preference) {
    $("form-error").textContent = "Choose A, B or tie first (1, 2 or 3 on the first row), or skip with s.";
    setFocus(0);
    return;
  }
  busy = true;
  const grade = {
    item_id: item.id,
    skipped,
    preference: values.preference || null,
    left: { grounded: values.grounded_a || null, citations_correct: bool(values.citations_a), meets_intent: bool(values.intent_a) },
    right: { grounded: values.grounded_b || null, citations_correct: bool(values.citations_b), meets_intent: bool(values.intent_b) },
    keep: values.keep === "true",
    note: $("note").value,
    corrected_answer: $("corrected").value || null,
    seconds: seconds(),
  };
  try {
    await api("api/grades", grade);
  } catch (err) {
    $("form-error").textContent = `Not saved: ${err.message}`;
    busy = false;
    return;
  }
  busy = false;
  await loadNext(item.id);
}

rows.forEach((row, i) => {
  row.addEventListener("click", () => setFocus(i));
  row.querySelectorAll("button").forEach((b) => b.addEventListener("click", () => choose(row, b.dataset.value)));
});
$("rubric").addEventListener("submit", (e) => { e.preventDefault(); submit(false); });
$("skip").addEventListener("click", () => submit(true));
$("help-button").addEventListener("click", () => $("help").showModal());
$("signout").addEventListener("click", async () => { await api("api/signout", {}); location.href = "signin"; });

document.addEventListener("keydown", (e) => {
  const typing = e.target instanceof HTMLTextAreaElement || e.target instanceof HTMLInputElement;
  if ($("help").open) return;  // the dialog handles Esc itself
  if (typing) {
    if (e.key === "Escape") { e.target.blur(); e.preventDefault(); }
    else if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(false); }
    return;
  }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const handled = {
    "1": () => chooseNth(1), "2": () => chooseNth(2), "3": () => chooseNth(3),
    ArrowDown: () => setFocus(focusRow + 1), ArrowUp: () => setFocus(focusRow - 1),
    ArrowRight: () => cycle(1), ArrowLeft: () => cycle(-1),
    Enter: () => submit(false), s: () => submit(true),
    n: () => { setFocus(rows.findIndex((r) => r.dataset.field === "note")); $("note").focus(); },
    c: () => { setFocus(rows.findIndex((r) => r.dataset.field === "corrected")); $("corrected").focus(); },
    x: () => { $("context-box").open = !$("context-box").open; },
    "?": () => $("help").showModal(),
  }[e.key];
  if (handled) {
    e.preventDefault();
    if (rows[focusRow].classList.contains("text") && ["1", "2", "3"].includes(e.key)) return;
    handled();
  }
});

window.addEventListener("pagehide", () => {
  // give the pair back at once rather than holding it until the lease runs out
  if (item) navigator.sendBeacon("api/release", new Blob([JSON.stringify({ item_id: item.id })], { type: "application/json" }));
});

(async () => {
  const me = await api("api/me");
  $("who").textContent = me.evaluator;
  $("agreement-link").hidden = !me.admin;
  $("report-link").hidden = !me.admin;
  await loadNext("");
})();
