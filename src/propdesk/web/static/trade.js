// The order ticket and the position / order actions of the trading screen.
// Risk is previewed (POST /api/v1/accounts/{id}/risk-preview) before submitting; a refusal shows the rule's code
// and message from the execution core. After any action the live stream brings the new state (no reload).
import { api, fmtMoney } from "./app.js";

function val(id) {
  const el = document.getElementById(id);
  const v = el ? el.value.trim() : "";
  return v === "" ? null : v;
}

function show(el, text, cls) {
  el.hidden = false;
  el.textContent = text;
  el.className = "ticket-result " + (cls || "");
}

function describeError(e) {
  const d = e.details || {};
  const parts = [`${e.code || "error"}: ${e.message}`];
  const nums = ["limit", "value", "required", "allowed", "max", "min"].filter((k) => d[k] !== undefined)
    .map((k) => `${k} ${typeof d[k] === "object" ? JSON.stringify(d[k]) : d[k]}`);
  if (nums.length) parts.push("(" + nums.join(", ") + ")");
  if (d.errors && d.errors.length) parts.push(d.errors.map((x) => (x.loc || []).slice(-1)[0] + ": " + x.msg).join("; "));
  return parts.join(" ");
}

export class Ticket {
  constructor(form, accountId, { getSymbol }) {
    this.form = form;
    this.accountId = accountId;
    this.getSymbol = getSymbol;
    this.result = document.getElementById("ticket-result");
    this.previewSeq = 0;
    this.timer = null;
    this.canTrade = true;
    const type = document.getElementById("t-type");
    type.addEventListener("change", () => {
      document.getElementById("t-price-field").hidden = type.value === "market";
      this.schedulePreview();
    });
    for (const id of ["t-qty", "t-sl", "t-tp", "t-price"]) {
      document.getElementById(id).addEventListener("input", () => this.schedulePreview());
    }
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const side = ev.submitter && ev.submitter.dataset.side;
      if (side) this.submit(side);
    });
  }

  body(side) {
    const type = val("t-type") || "market";
    const b = { symbol: this.getSymbol(), side, quantity: val("t-qty"), order_type: type };
    if (type === "limit") b.limit_price = val("t-price");
    if (type === "stop") b.stop_price = val("t-price");
    const sl = val("t-sl"), tp = val("t-tp");
    if (sl) b.stop_loss = sl;
    if (tp) b.take_profit = tp;
    return b;
  }

  // The side whose risk to show: a stop loss below the entry means a buy, above means a sell.
  previewSide() {
    const sl = Number(val("t-sl")), tp = Number(val("t-tp"));
    const ask = Number(document.getElementById("q-ask").textContent.replace(/,/g, ""));
    if (sl && ask) return sl < ask ? "buy" : "sell";
    if (tp && ask) return tp > ask ? "buy" : "sell";
    return "buy";
  }

  schedulePreview() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.preview(), 150);
  }

  setCanTrade(can) {
    this.canTrade = can;
    for (const b of this.form.querySelectorAll("button[type=submit]")) b.disabled = !can;
    if (!can) show(this.result, "Trading is closed on this account.", "banner-warn");
  }

  async preview() {
    const box = document.getElementById("risk-box");
    const set = (id, text) => { document.getElementById(id).textContent = text; };
    const qty = Number(val("t-qty"));
    if (!qty || qty <= 0) { set("risk-note", "Enter the lots to see the risk."); return; }
    const seq = ++this.previewSeq;
    const body = this.body(this.previewSide());
    try {
      const r = await api("POST", `/api/v1/accounts/${this.accountId}/risk-preview`, body);
      if (seq !== this.previewSeq) return;
      const cur = r.currency || "";
      set("risk-money", r.risk != null ? `${fmtMoney(r.risk)} ${cur}` : "no SL: unlimited");
      set("risk-pct", r.risk_pct != null ? `${Number(r.risk_pct).toFixed(2)}%` : "—");
      set("reward-money", r.reward != null ? `${fmtMoney(r.reward)} ${cur}` : "—");
      set("risk-notional", r.notional != null ? `${fmtMoney(r.notional)} ${cur}` : "—");
      let note = r.gate ? `Would be refused now: ${r.gate.code} — ${r.gate.message}` : "";
      if (r.max_risk_per_trade) note += (note ? " · " : "") + `max risk per trade ${r.max_risk_per_trade.pct}%`;
      set("risk-note", note);
      box.dataset.ready = "1";
      box.classList.toggle("warn", !!r.gate);
    } catch (e) {
      if (seq !== this.previewSeq) return;
      set("risk-note", describeError(e));
    }
  }

  async submit(side) {
    if (!this.canTrade) return;
    const buttons = this.form.querySelectorAll("button[type=submit]");
    for (const b of buttons) b.disabled = true;
    try {
      const r = await api("POST", `/api/v1/accounts/${this.accountId}/orders`, this.body(side));
      const o = r.order || {};
      if (r.fill) show(this.result, `Filled: ${o.side} ${o.quantity} ${o.symbol} at ${r.fill.price}`, "banner-ok");
      else show(this.result, `Order accepted: ${o.order_type} ${o.side} ${o.quantity} ${o.symbol} (${o.status})`, "banner-ok");
    } catch (e) {
      show(this.result, "Refused — " + describeError(e), "banner-error");
    } finally {
      for (const b of buttons) b.disabled = !this.canTrade;
    }
  }
}

