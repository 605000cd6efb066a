// Shared behaviour for every page (loaded as a module by base.html).
// - elements with data-confirm ask before their form submits or their button acts;
// - <time data-local> elements are re-rendered in the browser's zone;
// - data-countdown elements tick down to an ISO instant (used by the rule panels; no network involved).
// Page-specific code lives in its own module (trade.js, live.js, chart.js, admin*.js, auth.js).

export function fmtMoney(value, places = 2) {
  const n = Number(value);
  if (value === null || value === undefined || value === "" || Number.isNaN(n)) return "—";
  return n.toLocaleString("en-US", { minimumFractionDigits: places, maximumFractionDigits: places });
}

export function fmtSigned(value, places = 2) {
  const n = Number(value);
  if (Number.isNaN(n)) return "—";
  return (n > 0 ? "+" : "") + fmtMoney(n, places);
}

export function pnlClass(value) {
  const n = Number(value);
  if (!n) return "";
  return n > 0 ? "pos" : "neg";
}

export function setPnl(el, value, places = 2) {
  if (!el) return;
  el.textContent = fmtSigned(value, places);
  el.classList.remove("pos", "neg");
  const cls = pnlClass(value);
  if (cls) el.classList.add(cls);
}

export function readJson(id) {
  const el = document.getElementById(id);
  if (!el) return null;
  try { return JSON.parse(el.textContent); } catch (e) { return null; }
}

// JSON fetch against our own API: same origin, so the browser sends Origin (the CSRF check) and the session cookie.
export async function api(method, url, body, headers) {
  const init = { method, headers: { "Accept": "application/json", ...(headers || {}) }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(url, init);
  let data = null;
  const text = await resp.text();
  if (text) { try { data = JSON.parse(text); } catch (e) { data = { raw: text }; } }
  if (!resp.ok) {
    const err = (data && data.error) || { code: "http_" + resp.status, message: resp.statusText, details: {} };
    const e = new Error(err.message || ("HTTP " + resp.status));
    e.status = resp.status; e.code = err.code; e.details = err.details || {};
    throw e;
  }
  return data;
}

export function fmtDuration(ms) {
  if (ms <= 0) return "now";
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return (h ? h + "h " : "") + String(m).padStart(2, "0") + "m " + String(sec).padStart(2, "0") + "s";
}

// The server's clock may be injected (tests, demo); pages carry data-server-now so countdowns follow it.
let clockSkewMs = 0;
export function serverNow() { return Date.now() + clockSkewMs; }

export function setServerNow(iso) {
  const t = Date.parse(iso);
  if (!Number.isNaN(t)) clockSkewMs = t - Date.now();
}

export function tickCountdowns() {
  for (const el of document.querySelectorAll("[data-countdown]")) {
    const target = Date.parse(el.dataset.countdown);
    if (!Number.isNaN(target)) el.textContent = fmtDuration(target - serverNow());
  }
}

function init() {
  // The server's "now" (pages put it in a data-server-now attribute): countdowns follow the server's clock.
  const stamped = document.querySelector("[data-server-now]");
  if (stamped) setServerNow(stamped.dataset.serverNow);
  document.addEventListener("submit", (ev) => {
    const form = ev.target;
    const msg = form.dataset && form.dataset.confirm;
    if (msg && !window.confirm(msg)) ev.preventDefault();
  }, true);
  for (const el of document.querySelectorAll("time[data-local]")) {
    const t = Date.parse(el.getAttribute("datetime"));
    if (!Number.isNaN(t)) el.textContent = new Date(t).toLocaleString();
  }
  if (document.querySelector("[data-countdown]")) {
    tickCountdowns();
    // A display clock, not a poll: it only re-renders countdown text locally.
    setInterval(tickCountdowns, 1000);
  }
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
