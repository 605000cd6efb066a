// The account dashboard / trading screen: wires the charts, the ticket and the live stream together.
import { fmtDuration, readJson, serverNow, setServerNow, tickCountdowns } from "./app.js";
import { EquityChart, PriceChart } from "./chart.js";
import { LiveAccount } from "./live.js";
import { Ticket, bindActions } from "./trade.js";

const boot = readJson("boot");
const root = document.getElementById("dashboard");

function fmtPx(v, digits) {
  const n = Number(v);
  return Number.isNaN(n) ? "—" : n.toFixed(digits);
}

// News blackouts: where the server's now stands against one event's window (the same words as the server's
// first render, trader_views.news_countdown). Times are the instants the page was rendered with.
function newsCountdown(at, from, to, now) {
  if (Number.isNaN(from) || Number.isNaN(to)) return at > now ? `in ${fmtDuration(at - now)}` : "passed";
  if (now < from) return `blackout in ${fmtDuration(from - now)}`;
  if (now <= to) return `blackout now, ends in ${fmtDuration(to - now)}`;
  return "passed";
}

const ACTION_WORDS = {
  reject_order: "orders are refused by the news rule",
  flag: "trades are flagged for review",
  deduct_profit: "trades are flagged and their profit deducted",
};

// Re-renders the news panel's countdowns and the ticket's blackout notice once a second: a display clock over
// the instants already on the page, not a poll.
function tickNews(news, symbol) {
  const now = serverNow();
  for (const li of document.querySelectorAll("[data-news-event]")) {
    const at = Date.parse(li.dataset.at);
    const from = Date.parse(li.dataset.from || "");
    const to = Date.parse(li.dataset.to || "");
    const out = li.querySelector("[data-news-countdown]");
    if (out) out.textContent = newsCountdown(at, from, to, now);
    li.classList.toggle("is-active", from <= now && now <= to);
    li.classList.toggle("is-passed", (Number.isNaN(to) ? at : to) < now);
  }
  const notice = document.getElementById("ticket-news");
  if (!notice) return;
  const rule = news && news.rule;
  const hit = rule ? (news.events || []).find((e) => (e.symbols || []).includes(symbol)
    && Date.parse(e.blackout_from) <= now && now <= Date.parse(e.blackout_to)) : null;
  if (!hit) { notice.hidden = true; notice.textContent = ""; notice.className = "ticket-news"; return; }
  const what = ACTION_WORDS[rule.action] || `the news rule applies (${rule.action})`;
  const closing = rule.scope === "open_and_close" ? " Closing counts too." : " Closing is still allowed.";
  const text = `News blackout on ${symbol}: ${hit.title} (${hit.currency}). ${symbol} ${what} until`
    + ` ${hit.ends_local || hit.blackout_to}.` + (rule.action === "reject_order" ? closing : "");
  // Written only when it changes: the notice is a live region, and must not be re-announced every second.
  if (notice.textContent !== text) notice.textContent = text;
  notice.className = "ticket-news " + (rule.action === "reject_order" ? "is-reject" : "is-flag");
  notice.dataset.action = rule.action;
  notice.hidden = false;
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
    onNews: (msg) => {
      const body = document.getElementById("news-body");
      if (body && typeof msg.html === "string") body.innerHTML = msg.html;  // our own server-rendered template
      boot.news = msg.data;
      tickNews(boot.news, symbol);
      root.dataset.newsUpdates = String(Number(root.dataset.newsUpdates || "0") + 1);
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
    tickNews(boot.news, symbol);
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

  tickNews(boot.news, symbol);
  setInterval(() => tickNews(boot.news, symbol), 1000);

  price.load(symbol, tfSelect.value).then(() => price.setLevels(lastData));
  live.connect(symbol);
  window.addEventListener("pagehide", () => live.close());
}
