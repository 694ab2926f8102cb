/* stepflow web view: shared pieces. Plain JavaScript, no build step. */
"use strict";

const SF = (() => {
  const TOKEN_KEY = "stepflow-token";
  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value);
    }
    for (const child of children.flat()) if (child) node.append(child);
    return node;
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status; this.body = body;
    }
  }

  async function api(path, options = {}) {
    const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
    if (token()) headers.Authorization = `Bearer ${token()}`;
    if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      options = Object.assign({}, options, { body: JSON.stringify(options.json) });
    }
    const response = await fetch(path, Object.assign({}, options, { headers }));
    const text = await response.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (e) { body = { message: text }; }
    if (response.status === 401) showLogin(body && body.message);
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  /* Server-sent events through fetch, so the bearer token goes in a header. */
  async function stream(path, onEvent, signal) {
    const headers = { Accept: "text/event-stream" };
    if (token()) headers.Authorization = `Bearer ${token()}`;
    const response = await fetch(path, { headers, signal });
    if (!response.ok || !response.body) throw new ApiError(response.status, null);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const chunk = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        let event = "message", data = "";
        for (const line of chunk.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (data) onEvent(event, JSON.parse(data));
      }
    }
  }

  function showLogin(reason) {
    const box = document.getElementById("login");
    if (!box || box.classList.contains("shown")) return;
    box.replaceChildren(
      el("p", { text: reason || "This server needs a bearer token." }),
      el("div", { class: "filters" },
        el("input", { id: "token", type: "password", placeholder: "token", size: 40 }),
        el("button", { class: "primary", id: "token-save", onclick: () => {
          sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
          location.reload();
        } }, "Sign in")));
    box.classList.add("shown");
  }

  function say(text, good) {
    const box = document.getElementById("message");
    if (!box) return;
    box.textContent = text;
    box.className = `shown ${good ? "good" : "bad"}`;
    clearTimeout(say.timer);
    say.timer = setTimeout(() => { box.className = ""; }, 6000);
  }

  function badge(status) { return el("span", { class: `badge ${status}`, text: status }); }

  function bar(fraction, status) {
    const pct = Math.max(0, Math.min(100, Math.round(fraction * 100)));
    const fill = el("span"); fill.style.width = `${pct}%`;
    return el("span", {}, el("span", { class: `bar ${status || ""}`, role: "progressbar", "aria-valuenow": pct }, fill),
      el("span", { class: "pct", text: `${pct}%` }));
  }

  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return d.toLocaleString(undefined, { hour12: false });
  }

  function seconds(s) {
    if (s === null || s === undefined) return "";
    if (s < 1) return `${(s * 1000).toFixed(0)} ms`;
    if (s < 120) return `${s.toFixed(2)} s`;
    return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  }

  function short(id) { return id ? id.slice(0, 8) : ""; }

  function nav() {
    const page = document.body.dataset.page;
    const link = (href, name, key) => el("a", { href, class: page === key ? "active" : "" }, name);
    const who = el("span", { class: "who", id: "who" });
    document.querySelector("header").replaceChildren(
      el("span", { class: "brand" }, "stepflow"), link("/", "Workflows", "workflows"),
      link("/workers", "Workers", "workers"), link("/stats", "Statistics", "stats"), who);
    api("/api/me").then((me) => {
      who.textContent = me.auth_enabled ? `${me.user} (${me.groups.join(", ") || "no group"})` : "authentication off";
      if (me.auth_enabled) who.append(" ", el("a", { href: "#", onclick: (e) => {
        e.preventDefault(); sessionStorage.removeItem(TOKEN_KEY); location.reload(); } }, "sign out"));
    }).catch(() => {});
  }

  document.addEventListener("DOMContentLoaded", nav);
  return { el, svg, api, stream, say, badge, bar, when, seconds, short, ApiError };
})();
