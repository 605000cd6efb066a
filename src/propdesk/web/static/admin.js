// The admin panel (pages_admin.py, templates/admin/*). One module for every admin page:
// - live updates over server-sent events (GET /api/v1/admin/stream): the activity feed, the metric cards, and the
//   open account page refreshes its sections when something happens to that account. No polling loops;
// - the admin controls (pause, resume, lock, liquidate, void order/fill, recompute) ask for a reason in a dialog
//   (required, non-empty) and call the audited admin JSON routes;
// - plan management: a plan file is validated and stored by POST /api/v1/admin/plans; retiring asks for a reason;
// - the economic calendar: "Add event" posts to POST /api/v1/admin/calendar/events and shows the refusal or the
//   new row in place (no reload).
// Everything is rendered with textContent / DOM nodes: server data is never parsed as HTML, except the pages' own
// HTML fetched from our origin to refresh a section.

import { chartsAvailable, EquityChart } from "./chart.js";

const FEED_MAX = 150;

function readJson(id) {
  const el = document.getElementById(id);
  if (!el) return null;
  try { return JSON.parse(el.textContent); } catch (e) { return null; }
}

function idempotencyKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return String(Date.now()) + "-" + Math.random().toString(16).slice(2);
}

// A JSON call to our own API (same origin: the browser adds Origin, which the CSRF check wants).
async function api(method, url, body) {
  const headers = { "Accept": "application/json" };
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    headers["Idempotency-Key"] = idempotencyKey(); // a double click replays instead of acting twice
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(url, init);
  const text = await resp.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch (e) { data = null; } }
  if (!resp.ok) {
    const err = (data && data.error) || { code: "http_" + resp.status, message: resp.statusText, details: {} };
    const e = new Error(err.message || ("HTTP " + resp.status));
    e.code = err.code; e.details = err.details || {}; e.status = resp.status;
    throw e;
  }
  return data;
}

