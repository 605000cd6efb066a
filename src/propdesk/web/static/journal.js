// The journal page: save notes on closed trades (PUT .../journal/{fill_id}) and mark notifications read.
import { api } from "./app.js";

const root = document.getElementById("journal");
if (root) {
  const accountId = root.dataset.accountId;
  root.addEventListener("submit", async (ev) => {
    const form = ev.target.closest("form.note-form");
    if (!form) return;
    ev.preventDefault();
    const status = form.querySelector(".note-status");
    status.textContent = "saving…";
    try {
      await api("PUT", `/api/v1/accounts/${accountId}/journal/${form.dataset.fillId}`,
                { note: form.elements.note.value });
      status.textContent = "saved";
    } catch (e) {
      status.textContent = `${e.code || "error"}: ${e.message}`;
    }
  });
  root.addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button[data-action=mark-read]");
    if (!btn) return;
    try {
      await api("POST", `/api/v1/notifications/${btn.dataset.id}/read`, {});
      btn.remove();
    } catch (e) {
      btn.textContent = e.message;
    }
  });
}
