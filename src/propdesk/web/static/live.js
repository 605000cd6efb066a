// The dashboard's live connection: one EventSource on /api/v1/stream/accounts/{id}?symbol=...
// `account` events carry server-rendered fragments (replaced in place) and data for the charts and the ticket;
// `news` events replace the news panel when its events changed; `quote` events carry bid/ask. EventSource reconnects by itself; there is no polling anywhere.

export class LiveAccount {
  constructor(accountId, { onAccount, onQuote, onStatus, onNews } = {}) {
    this.accountId = accountId;
    this.onAccount = onAccount || (() => {});
    this.onNews = onNews || (() => {});
    this.onQuote = onQuote || (() => {});
    this.onStatus = onStatus || (() => {});
    this.source = null;
    this.symbol = null;
  }

  connect(symbol) {
    this.close();
    this.symbol = symbol || null;
    const qs = this.symbol ? "?symbol=" + encodeURIComponent(this.symbol) : "";
    const src = new EventSource("/api/v1/stream/accounts/" + encodeURIComponent(this.accountId) + qs);
    this.source = src;
    src.addEventListener("open", () => this.onStatus("live"));
    src.addEventListener("error", () => this.onStatus(src.readyState === EventSource.CLOSED ? "closed" : "reconnecting"));
    src.addEventListener("account", (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      applyFragments(msg.html || {});
      this.onAccount(msg);
    });
    src.addEventListener("news", (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      this.onNews(msg);
    });
    // The server ends the stream when the session is over (logout, revocation, timeout): go to the login page
    // instead of letting EventSource reconnect forever.
    src.addEventListener("session_ended", () => {
      this.close();
      this.onStatus("closed");
      window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
    });
    src.addEventListener("quote", (ev) => {
      let q;
      try { q = JSON.parse(ev.data); } catch (e) { return; }
      this.onQuote(q);
    });
  }

  close() {
    if (this.source) { this.source.close(); this.source = null; }
  }
}

// Replace #frag-<name> with the server's fresh HTML (autoescaped by the server's templates; no scripts inside).
export function applyFragments(html) {
  for (const [name, markup] of Object.entries(html)) {
    const el = document.getElementById("frag-" + name);
    if (!el || el.dataset.lastHtml === markup) continue;
    // Keep open <details> open across updates (a trader reading evidence should not see it collapse).
    const open = new Set([...el.querySelectorAll("details[open]")].map((d) => d.closest("[data-alert-id]")?.dataset.alertId));
    el.innerHTML = markup;
    el.dataset.lastHtml = markup;
    for (const d of el.querySelectorAll("[data-alert-id] details")) {
      if (open.has(d.closest("[data-alert-id]").dataset.alertId)) d.open = true;
    }
  }
}
