/* Statistics page: workflows by status, chart of job durations per type, outcomes. */
"use strict";

(() => {
  const { el, svg, api, say, seconds } = SF;
  const SERIES = [["duration_p50_s", "p50", "#2f6fde"], ["duration_p95_s", "p95", "#8a5cd6"],
                  ["duration_mean_s", "mean", "#1f9d55"], ["duration_max_s", "max", "#e08a1e"]];

  function chart(types) {
    const box = document.getElementById("chart");
    const withData = types.filter((t) => t.duration_max_s !== null);
    const max = Math.max(0.001, ...withData.map((t) => t.duration_max_s));
    // Rows tall enough for their labels, each label beside its bar (never on it) with a light halo:
    // readable whatever the bar's colour.
    const left = 170, width = Math.max(600, box.clientWidth || 800), plot = width - left - 90, barH = 16, groupH = SERIES.length * barH + 14;
    const items = [];
    withData.forEach((t, i) => {
      const y = 10 + i * groupH;
      items.push(svg("text", { class: "label", x: 0, y: y + groupH / 2 - 7, "dominant-baseline": "central", text: t.job_type }));
      SERIES.forEach(([key, name, color], k) => {
        const value = t[key] || 0, w = Math.max(1, (value / max) * plot);
        items.push(svg("rect", { class: "chart-bar", x: left, y: y + k * barH, width: w, height: barH - 4, fill: color,
          dataset: { jobType: t.job_type, series: name } }, svg("title", { text: `${t.job_type} ${name}: ${seconds(value)}` })));
        items.push(svg("text", { class: "value", x: left + w + 6, y: y + k * barH + (barH - 4) / 2,
          "dominant-baseline": "central", text: `${name} ${seconds(value)}` }));
      });
    });
    const height = Math.max(40, 20 + withData.length * groupH);
    box.setAttribute("height", height);
    box.setAttribute("viewBox", `0 0 ${width} ${height}`);
    box.replaceChildren(svg("line", { class: "axis", x1: left, y1: 0, x2: left, y2: height }), ...items);
    if (!withData.length) box.replaceChildren(svg("text", { x: 10, y: 25, text: "No completed job yet." }));
    document.getElementById("legend").replaceChildren(...SERIES.map(([, name, color]) => {
      const swatch = el("i"); swatch.style.background = color; return el("span", {}, swatch, name);
    }));
  }

  async function load() {
    try {
      const s = await api("/api/stats");
      // A count per status: the status as a small dark label, the number large, the status's colour
      // as a side rule (text on the colour itself was unreadable).
      document.getElementById("workflow-counts").replaceChildren(...Object.entries(s.workflows).map(([status, n]) => {
        const card = el("div", { class: "count-card", dataset: { status } }, el("span", { text: status }), el("strong", { text: n }));
        card.style.borderLeftColor = getComputedStyle(document.documentElement).getPropertyValue(`--${status}`).trim() || "#9aa3ae";
        return card;
      }));
      chart(s.job_types);
      document.querySelector("#job-types tbody").replaceChildren(...s.job_types.map((t) => el("tr", { dataset: { jobType: t.job_type } },
        el("td", { text: t.job_type }), el("td", { text: t.submitted }), el("td", { text: t.completed }),
        el("td", { text: t.errored }), el("td", { text: t.timed_out }), el("td", { text: t.unroutable }),
        el("td", { text: t.stopped }), el("td", { text: t.retries }),
        el("td", { text: t.success_rate === null ? "" : `${(t.success_rate * 100).toFixed(1)}%` }))));
    } catch (error) { if (error.status !== 401) say(error.message); }
  }
  document.addEventListener("DOMContentLoaded", () => { load(); setInterval(load, 5000); });
})();
