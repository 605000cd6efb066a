// The account dashboard / trading screen: wires the charts, the ticket and the live stream together.
import { readJson, setServerNow, tickCountdowns } from "./app.js";
import { EquityChart, PriceChart } from "./chart.js";
import { LiveAccount } from "./live.js";
import { Ticket, bindActions } from "./trade.js";

const boot = readJson("boot");
const root = document.getElementById("dashboard");

function fmtPx(v, digits) {
  const n = Number(v);
  return Number.isNaN(n) ? "—" : n.toFixed(digits);
}

if (boot && root) {
  const accountId = boot.account_id;
  let symbol = boot.symbol;
  const precision = (s) => ((boot.symbols || []).find((x) => x.symbol === s) || { precision: 5 }).precision;
  const select = document.getElementById("chart-symbol");
  const tfSelect = document.getElementById("chart-timeframe");
  const result = document.getElementById("ticket-result");
  const dot = document.getElementById("live-dot");
  const label = document.getElementById("live-label");
  let lastData = boot.data;

  const price = new PriceChart(document.getElementById("price-chart"), { symbols: boot.symbols });
  const equity = new EquityChart(document.getElementById("equity-chart"));
  equity.setData(boot.equity);

  const ticket = new Ticket(document.getElementById("ticket"), accountId, { getSymbol: () => symbol });
  ticket.setCanTrade(boot.data.can_trade);
  const notify = (text, cls) => { result.hidden = false; result.textContent = text; result.className = "ticket-result " + cls; };
  bindActions(root, accountId, notify);

  const live = new LiveAccount(accountId, {
    onStatus: (s) => {
      dot.className = "live-dot " + (s === "live" ? "on" : "off");
      label.textContent = s;
      root.dataset.live = s;
    },
    onAccount: (msg) => {
      lastData = msg.data;
      if (msg.t) setServerNow(new Date(msg.t * 1000).toISOString());
      tickCountdowns();
      price.setLevels(msg.data);
      equity.push(msg.t, msg.data);
      ticket.setCanTrade(msg.data.can_trade);
      root.dataset.status = msg.data.status;
      root.dataset.updates = String(Number(root.dataset.updates || "0") + 1);
    },
    onQuote: (q) => {
      if (q.symbol === symbol) {
        const d = precision(symbol);
        document.getElementById("q-bid").textContent = fmtPx(q.bid, d);
        document.getElementById("q-ask").textContent = fmtPx(q.ask, d);
        document.getElementById("chart-last").textContent = `${q.symbol} ${fmtPx(q.mid, d)}`;
        price.tick(q);
      }
    },
  });

  async function switchSymbol(next) {
    symbol = next;
    document.getElementById("ticket-symbol").textContent = symbol;
    document.getElementById("q-bid").textContent = "—";
    document.getElementById("q-ask").textContent = "—";
    history.replaceState(null, "", `?symbol=${encodeURIComponent(symbol)}`);
    await price.load(symbol, tfSelect.value);
    price.setLevels(lastData);
    live.connect(symbol);
    ticket.schedulePreview();
  }

  select.addEventListener("change", () => switchSymbol(select.value));
  tfSelect.addEventListener("change", async () => { await price.load(symbol, tfSelect.value); price.setLevels(lastData); });
  root.addEventListener("click", (ev) => {
    const a = ev.target.closest("a[data-chart-symbol]");
    if (!a) return;
    ev.preventDefault();
    select.value = a.dataset.chartSymbol;
    switchSymbol(a.dataset.chartSymbol);
  });

  price.load(symbol, tfSelect.value).then(() => price.setLevels(lastData));
  live.connect(symbol);
  window.addEventListener("pagehide", () => live.close());
}
