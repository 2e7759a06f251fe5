// Admin page: polls the study's status every 5 s. Text only (textContent), never HTML from the server.
"use strict";
(function () {
  const token = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const api = "/api/admin/" + encodeURIComponent(token);
  const $ = (id) => document.getElementById(id);

  function row(cells) {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement("td");
      if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? "" : String(c);
      if (typeof c === "number") td.className = "num";
      tr.appendChild(td);
    }
    return tr;
  }

  async function refresh() {
    try {
      const r = await fetch(api + "/status", { cache: "no-store" });
      if (!r.ok) { $("message").textContent = "Status unavailable (" + r.status + ")"; return; }
      const s = await r.json();
      $("title").textContent = (s.title || "Preference study") + " — admin";
      $("question").textContent = "Question: " + s.question;
      $("state").textContent = s.paused ? "paused (votes refused)" : "taking votes";
      const tally = $("tally").tBodies[0];
      tally.replaceChildren(...s.tally.map((t) => {
        const n = t.wins_a + t.wins_b + t.ties;
        return row([t.a, t.b, t.wins_a, t.wins_b, t.ties, n ? ((t.wins_a + t.ties / 2) / n).toFixed(3) : ""]);
      }));
      const people = $("participants").tBodies[0];
      people.replaceChildren(...s.participants.map((p) => {
        let link = "";
        if (p.link) { link = document.createElement("a"); link.href = p.link; link.textContent = "link"; }
        return row([p.name, p.kind, p.claimed ? "yes" : "no", p.answered + " / " + p.total,
                    p.attention_answered ? p.attention_passed + " / " + p.attention_answered : "", link]);
      }));
      $("message").textContent = "Updated " + new Date().toLocaleTimeString();
    } catch (e) {
      $("message").textContent = "Server unreachable; retrying.";
    }
  }

  async function action(name) {
    await fetch(api + "/" + name, { method: "POST" });
    refresh();
  }
  $("pause").addEventListener("click", () => action("pause"));
  $("resume").addEventListener("click", () => action("resume"));
  refresh();
  setInterval(refresh, 5000);
})();