function describeError(e) {
  const d = e.details || {};
  let text = e.message || "request failed";
  if (d.key) text += "\n" + d.key + (d.reason ? ": " + d.reason : "");
  if (Array.isArray(d.errors)) text += "\n" + d.errors.map((x) => (x.loc || []).join(".") + ": " + x.msg).join("\n");
  return text;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

const KIND_BADGE = { breach: "badge-bad", flag: "badge-warn", warning: "badge-warn", reject: "badge-muted",
  pass: "badge-ok", order: "badge-info", fill: "badge-info", status: "badge-muted", admin: "badge-dev" };

function fmtTime(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  return new Date(t).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function fmtPct(v) {
  if (v === null || v === undefined) return "—";
  return Number(v).toFixed(2) + "%";
}

function fmtMoney(v) {
  const n = Number(v);
  if (v === null || v === undefined || Number.isNaN(n)) return "—";
  return n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

// ---------------------------------------------------------------------------------------------- live stream
function feedItem(item) {
  const li = el("li", "is-new");
  li.dataset.kind = item.kind;
  const head = el("div", "feed-time");
  const time = el("time", "", fmtTime(item.at));
  time.setAttribute("datetime", item.at);
  head.append(time, el("span", "badge " + (KIND_BADGE[item.kind] || "badge-muted"), item.kind));
  li.append(head, el("div", "feed-text", item.summary));
  if (item.account_id) {
    const who = el("div", "feed-who");
    const a = el("a", "", item.trader || "account");
    a.href = "/admin/accounts/" + encodeURIComponent(item.account_id);
    who.append(a);
    if (item.phase) who.append(document.createTextNode(" · " + item.phase));
    li.append(who);
  }
  return li;
}

function onActivity(items) {
  const feed = document.getElementById("activity-feed");
  if (feed) {
    const empty = feed.querySelector(".feed-empty");
    if (empty) empty.remove();
    for (const item of items) feed.prepend(feedItem(item)); // items arrive oldest first: the newest ends on top
    while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
  }
  const page = document.getElementById("account-page");
  if (page && items.some((i) => i.account_id === page.dataset.accountId)) scheduleAccountRefresh();
  if (document.getElementById("traders") && !document.querySelector("#traders .pager a[href*='cursor=']")) {
    scheduleTableRefresh(); // only on the first page: never yank the admin off the page being read
  }
}

function setMetric(name, text) {
  for (const node of document.querySelectorAll(`[data-metric="${name}"]`)) {
    if (node.textContent !== text) {
      node.textContent = text;
      node.classList.remove("is-updated");
      void node.offsetWidth; // restart the highlight animation
      node.classList.add("is-updated");
    }
  }
}

function onMetrics(m) {
  const ch = m.challenges;
  setMetric("live_accounts", String(m.live_accounts));
  setMetric("pass_rate", ch.pass_rate_pct === null ? "—" : fmtPct(ch.pass_rate_pct));
  setMetric("pass_sub", `${ch.passed} of ${ch.ended} ended`);
  setMetric("breach_rate", ch.breach_rate_pct === null ? "—" : fmtPct(ch.breach_rate_pct));
  setMetric("breach_sub", `${ch.failed} failed · ${ch.expired} expired`);
  setMetric("funded", String(m.funded));
  setMetric("payouts", String(m.pending_payouts.count));
  setMetric("payouts_sub", m.pending_payouts.enabled ? `${fmtMoney(m.pending_payouts.amount)} requested`
    : `payouts not enabled · accrued split ${fmtMoney(m.pending_payouts.accrued_profit_split)}`);
  setMetric("email_sent", String(m.email.sent));
  setMetric("email_sub", `sent · ${m.email.failed} failed · ${m.email.pending} pending`);
  setMetric("notifications", String(m.notifications.total));
  setMetric("notifications_sub", `${m.notifications.unread} unread`);
  const phases = document.getElementById("metric-phases");
  if (phases) {
    phases.replaceChildren(...(m.active_by_phase.length ? m.active_by_phase.map((p) => {
      const li = el("li");
      li.append(el("span", "", p.phase), el("span", "", String(p.count)));
      return li;
    }) : [el("li", "muted", "none")]));
  }
}

function connectStream() {
  const dot = document.getElementById("live-dot");
  const label = document.getElementById("live-label");
  const status = (on, text) => {
    if (dot) { dot.classList.toggle("on", on); dot.classList.toggle("off", !on); }
    if (label) label.textContent = text;
  };
  if (!window.EventSource) { status(false, "live updates unavailable"); return; }
  const source = new EventSource("/api/v1/admin/stream");
  source.onopen = () => status(true, "live");
  source.onerror = () => status(false, "reconnecting…"); // EventSource reconnects by itself
  source.addEventListener("activity", (ev) => {
    try { onActivity(JSON.parse(ev.data).items || []); } catch (e) { /* a malformed event is skipped */ }
  });
  source.addEventListener("metrics", (ev) => {
    try { onMetrics(JSON.parse(ev.data)); } catch (e) { /* skipped */ }
  });
  window.addEventListener("pagehide", () => source.close());
}

// ---------------------------------------------------------------------------------------------- refreshes
let accountTimer = null;
function scheduleAccountRefresh() {
  clearTimeout(accountTimer);
  accountTimer = setTimeout(refreshAccount, 250);
}

// Re-render the account's sections from the server (the page's own HTML), keeping the dialog and the chart box.
async function refreshAccount() {
  const live = document.getElementById("account-live");
  if (!live) return;
  const resp = await fetch(window.location.pathname, { credentials: "same-origin", headers: { "Accept": "text/html" } });
  if (!resp.ok) return;
  const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
  const fresh = doc.getElementById("account-live");
  const data = doc.getElementById("chart-data");
  if (fresh) live.replaceWith(fresh);
  if (data) {
    const current = document.getElementById("chart-data");
    if (current) current.textContent = data.textContent;
  }
  drawEquity();
}

let tableTimer = null;
function scheduleTableRefresh() {
  clearTimeout(tableTimer);
  tableTimer = setTimeout(() => {
    const form = document.getElementById("trader-filters");
    if (form && window.htmx) window.htmx.trigger(form, "change");
  }, 1500);
}

// ---------------------------------------------------------------------------------------------- equity chart
let chart = null;
// The equity curve with the daily and max-loss floors: the trader dashboard's chart (chart.js), same data.
function drawEquity() {
  const box = document.getElementById("equity-chart");
  const series = readJson("chart-data");
  if (!box || !series || !chartsAvailable()) return;
  if (chart && chart.chart) chart.chart.remove();
  chart = new EquityChart(box);
  chart.setData(series);
}

// ---------------------------------------------------------------------------------------------- reason dialog
// Opens the dialog and resolves with the trimmed reason, or null when cancelled. `submit(reason)` runs while the
// dialog stays open, so a refusal is shown in place; the dialog closes only when it succeeds.
function askReason(title, help, submit) {
  const dialog = document.getElementById("reason-dialog");
  const form = document.getElementById("reason-form");
  const input = document.getElementById("reason-input");
  const error = document.getElementById("reason-error");
  const confirm = document.getElementById("reason-submit");
  if (!dialog || !form) return;
  document.getElementById("reason-title").textContent = title;
  if (help) document.getElementById("reason-help").textContent = help;
  input.value = "";
  error.textContent = "";
  confirm.disabled = false;
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    const reason = input.value.trim();
    if (!reason) { error.textContent = "A reason is required."; input.focus(); return; }
    confirm.disabled = true;
    error.textContent = "";
    try {
      await submit(reason);
      dialog.close();
    } catch (e) {
      error.textContent = describeError(e);
    } finally {
      confirm.disabled = false;
    }
  };
  document.getElementById("reason-cancel").onclick = () => dialog.close();
  dialog.showModal();
  input.focus();
}

const ACTION_HELP = {
  pause: "Trading stops until an admin resumes the account.",
  resume: "The account trades again.",
  lock: "The account is frozen: no orders, no marking.",
  liquidate: "Every open position is closed at market and the account ends.",
  recompute: "The ledger and fills are folded again and compared with the stored balances and positions.",
  "void-order": "The order is voided; its fills are reversed (nothing is deleted).",
  "void-fill": "The fill's fee and realized P&L are reversed and the position re-derived.",
};

function initAccountControls() {
  const page = document.getElementById("account-page");
  if (!page) return;
  const base = "/api/v1/admin/prop/accounts/" + encodeURIComponent(page.dataset.accountId) + "/";
  page.addEventListener("click", (ev) => {
    const button = ev.target.closest("[data-admin-action]");
    if (!button) return;
    const action = button.dataset.adminAction;
    askReason((button.dataset.label || action) + " — reason", ACTION_HELP[action] || "", async (reason) => {
      const body = { reason };
      if (action === "void-order") body.order_id = button.dataset.orderId;
      if (action === "void-fill") body.fill_id = button.dataset.fillId;
      await api("POST", base + action, body);
      await refreshAccount();
    });
  });
}

// ---------------------------------------------------------------------------------------------- plans
function initPlans() {
  for (const input of document.querySelectorAll("input[data-plan-file]")) {
    input.addEventListener("change", () => {
      const file = input.files && input.files[0];
      const target = document.getElementById(input.dataset.planFile);
      if (!file || !target) return;
      if (file.size > 200000) { alert("The plan file is larger than 200 kB."); return; }
      file.text().then((text) => { target.value = text; });
    });
  }
  for (const form of document.querySelectorAll("form[data-plan-form]")) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const out = form.querySelector("[data-plan-result]");
      const text = form.querySelector("textarea[name=text]").value;
      out.className = "small";
      out.textContent = "validating…";
      try {
        const plan = await api("POST", "/api/v1/admin/plans", { text });
        out.className = "small result-ok";
        out.textContent = `Saved ${plan.id} v${plan.version}.`;
        setTimeout(() => window.location.reload(), 900);
      } catch (e) {
        out.className = "small result-error";
        out.textContent = describeError(e);
      }
    });
  }
  document.addEventListener("click", (ev) => {
    const button = ev.target.closest("[data-retire-plan]");
    if (!button) return;
    const id = button.dataset.retirePlan;
    askReason("Retire " + id, "The plan leaves the catalogue; accounts on it are untouched.", async (reason) => {
      await api("POST", "/api/v1/admin/plans/" + encodeURIComponent(id) + "/retirement", { reason });
      window.location.reload();
    });
  });
}

