// Voting page: fetches the participant's next pair, shows it, and sends the answer. All text is set with
// textContent (a prompt is never parsed as HTML). The token is the last segment of this page's URL.
"use strict";
(function () {
  const token = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const api = "/api/p/" + encodeURIComponent(token);
  const $ = (id) => document.getElementById(id);
  let current = null;      // the pair on screen: {assignment, ...}
  let shownAt = 0;         // when both images had loaded
  let busy = false;
  let paused = false;

  function show(section) {
    for (const id of ["voting", "paused", "done"]) $(id).hidden = id !== section;
  }

  function setProgress(answered, total) {
    const pct = total ? Math.round((100 * answered) / total) : 0;
    $("progress-fill").style.width = pct + "%";
    $("progressbar").setAttribute("aria-valuenow", String(answered));
    $("progressbar").setAttribute("aria-valuemax", String(total));
    $("progress-text").textContent = answered + " of " + total + " answered";
  }

  function setBusy(value) {
    busy = value;
    for (const b of document.querySelectorAll("button.choice")) b.disabled = value;
  }

  async function request(url, options, attempts) {
    // Retries network failures and 5xx with back-off; 4xx answers are returned to the caller.
    let delay = 400;
    for (let i = 0; ; i++) {
      try {
        const r = await fetch(url, options);
        if (r.status < 500 || i + 1 >= attempts) return r;
      } catch (e) {
        if (i + 1 >= attempts) throw e;
      }
      $("message").textContent = "Connection problem, retrying…";
      await new Promise((ok) => setTimeout(ok, delay));
      delay = Math.min(delay * 2, 5000);
    }
  }

  function loaded(img) {
    return new Promise((ok) => {
      if (img.complete && img.naturalWidth) return ok();
      img.onload = () => ok();
      img.onerror = () => ok();
    });
  }

  async function loadNext() {
    setBusy(true);
    const r = await request(api + "/next", { cache: "no-store" }, 5);
    if (r.status === 404) {
      $("question").textContent = "This study link is not valid.";
      show(null);
      return;
    }
    const data = await r.json();
    $("question").textContent = data.question;
    document.title = data.title || "Preference study";
    setProgress(data.answered, data.total);
    if (data.done) {
      current = null;
      show("done");
      return;
    }
    current = data;
    $("prompt").textContent = data.prompt;
    const left = $("left"), right = $("right");
    left.src = data.left;
    right.src = data.right;
    if (!paused) show("voting");
    await Promise.all([loaded(left), loaded(right)]);
    shownAt = performance.now();
    $("message").textContent = data.paused ? "The study is paused by its organiser; votes are not taken now." : "";
    setBusy(false);
  }

  async function vote(choice) {
    if (busy || paused || !current) return;
    setBusy(true);
    const body = { assignment: current.assignment, choice: choice,
                   response_ms: Math.max(0, Math.round(performance.now() - shownAt)) };
    let r;
    try {
      r = await request(api + "/vote", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      }, 5);
    } catch (e) {
      $("message").textContent = "Could not reach the server; your answer was not saved. Try again.";
      setBusy(false);
      return;
    }
    if (r.ok || r.status === 409) {   // 409: this pair was already answered (e.g. a retried request)
      $("message").textContent = "";
      await loadNext();
      return;
    }
    const detail = (await r.json().catch(() => ({}))).detail || r.statusText;
    $("message").textContent = "Not saved: " + detail;
    setBusy(false);
  }

  function pause() {
    paused = true;
    show("paused");
    $("resume").focus();
  }

  function resume() {
    paused = false;
    if (current) show("voting");
    loadNext();
  }

  for (const b of document.querySelectorAll("button.choice")) {
    b.addEventListener("click", () => vote(b.dataset.choice));
  }
  $("pause").addEventListener("click", pause);
  $("resume").addEventListener("click", resume);
  document.addEventListener("keydown", (e) => {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const key = e.key;
    if (paused) {
      if (key === "r" || key === "R" || key === "Enter") { e.preventDefault(); resume(); }
      return;
    }
    const choice = { ArrowLeft: "left", ArrowRight: "right", ArrowDown: "tie", " ": "tie" }[key];
    if (choice) { e.preventDefault(); vote(choice); }
    else if (key === "p" || key === "P") { e.preventDefault(); pause(); }
  });
  loadNext();
})();
