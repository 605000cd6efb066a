// Charts with TradingView lightweight-charts (vendored: static/vendor/lightweight-charts.js, global LightweightCharts).
// PriceChart: candlesticks of one symbol from GET /api/v1/market/candles, the last bar updated by live quotes,
// and price lines for the account's entries, stop losses, take profits and working orders.
// EquityChart: the equity curve with the daily-loss and max-loss floors drawn over it.

const LWC = window.LightweightCharts;
const TF_SECONDS = { "1m": 60, "5m": 300, "15m": 900, "1h": 3600 };

const THEME = {
  layout: { background: { type: "solid", color: "#131c28" }, textColor: "#a9b5c6", fontSize: 11,
            attributionLogo: false },
  grid: { vertLines: { color: "#1b2636" }, horzLines: { color: "#1b2636" } },
  rightPriceScale: { borderColor: "#233044" },
  timeScale: { borderColor: "#233044", timeVisible: true, secondsVisible: false },
  crosshair: { mode: 0 },
};

export function chartsAvailable() { return !!LWC; }

function precisionOf(symbols, symbol) {
  const s = (symbols || []).find((x) => x.symbol === symbol);
  return s ? s.precision : 5;
}

export class PriceChart {
  constructor(el, { symbols } = {}) {
    this.el = el;
    this.symbols = symbols || [];
    this.symbol = null;
    this.timeframe = "1m";
    this.lastBar = null;
    this.lines = [];
    this.lastLevels = "";
    if (!LWC) return;
    this.chart = LWC.createChart(el, { ...THEME, autoSize: true });
    this.series = this.chart.addSeries(LWC.CandlestickSeries, {
      upColor: "#22c38e", downColor: "#f2545b", borderVisible: false, wickUpColor: "#22c38e", wickDownColor: "#f2545b",
    });
  }

  async load(symbol, timeframe) {
    this.symbol = symbol;
    this.timeframe = timeframe || this.timeframe;
    this.lastBar = null;
    this.lastLevels = "";
    if (!this.series) return;
    const digits = precisionOf(this.symbols, symbol);
    this.series.applyOptions({ priceFormat: { type: "price", precision: digits, minMove: Math.pow(10, -digits) } });
    let bars = [];
    try {
      const resp = await fetch(`/api/v1/market/candles?symbol=${encodeURIComponent(symbol)}&timeframe=${this.timeframe}&limit=300`,
                               { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (resp.ok) {
        const body = await resp.json();
        bars = (body.bars || []).map((b) => ({ time: Math.floor(Date.parse(b.start) / 1000), open: +b.open,
                                               high: +b.high, low: +b.low, close: +b.close }));
      }
    } catch (e) { bars = []; }  // no history: start from live ticks
    if (symbol !== this.symbol) return;  // the user switched symbols while this loaded
    this.series.setData(bars);
    this.lastBar = bars.length ? { ...bars[bars.length - 1] } : null;
    this.chart.timeScale().scrollToRealTime();
  }

  // A live quote: update the last bar (or open a new one) with the mid price.
  tick(q) {
    if (!this.series || q.symbol !== this.symbol) return;
    const px = (Number(q.bid) + Number(q.ask)) / 2;
    const tf = TF_SECONDS[this.timeframe] || 60;
    const t = Math.floor(Date.parse(q.ts) / 1000 / tf) * tf;
    if (Number.isNaN(t) || Number.isNaN(px)) return;
    let bar = this.lastBar;
    if (bar && t < bar.time) return;  // older than what is drawn
    if (!bar || t > bar.time) bar = { time: t, open: px, high: px, low: px, close: px };
    else bar = { ...bar, high: Math.max(bar.high, px), low: Math.min(bar.low, px), close: px };
    this.lastBar = bar;
    this.series.update(bar);
  }

  // Entries, SL/TP of positions and working orders of this chart's symbol, as horizontal price lines.
  setLevels(data) {
    if (!this.series) return;
    const levels = [];
    for (const p of (data.positions || [])) {
      if (p.symbol !== this.symbol) continue;
      levels.push({ price: +p.avg_price, color: "#2ea1ff", title: `${p.side} ${Number(p.quantity)}`, style: 0 });
      if (p.stop_loss) levels.push({ price: +p.stop_loss, color: "#f2545b", title: "SL", style: 2 });
      if (p.take_profit) levels.push({ price: +p.take_profit, color: "#22c38e", title: "TP", style: 2 });
    }
    for (const o of (data.orders || [])) {
      if (o.symbol !== this.symbol) continue;
      const px = o.limit_price || o.stop_price;
      if (px) levels.push({ price: +px, color: "#f0b429", title: `${o.order_type} ${o.side} ${Number(o.quantity)}`, style: 1 });
    }
    const key = JSON.stringify(levels);
    if (key === this.lastLevels) return;
    this.lastLevels = key;
    for (const line of this.lines) this.series.removePriceLine(line);
    this.lines = levels.map((l) => this.series.createPriceLine({
      price: l.price, color: l.color, lineWidth: 1, lineStyle: l.style, axisLabelVisible: true, title: l.title,
    }));
  }
}

export class EquityChart {
  constructor(el) {
    this.el = el;
    this.lastTime = 0;
    if (!LWC) return;
    this.chart = LWC.createChart(el, { ...THEME, autoSize: true });
    this.equity = this.chart.addSeries(LWC.AreaSeries, {
      lineColor: "#2ea1ff", topColor: "rgba(46,161,255,0.28)", bottomColor: "rgba(46,161,255,0.02)", lineWidth: 2,
      priceFormat: { type: "price", precision: 2, minMove: 0.01 },
    });
    this.daily = this.chart.addSeries(LWC.LineSeries, {
      color: "#f2545b", lineWidth: 1, lineStyle: 2, lineType: 1, priceLineVisible: false, lastValueVisible: true,
      title: "daily floor",
    });
    this.maxFloor = this.chart.addSeries(LWC.LineSeries, {
      color: "#f0b429", lineWidth: 1, lineStyle: 2, lineType: 1, priceLineVisible: false, lastValueVisible: true,
      title: "max-loss floor",
    });
  }

  static points(list, field) {
    const out = [];
    for (const p of list || []) {
      const v = Number(p[field]);
      if (p.t === undefined || Number.isNaN(v)) continue;
      if (out.length && out[out.length - 1].time >= p.t) out[out.length - 1] = { time: p.t, value: v };
      else out.push({ time: p.t, value: v });
    }
    return out;
  }

  setData(series) {
    if (!this.chart) return;
    const eq = EquityChart.points(series.points, "equity");
    this.equity.setData(eq);
    this.daily.setData(EquityChart.points(series.daily_floor, "value"));
    this.maxFloor.setData(EquityChart.points(series.max_loss_floor, "value"));
    this.lastTime = eq.length ? eq[eq.length - 1].time : 0;
    this.chart.timeScale().fitContent();
  }

  // A live point from an `account` event: equity now, and the floors carried to now.
  push(t, data) {
    if (!this.chart || !t || t < this.lastTime) return;
    const floors = data.floors || {};
    const put = (series, value) => {
      const v = Number(value);
      if (value === null || value === undefined || Number.isNaN(v)) return;
      try { series.update({ time: t, value: v }); } catch (e) { /* older than the series' last point */ }
    };
    put(this.equity, data.balance && data.balance.equity);
    put(this.daily, floors.daily);
    put(this.maxFloor, floors.max);
    this.lastTime = t;
  }
}
