/* Workflows page: filters, list with progress bars, start form. */
"use strict";

(() => {
  const { el, api, say, badge, bar, when, seconds, short } = SF;
  const STATUSES = ["running", "paused", "completed", "error", "stopped", "deleted"];
  const chosen = new Set(new URLSearchParams(location.search).get("status")?.split(",").filter(Boolean) || []);
  let cursor = null;
  const definitions = new Map();

  function filters() {
    const box = document.getElementById("filters");
    for (const status of STATUSES) {
      const input = el("input", { type: "checkbox", value: status, checked: chosen.has(status), onchange: () => {
        input.checked ? chosen.add(status) : chosen.delete(status);
        const query = chosen.size ? `?status=${[...chosen].join(",")}` : "";
        history.replaceState(null, "", location.pathname + query);
        load();
      } });
      box.append(el("label", { dataset: { status } }, input, badge(status)));
    }
  }

  function row(w) {
    const progress = w.steps_total ? w.steps_done / w.steps_total : 0;
    return el("tr", { class: "workflow-row", dataset: { id: w.workflow_id, status: w.status } },
      el("td", {}, el("a", { href: `/workflows/${w.workflow_id}`, class: "mono" }, short(w.workflow_id)),
        w.title ? el("div", { class: "muted", text: w.title }) : null),
      el("td", {}, `${w.definition} `, el("span", { class: "muted", text: w.definition_version })),
      el("td", {}, badge(w.status), w.reason ? el("div", { class: "error-text", text: w.reason }) : null),
      el("td", {}, bar(w.progress !== undefined ? w.progress / 100 : progress, w.status),
        el("div", { class: "muted", text: `${w.steps_done}/${w.steps_total} steps` })),
      el("td", { text: w.current_steps.join(", ") }),
      el("td", { text: when(w.started_at) }),
      el("td", { text: seconds(w.duration_s) }),
      el("td", { text: w.labels.join(", ") }));
  }

  async function load(more) {
    const params = new URLSearchParams();
    if (chosen.size) params.set("status", [...chosen].join(","));
    if (more && cursor) params.set("cursor", cursor);
    try {
      const page = await api(`/api/workflows?${params}`);
      const body = document.querySelector("#workflows tbody");
      const rows = page.items.map(row);
      more ? body.append(...rows) : body.replaceChildren(...rows);
      if (!page.items.length && !more) body.append(el("tr", {}, el("td", { colspan: 8, class: "muted", text: "No workflow." })));
      cursor = page.next_cursor;
      document.getElementById("more").hidden = !cursor;
      document.getElementById("hidden-count").textContent = page.hidden ? `${page.hidden} hidden (no view right)` : "";
    } catch (error) { if (error.status !== 401) say(error.message); }
  }

  async function loadDefinitions() {
    try {
      const list = await api("/api/definitions");
      const select = document.getElementById("start-definition");
      for (const d of list.items) {
        definitions.set(d.identifier, d);
        select.append(el("option", { value: d.identifier, disabled: !d.can.includes("create") },
          `${d.identifier} ${d.version}${d.label ? " — " + d.label : ""}`));
      }
      select.addEventListener("change", defaults);
      defaults();
      if (!list.items.length) document.getElementById("start").replaceChildren(el("p", { class: "muted", text: "No stored definition (start the server with --definitions)." }));
    } catch (error) { /* shown by the list */ }
  }

  function defaults() {
    const d = definitions.get(document.getElementById("start-definition").value);
    if (!d) return;
    const values = {};
    for (const p of d.parameters) if (p.default !== null && p.default !== undefined) values[p.id] = p.default;
    document.getElementById("start-parameters").value = JSON.stringify(values, null, 2);
  }

  async function start() {
    const button = document.getElementById("start-button");
    let parameters;
    try { parameters = JSON.parse(document.getElementById("start-parameters").value || "{}"); }
    catch (e) { say(`Parameters are not JSON: ${e.message}`); return; }
    const labels = document.getElementById("start-labels").value.split(",").map((s) => s.trim()).filter(Boolean);
    button.disabled = true;
    try {
      const started = await api("/api/workflows", { method: "POST", json: {
        definition: document.getElementById("start-definition").value, parameters, labels } });
      location.href = `/workflows/${started.workflow_id}`;
    } catch (error) {
      say(error.body && error.body.field ? `${error.message} (at ${error.body.field})` : error.message);
    } finally { button.disabled = false; }
  }

  document.addEventListener("DOMContentLoaded", () => {
    filters();
    document.getElementById("more").addEventListener("click", () => load(true));
    document.getElementById("start-button").addEventListener("click", start);
    load(); loadDefinitions();
    setInterval(() => { if (!cursor || document.querySelectorAll(".workflow-row").length <= 50) load(); }, 3000);
  });
})();
