/* Statistics page, over time: stacked columns of workflows (or jobs) per status and bin, drawn
   as SVG from GET /api/stats/timeline; job-type durations per bin in the table below. */
"use strict";

(() => {
  const { el, svg, api, say, seconds } = SF;
  const ORDER = ["completed", "error", "stopped", "running", "processing", "paused", "queued", "retrying",
                 "retry_requested", "unroutable", "deleted"];
  const color = (status) => getComputedStyle(document.documentElement).getPropertyValue(`--${status}`).trim() || "#9aa3ae";

  function label(iso, bin) {
    const d = new Date(iso), pad = (n) => String(n).padStart(2, "0");
    if (bin === "day") return `${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
    return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
  }

  function draw(line, kind) {
    const box = document.getElementById("timeline");
    const width = Math.max(600, box.clientWidth || 800), height = 220, left = 44, bottom = 28, top = 10;
    const plotW = width - left - 10, plotH = height - top - bottom, n = line.bins.length || 1;
    const totals = line.bins.map((b) => Object.values(b[kind]).reduce((a, c) => a + c, 0));
    const max = Math.max(1, ...totals), colW = plotW / n;
    const statuses = ORDER.filter((s) => line.bins.some((b) => b[kind][s]))
      .concat([...new Set(line.bins.flatMap((b) => Object.keys(b[kind])))].filter((s) => !ORDER.includes(s)));
    const items = [svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: top + plotH }),
                   svg("line", { class: "axis", x1: left, y1: top + plotH, x2: left + plotW, y2: top + plotH })];
    for (const tick of [0, Math.round(max / 2), max]) {
      const y = top + plotH - (tick / max) * plotH;
      items.push(svg("text", { class: "tick", x: left - 6, y, "text-anchor": "end", "dominant-baseline": "central", text: tick }));
    }
    const every = Math.max(1, Math.ceil(n / 12));
    line.bins.forEach((b, i) => {
      let y = top + plotH;
      const x = left + i * colW + 1, w = Math.max(1, colW - 2);
      for (const status of statuses) {
        const count = b[kind][status] || 0;
        if (!count) continue;
        const h = (count / max) * plotH;
        y -= h;
        items.push(svg("rect", { class: "timeline-bar", x, y, width: w, height: h, fill: color(status),
          dataset: { bin: b.start, status, count } }, svg("title", { text: `${label(b.start, line.bin)} UTC: ${count} ${status}` })));
      }
      if (i % every === 0) items.push(svg("text", { class: "tick", x: x + w / 2, y: top + plotH + 14, "text-anchor": "middle",
        text: label(b.start, line.bin) }));
    });
    if (!totals.some(Boolean)) items.push(svg("text", { x: left + 10, y: top + 20, text: `No ${kind} in this range.` }));
    box.setAttribute("viewBox", `0 0 ${width} ${height}`);
    box.replaceChildren(...items);
    document.getElementById("timeline-legend").replaceChildren(...statuses.map((status) => {
      const swatch = el("i"); swatch.style.background = color(status); return el("span", {}, swatch, status);
    }));
    const rows = line.bins.slice().reverse().flatMap((b) => b.durations.map((d) => el("tr", { class: "duration-row" },
      el("td", { text: `${line.bin === "day" ? b.start.slice(0, 10) : b.start.slice(0, 16).replace("T", " ")}` }),
      el("td", { text: d.job_type }), el("td", { text: d.count }), el("td", { text: seconds(d.p50_s) }),
      el("td", { text: seconds(d.p95_s) }), el("td", { text: seconds(d.max_s) })))).slice(0, 30);
    document.querySelector("#timeline-durations tbody").replaceChildren(...rows);
  }

  async function load() {
    const bin = document.getElementById("timeline-bin").value, kind = document.getElementById("timeline-kind").value;
    try {
      draw(await api(`/api/stats/timeline?bin=${bin}`), kind);
    } catch (error) { if (error.status !== 401) say(error.message); }
  }
  document.addEventListener("DOMContentLoaded", () => {
    for (const id of ["timeline-bin", "timeline-kind"]) document.getElementById(id).addEventListener("change", load);
    load(); setInterval(load, 10000);
  });
})();
