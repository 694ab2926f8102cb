/* Workers page. */
"use strict";

(() => {
  const { el, api, say, when, short } = SF;
  async function load() {
    try {
      const list = await api("/api/workers");
      const rows = list.items.map((w) => el("tr", { class: "worker-row", dataset: { id: w.instance_id, status: w.status } },
        el("td", { class: "mono", text: w.instance_id }), el("td", { text: w.job_type || "" }),
        el("td", { text: w.label || "" }), el("td", { text: w.version || "" }),
        el("td", {}, el("span", { class: `badge ${{ alive: "completed", gone: "error" }[w.status] || "stopped"}`, text: w.status })),
        el("td", { text: w.activity || "" }), el("td", { class: "mono", text: short(w.current_job) }),
        el("td", { text: when(w.first_seen) }), el("td", { text: when(w.last_seen) })));
      const body = document.querySelector("#workers tbody");
      body.replaceChildren(...rows);
      if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 9, class: "muted", text: "No worker has announced itself." })));
    } catch (error) { if (error.status !== 401) say(error.message); }
  }
  document.addEventListener("DOMContentLoaded", () => { load(); setInterval(load, 5000); });
})();