// Buttons inside the live fragments (positions, orders): delegated, since the fragments are replaced.
export function bindActions(root, accountId, notify) {
  const modify = document.getElementById("modify-dialog");
  const partial = document.getElementById("partial-dialog");
  let current = null;

  root.addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button[data-action]");
    if (!btn || !root.contains(btn)) return;
    const action = btn.dataset.action;
    const sym = btn.dataset.symbol;
    try {
      if (action === "close") {
        btn.disabled = true;
        await api("POST", `/api/v1/accounts/${accountId}/positions/${sym}/close`, {});
        notify(`Closed ${sym}`, "banner-ok");
      } else if (action === "cancel") {
        btn.disabled = true;
        await api("POST", `/api/v1/accounts/${accountId}/orders/${btn.dataset.orderId}/cancel`, {});
        notify("Order cancelled", "banner-ok");
      } else if (action === "modify") {
        current = sym;
        document.getElementById("modify-symbol").textContent = sym;
        document.getElementById("m-sl").value = btn.dataset.sl || "";
        document.getElementById("m-tp").value = btn.dataset.tp || "";
        document.getElementById("modify-error").hidden = true;
        modify.showModal();
      } else if (action === "partial") {
        current = sym;
        document.getElementById("partial-symbol").textContent = sym;
        document.getElementById("p-qty").value = "";
        document.getElementById("p-qty").placeholder = `up to ${btn.dataset.qty}`;
        document.getElementById("partial-error").hidden = true;
        partial.showModal();
      }
    } catch (e) {
      btn.disabled = false;
      notify("Refused — " + describeError(e), "banner-error");
    }
  });

  modify.addEventListener("close", async () => {
    if (modify.returnValue !== "save" || !current) return;
    const sl = document.getElementById("m-sl").value.trim();
    const tp = document.getElementById("m-tp").value.trim();
    const body = {};
    if (sl) body.stop_loss = sl; else body.clear_stop_loss = true;
    if (tp) body.take_profit = tp; else body.clear_take_profit = true;
    try {
      await api("POST", `/api/v1/accounts/${accountId}/positions/${current}/modify`, body);
      notify(`Updated SL/TP of ${current}`, "banner-ok");
    } catch (e) {
      notify("Refused — " + describeError(e), "banner-error");
    }
  });

  partial.addEventListener("close", async () => {
    if (partial.returnValue !== "save" || !current) return;
    const qty = document.getElementById("p-qty").value.trim();
    if (!qty) return;
    try {
      await api("POST", `/api/v1/accounts/${accountId}/positions/${current}/close`, { quantity: qty });
      notify(`Closed ${qty} lots of ${current}`, "banner-ok");
    } catch (e) {
      notify("Refused — " + describeError(e), "banner-error");
    }
  });
}
