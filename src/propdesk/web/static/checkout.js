// Checkout on /app: pick a plan and a size, pay with the DEV provider (POST /api/v1/checkout), open the account.
import { api, fmtMoney, readJson } from "./app.js";

const plans = readJson("plans-data") || [];
const form = document.getElementById("checkout");

function newKey() {
  const a = new Uint8Array(16);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

if (form) {
  const planSel = document.getElementById("co-plan");
  const offerSel = document.getElementById("co-offer");
  const price = document.getElementById("co-price");
  const err = document.getElementById("co-error");
  const pay = document.getElementById("co-pay");
  // One key per intent: a double click or a retry after a network error buys once.
  let key = newKey();

  const plan = () => plans.find((p) => p.id === planSel.value);
  const showPrice = () => {
    const p = plan();
    const o = p && p.offers.find((x) => x.id === offerSel.value);
    price.textContent = o ? `${fmtMoney(o.price, 0)} ${o.currency}` : "";
  };
  const fillOffers = () => {
    const p = plan();
    offerSel.replaceChildren(...(p ? p.offers : []).map((o) => {
      const opt = document.createElement("option");
      opt.value = o.id;
      opt.textContent = `${fmtMoney(o.starting_balance, 0)} ${o.currency} — ${fmtMoney(o.price, 0)} ${o.currency}`;
      return opt;
    }));
    key = newKey();
    showPrice();
  };
  planSel.addEventListener("change", fillOffers);
  offerSel.addEventListener("change", () => { key = newKey(); showPrice(); });
  showPrice();

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.hidden = true;
    pay.disabled = true;
    try {
      const r = await api("POST", "/api/v1/checkout",
                          { plan_id: planSel.value, offer_id: offerSel.value, payment_provider: "dev" },
                          { "Idempotency-Key": key });
      window.location.assign(`/app/accounts/${r.account.id}`);
    } catch (e) {
      err.textContent = `${e.code || "error"}: ${e.message}`;
      err.hidden = false;
      pay.disabled = false;
    }
  });
}
