// The rating page: one image at a time; every click is saved (POST answer); a reload resumes at the first image
// without a complete answer. Keys: R real, S synthetic, 1..N confidence, arrows previous/next, C comment.
"use strict";
(function () {
  const base = location.pathname.replace(/\/+$/, "");
  const $ = (id) => document.getElementById(id);
  const levels = parseInt($("app").dataset.levels, 10);
  let state = null, idx = 0, shownAt = 0, shownIdx = -1;

  const item = () => state.items[idx];
  const complete = (it) => !!it.answer && (!state.require_confidence || !!it.confidence);
  const nComplete = () => state.items.filter(complete).length;

  function status(text, error) {
    $("status").textContent = text;
    $("status").classList.toggle("error", !!error);
  }

  async function load() {
    const r = await fetch(base + "/state", {cache: "no-store", headers: {Accept: "application/json"}});
    if (!r.ok) { status("This link is not valid (" + r.status + ").", true); return; }
    state = await r.json();
    if (state.finished) { showDone(null); return; }
    const first = state.items.findIndex((it) => !complete(it));
    idx = first < 0 ? state.items.length : first;
    $("rating").hidden = false;
    show();
  }

  function show() {
    if (idx >= state.items.length) { finish(); return; }
    const it = item();
    $("image").src = base + "/image/" + it.id;
    if (idx + 1 < state.items.length) { new Image().src = base + "/image/" + state.items[idx + 1].id; }
    $("progress").textContent = (idx + 1) + " / " + state.total;
    $("bar").value = nComplete();
    document.querySelectorAll(".answer").forEach((b) => b.classList.toggle("selected", b.dataset.answer === it.answer));
    document.querySelectorAll(".conf").forEach((b) =>
      b.classList.toggle("selected", parseInt(b.dataset.confidence, 10) === it.confidence));
    if (shownIdx !== idx) {  // a new image: its own comment, a fresh clock and status (a redraw keeps what is typed)
      $("comment").value = it.comment || "";
      shownAt = performance.now();
      status("", false);
    }
    shownIdx = idx;
    $("prev").disabled = idx === 0;
    $("next").disabled = !complete(it);
  }

  async function save(it) {
    const body = {image_id: it.id, answer: it.answer, confidence: it.confidence || null,
                  comment: $("comment").value || null, elapsed_ms: Math.round(performance.now() - shownAt)};
    const r = await fetch(base + "/answer", {method: "POST", headers: {"Content-Type": "application/json"},
                                             body: JSON.stringify(body)});
    if (!r.ok) { status("Not saved (" + r.status + "): please retry.", true); return false; }
    it.comment = body.comment;
    status("saved", false);
    return true;
  }

  // Changes are applied one after another (a key pressed while the previous answer is being saved waits its turn).
  let queue = Promise.resolve();
  function update(change) { queue = queue.then(() => apply(change)).catch(() => status("Not saved.", true)); }

  async function apply(change) {
    if (!state || idx >= state.items.length) return;
    const it = item();
    const before = {answer: it.answer, confidence: it.confidence};
    const wasComplete = complete(it);
    Object.assign(it, change);
    if (it.answer && !(await save(it))) { Object.assign(it, before); show(); return; }
    if (!wasComplete && complete(it)) { idx += 1; }  // a revisited image stays until Next (or the right arrow)
    show();
  }

  function go(delta) { queue = queue.then(() => move(delta)); }

  function move(delta) {
    if (!state) return;
    if (delta > 0 && !complete(item())) return;
    idx = Math.max(0, Math.min(state.items.length, idx + delta));
    show();
  }

  async function finish() {
    const r = await fetch(base + "/finish", {method: "POST"});
    if (r.status === 409) {  // something is missing: back to the first incomplete image
      idx = Math.max(0, state.items.findIndex((it) => !complete(it)));
      show();
      return;
    }
    if (!r.ok) { status("Could not finish (" + r.status + ").", true); return; }
    showDone(await r.json());
  }

  function showDone(result) {
    $("rating").hidden = true;
    $("done").hidden = false;
    $("progress").textContent = state.total + " / " + state.total;
    $("bar").value = state.total;
    if (result && result.accuracy !== undefined) {
      $("score").textContent = "Your score: " + result.correct + " of " + result.total + " correct (" +
        Math.round(100 * result.accuracy) + "%).";
    }
  }

  document.querySelectorAll(".answer").forEach((b) =>
    b.addEventListener("click", () => update({answer: b.dataset.answer})));
  document.querySelectorAll(".conf").forEach((b) =>
    b.addEventListener("click", () => update({confidence: parseInt(b.dataset.confidence, 10)})));
  $("prev").addEventListener("click", () => go(-1));
  $("next").addEventListener("click", () => go(1));
  $("comment").addEventListener("change", () => { const it = state && item(); if (it && it.answer) save(it); });

  document.addEventListener("keydown", (e) => {
    if (e.target === $("comment")) { if (e.key === "Escape") $("comment").blur(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key.toLowerCase();
    if (k === "r") update({answer: "real"});
    else if (k === "s") update({answer: "synthetic"});
    else if (/^[1-9]$/.test(k) && parseInt(k, 10) <= levels) update({confidence: parseInt(k, 10)});
    else if (e.key === "ArrowLeft") go(-1);
    else if (e.key === "ArrowRight") go(1);
    else if (k === "c") { e.preventDefault(); $("comment").focus(); }
    else return;
    e.preventDefault();
  });

  load();
})();