// ---------------------------------------------------------------------------------------------- calendar
const IMPACT_BADGE = { high: "badge-bad", medium: "badge-warn", low: "badge-muted" };
const IMPACT_RANK = { low: 0, medium: 1, high: 2 };

function nyTime(iso) {
  const fmt = new Intl.DateTimeFormat("en-US", { timeZone: "America/New_York", weekday: "short", day: "2-digit",
    month: "short", hour: "2-digit", minute: "2-digit", hour12: false, timeZoneName: "short" });
  const parts = Object.fromEntries(fmt.formatToParts(new Date(iso)).map((p) => [p.type, p.value]));
  return `${parts.weekday} ${parts.day} ${parts.month} ${parts.hour}:${parts.minute} ${parts.timeZoneName}`;
}

function utcTime(iso) {
  const d = new Date(iso);
  const wd = d.toLocaleDateString("en-US", { timeZone: "UTC", weekday: "short" });
  const mo = d.toLocaleDateString("en-US", { timeZone: "UTC", month: "short" });
  const pad = (n) => String(n).padStart(2, "0");
  return `${wd} ${pad(d.getUTCDate())} ${mo} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
}

// The table row of an event, built like the server's (calendar.html), with DOM nodes only.
function calendarRow(ev, meta) {
  const at = Date.parse(ev.at);
  const now = Date.parse(meta.now);
  const tr = el("tr", "is-new");
  tr.dataset.eventId = String(ev.id);
  tr.dataset.at = new Date(at).toISOString();
  tr.dataset.impact = ev.impact;
  if (ev.impact === "high" && at >= now && at <= now + meta.upcoming_hours * 3600 * 1000) {
    tr.classList.add("is-upcoming-high");
  }
  if (at < now) tr.classList.add("is-past");
  const time = el("time", "", utcTime(ev.at));
  time.setAttribute("datetime", tr.dataset.at);
  const tdTime = el("td", "nowrap mono small");
  tdTime.append(time);
  const tdCur = el("td", "mono", ev.currency || "—");
  if (ev.country) tdCur.append(" ", el("span", "small muted", ev.country));
  const tdImpact = el("td");
  tdImpact.append(el("span", "badge " + (IMPACT_BADGE[ev.impact] || "badge-muted"), ev.impact));
  tr.append(tdTime, el("td", "nowrap small muted", nyTime(ev.at)), tdCur, tdImpact, el("td", "", ev.title),
    el("td", "small", ev.source), el("td", "small symbols", (ev.symbols || []).join(", ") || "—"));
  return tr;
}

function inCalendarView(ev, meta) {
  const at = Date.parse(ev.at);
  return at >= Date.parse(meta.start) && at < Date.parse(meta.end)
    && IMPACT_RANK[ev.impact] >= IMPACT_RANK[meta.impact || "low"]
    && (!meta.currency || meta.currency === ev.currency);
}

function initCalendar() {
  const form = document.getElementById("calendar-add");
  const body = document.getElementById("calendar-rows");
  if (!form || !body) return;
  const meta = readJson("calendar-meta") || {};
  const error = document.getElementById("calendar-add-error");
  const result = document.getElementById("calendar-add-result");
  const submit = document.getElementById("calendar-add-submit");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    result.textContent = "";
    const value = (name) => form.elements[name].value.trim();
    // The input is a wall-clock time in UTC (the label says so): send it with an explicit offset.
    const at = value("at");
    const payload = {
      at: at ? (at.length === 16 ? at + ":00" : at) + "Z" : "",
      currency: value("currency").toUpperCase(),
      impact: value("impact"),
      title: value("title"),
    };
    const country = value("country").toUpperCase();
    if (country) payload.country = country;
    submit.disabled = true;
    try {
      const created = await api("POST", "/api/v1/admin/calendar/events", payload);
      if (inCalendarView(created, meta)) {
        const empty = body.querySelector(".calendar-empty");
        if (empty) empty.remove();
        const row = calendarRow(created, meta);
        const later = [...body.querySelectorAll("tr[data-at]")].find((tr) => Date.parse(tr.dataset.at) > Date.parse(created.at));
        body.insertBefore(row, later || null);
        const count = document.getElementById("calendar-count");
        if (count) count.textContent = body.querySelectorAll("tr[data-at]").length + " shown";
        result.textContent = `Added ${created.currency} ${created.title}.`;
      } else {
        result.textContent = `Added ${created.currency} ${created.title} (outside this window or filter).`;
      }
      form.elements.title.value = "";
    } catch (e) {
      error.textContent = describeError(e);
    } finally {
      submit.disabled = false;
    }
  });
}

function init() {
  connectStream();
  drawEquity();
  initAccountControls();
  initPlans();
  initCalendar();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
