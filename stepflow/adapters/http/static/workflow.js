/* One workflow: summary and actions, the step DAG, jobs, history; live updates. */
"use strict";

(() => {
  const { el, svg, api, stream, say, badge, bar, when, seconds, short } = SF;
  const id = decodeURIComponent(location.pathname.split("/").pop());
  const FINAL = ["completed", "error", "stopped", "deleted"];
  const W = 170, H = 54, GAP_X = 70, GAP_Y = 22;
  let current = null;

  function summary(view) {
    const w = view.workflow;
    document.title = `stepflow · ${w.definition} ${short(w.workflow_id)}`;
    document.getElementById("title").replaceChildren(`${w.definition} `, el("span", { class: "muted mono", text: w.workflow_id }));
    const item = (name, ...value) => el("div", {}, el("span", { text: name }), ...value);
    document.getElementById("summary").replaceChildren(...[
      item("Status", el("span", { id: "workflow-status", dataset: { status: w.status } }, badge(w.status))),
      item("Progress", bar(w.progress / 100, w.status)),
      item("Steps", `${w.steps_done}/${w.steps_total} done`),
      item("Definition", `${w.definition} ${w.definition_version}`),
      item("Started", when(w.started_at), w.started_by ? ` by ${w.started_by}` : ""),
      item("Ended", when(w.ended_at) || "—"), item("Duration", seconds(w.duration_s) || "—"),
      item("Labels", w.labels.join(", ") || "—"),
      w.reason ? item("Reason", el("span", { class: "error-text", text: w.reason })) : null].filter(Boolean));
    const can = new Set(view.can);
    const act = (label, path, method, right, visible, cls) => visible ? el("button", {
      class: cls || "", disabled: !can.has(right), title: can.has(right) ? "" : `needs the ${right} right`,
      dataset: { action: label.toLowerCase() }, onclick: () => command(path, method, label) }, label) : null;
    const running = w.status === "running", paused = w.status === "paused";
    document.getElementById("actions").replaceChildren(...[
      act("Pause", "pause", "POST", "update", running),
      act("Resume", "resume", "POST", "update", paused),
      act("Stop", "stop", "POST", "abort", running || paused, "danger"),
      act("Delete", "", "DELETE", "delete", w.status !== "deleted", "danger"),
    ].filter(Boolean));
  }

  async function command(path, method, label) {
    if ((label === "Stop" || label === "Delete") && !confirm(`${label} this workflow?`)) return;
    try {
      await api(`/api/workflows/${id}${path ? "/" + path : ""}`, { method, json: path === "stop" ? { reason: "stopped from the web view" } : undefined });
      say(`${label}: done`, true); refresh();
    } catch (error) { say(error.message); }
  }

  /* Layered layout: a step's column is its longest distance from a root. */
  function layout(steps) {
    const byId = new Map(steps.map((s) => [s.step_id, s]));
    const depth = new Map();
    const depthOf = (s) => {
      if (depth.has(s.step_id)) return depth.get(s.step_id);
      depth.set(s.step_id, 0);
      const d = s.parents.length ? 1 + Math.max(...s.parents.map((p) => byId.has(p) ? depthOf(byId.get(p)) : 0)) : 0;
      depth.set(s.step_id, d); return d;
    };
    const columns = [];
    for (const s of steps) { const d = depthOf(s); (columns[d] = columns[d] || []).push(s); }
    const at = new Map();
    columns.forEach((column, x) => column.forEach((s, y) => at.set(s.step_id, { x: 20 + x * (W + GAP_X), y: 20 + y * (H + GAP_Y) })));
    const rows = Math.max(1, ...columns.map((c) => c.length));
    return { at, width: 40 + columns.length * (W + GAP_X) - GAP_X, height: 40 + rows * (H + GAP_Y) - GAP_Y };
  }

  function dag(view) {
    const { at, width, height } = layout(view.steps);
    const edges = [], nodes = [];
    for (const s of view.steps) for (const parent of s.parents) {
      const a = at.get(parent), b = at.get(s.step_id);
      if (!a || !b) continue;
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
      edges.push(svg("path", { class: "dag-edge", d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, "marker-end": "url(#arrow)" }));
    }
    for (const s of view.steps) {
      const p = at.get(s.step_id);
      const done = s.job_counts.completed || 0;
      const jobs = s.jobs_total ? `${done}/${s.jobs_total} job${s.jobs_total > 1 ? "s" : ""}` : s.mode === "notification" ? "notification" : "";
      nodes.push(svg("g", { class: `dag-node ${s.status}`, transform: `translate(${p.x},${p.y})`,
        dataset: { step: s.step_id, status: s.status } },
        svg("title", { text: `${s.step_id}: ${s.status}${s.reason ? " — " + s.reason : ""}` }),
        svg("rect", { width: W, height: H, fill: `var(--${s.status}, #9aa3ae)` }),
        svg("text", { x: 10, y: 21, "font-weight": "600", text: s.step_id.length > 22 ? s.step_id.slice(0, 21) + "…" : s.step_id }),
        svg("text", { x: 10, y: 40, text: `${s.status}${jobs ? " · " + jobs : ""}` })));
    }
    const defs = svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#9aa3ae" })));
    document.getElementById("dag").replaceChildren(svg("svg", { width, height, role: "img", "aria-label": "step graph" }, defs, ...edges, ...nodes));
  }

  function jobs(view) {
    const can = new Set(view.can);
    const rows = view.jobs.map((j) => el("tr", { class: "job-row", dataset: { job: j.job_id, step: j.step_id, status: j.status } },
      el("td", { text: j.step_id }), el("td", { text: j.index }), el("td", { text: j.attempt }),
      el("td", { class: "mono", title: j.job_id, text: short(j.job_id) }),
      el("td", {}, badge(j.status)), el("td", {}, bar(j.progression / 100, j.status)),
      el("td", { text: seconds(j.duration_s) }), el("td", { class: "mono", text: j.worker || "" }),
      el("td", {}, j.error ? el("span", { class: "error-text", text: `${j.error_kind ? j.error_kind + ": " : ""}${j.error}` })
        : el("span", { class: "muted", text: j.message || "" })),
      el("td", {}, ["error", "stopped", "unroutable"].includes(j.status) && !j.next_job_id && !FINAL.includes(view.workflow.status) || (j.status === "error" && view.workflow.status === "error" && !j.next_job_id)
        ? el("button", { disabled: !can.has("retry"), dataset: { action: "retry" }, onclick: () => retry(j.job_id) }, "Retry") : null)));
    const body = document.querySelector("#jobs tbody");
    body.replaceChildren(...rows);
    if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 10, class: "muted", text: "No job yet." })));
  }

  async function retry(jobId) {
    try { await api(`/api/workflows/${id}/jobs/${jobId}/retry`, { method: "POST" }); say("Retry requested", true); refresh(); }
    catch (error) { say(error.message); }
  }

  async function historyList() {
    try {
      const h = await api(`/api/workflows/${id}/history`);
      document.getElementById("history").replaceChildren(...h.items.slice().reverse().map((e) => el("li", { dataset: { event: e.event } },
        el("span", { class: "muted", text: new Date(e.time).toLocaleTimeString(undefined, { hour12: false }) }),
        el("span", { text: e.event }), el("span", { text: [e.step_id, e.attempt ? `#${e.attempt}` : ""].filter(Boolean).join(" ") }),
        el("span", { class: "muted", text: [e.detail, e.actor ? `by ${e.actor}` : ""].filter(Boolean).join(" ") }))));
    } catch (error) { /* the page shows the main error */ }
  }

  function draw(view) {
    current = view;
    summary(view); dag(view); jobs(view); historyList();
  }

  async function refresh() {
    try { draw(await api(`/api/workflows/${id}`)); }
    catch (error) { if (error.status !== 401) say(error.message); }
  }

  async function live() {
    for (let tries = 0; tries < 1000; tries++) {
      try {
        await stream(`/api/workflows/${id}/stream`, (event, data) => { if (event === "workflow") draw(data); });
        if (current && FINAL.includes(current.workflow.status)) return;
      } catch (error) {
        if (error.status === 401 || error.status === 403 || error.status === 404) return;
        await refresh();  // polling while the stream is down
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  document.addEventListener("DOMContentLoaded", async () => { await refresh(); live(); });
})();
