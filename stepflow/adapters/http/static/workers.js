/* Workers page: known workers, what they run, and the controls (pause, resume, status, stop). */
"use strict";

(() => {
  const { el, api, say, when, short } = SF;
  const BADGE = { alive: "completed", paused: "paused", gone: "error", terminated: "stopped" };
  const LABELS = { status: "Status", pause: "Pause", resume: "Resume", stop: "Stop" };

  async function order(instanceId, action) {
    try {
      await api(`/api/workers/${encodeURIComponent(instanceId)}/${action}`, { method: "POST" });
      say(`${LABELS[action]} sent to ${instanceId}`, true);
    } catch (error) { say(error.message); }
    load();
  }

  function controls(w, can) {
    if (!can.size || w.status === "terminated" || w.status === "gone") return el("td");
    const offered = { status: true, pause: w.status !== "paused", resume: w.status === "paused", stop: true };
    return el("td", {}, el("div", { class: "worker-controls" }, ...Object.keys(LABELS).filter((a) => can.has(a)).map((action) =>
      el("button", { dataset: { action }, disabled: !offered[action], class: action === "stop" ? "danger" : "",
        onclick: () => order(w.instance_id, action) }, LABELS[action]))));
  }

  async function load() {
    try {
      const list = await api("/api/workers");
      const can = new Set(list.can || []);
      const rows = list.items.map((w) => el("tr", { class: "worker-row", dataset: { id: w.instance_id, status: w.status } },
        el("td", { class: "mono", text: w.instance_id }), el("td", { text: w.job_type || "" }),
        el("td", { text: w.label || "" }), el("td", { text: w.version || "" }),
        el("td", {}, el("span", { class: `badge ${BADGE[w.status] || "stopped"}`, text: w.status })),
        el("td", { text: w.activity || "" }),
        el("td", { class: "mono running-jobs" }, ...(w.running_jobs.length ? w.running_jobs : [w.current_job]).filter(Boolean)
          .map((id) => el("div", { title: id, text: short(id) }))),
        el("td", { class: "muted", text: w.last_order ? `${w.last_order} by ${w.ordered_by || "?"}, ${when(w.ordered_at)}` : "" }),
        el("td", { text: when(w.last_seen) }), controls(w, can)));
      const body = document.querySelector("#workers tbody");
      body.replaceChildren(...rows);
      if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 10, class: "muted", text: "No worker has announced itself." })));
    } catch (error) { if (error.status !== 401) say(error.message); }
  }
  document.addEventListener("DOMContentLoaded", () => { load(); setInterval(load, 5000); });
})();
