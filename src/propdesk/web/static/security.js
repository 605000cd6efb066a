// The account security page (/account/security): set up, confirm and turn off the one-time code (TOTP) through
// /api/v1/me/totp. The secret and its otpauth:// URI are shown as text, once (no QR library).

const card = document.getElementById("totp-card");
const error = card.querySelector("[data-form-error]");
const status = card.querySelector("[data-form-status]");

function show(el, text) {
  el.textContent = text || "";
  el.hidden = !text;
}

function describe(body, code) {
  const err = body && body.error;
  if (code === 429) {
    const wait = err && err.details && err.details.retry_after_seconds;
    return "Too many attempts." + (wait ? ` Try again in ${wait} s.` : " Try again later.");
  }
  if (err && err.message) return err.message.charAt(0).toUpperCase() + err.message.slice(1) + ".";
  return `Something went wrong (${code}). Please try again.`;
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: {"Content-Type": "application/json", "Accept": "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let json = null;
  try { json = await response.json(); } catch (_) { json = null; }
  return {ok: response.ok, status: response.status, body: json};
}

function codeOf(form) {
  return String(new FormData(form).get("code") || "").replace(/\s+/g, "");
}

function setEnabled(enabled, redirect) {
  card.dataset.totpEnabled = enabled ? "true" : "false";
  document.getElementById("totp-setup").hidden = enabled;
  document.getElementById("totp-secret-box").hidden = true;
  document.getElementById("totp-remove-form").hidden = !enabled;
  document.getElementById("totp-start").hidden = false;
  const banner = document.getElementById("totp-required");
  if (banner && enabled) banner.hidden = true;
  const next = document.getElementById("totp-continue");
  if (enabled && redirect) {
    next.querySelector("a").setAttribute("href", redirect);
  }
  next.hidden = !enabled;
  const line = card.querySelector("[data-totp-status]");
  line.textContent = enabled
    ? "A one-time code (TOTP) is on: every login asks for it."
    : "A one-time code (TOTP) is off.";
}

document.getElementById("totp-start").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  show(error, "");
  show(status, "");
  button.disabled = true;
  try {
    const r = await post("/api/v1/me/totp");
    if (!r.ok) { show(error, describe(r.body, r.status)); return; }
    document.querySelector("[data-totp-secret]").textContent = r.body.secret;
    document.querySelector("[data-totp-uri]").textContent = r.body.otpauth_uri;
    document.getElementById("totp-secret-box").hidden = false;
    button.hidden = true;
    document.getElementById("totp-confirm-code").focus();
  } catch (_) {
    show(error, "The server could not be reached. Check your connection and try again.");
  } finally {
    button.disabled = false;
  }
});

for (const [id, url, done] of [
  ["totp-confirm-form", "/api/v1/me/totp/confirmation", "The one-time code is on. Every login will ask for it."],
  ["totp-remove-form", "/api/v1/me/totp/removal", "The one-time code is off."],
]) {
  const form = document.getElementById(id);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    show(error, "");
    show(status, "");
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const r = await post(url, {code: codeOf(form)});
      if (!r.ok) { show(error, describe(r.body, r.status)); return; }
      form.reset();
      setEnabled(Boolean(r.body.totp && r.body.totp.enabled), r.body.redirect);
      show(status, done);
    } catch (_) {
      show(error, "The server could not be reached. Check your connection and try again.");
    } finally {
      button.disabled = false;
    }
  });
}
