// The account forms (login, sign-up, password reset): JSON to the auth API with fetch, errors shown inline.
// Login asks for the one-time code only when the API answers totp_required (TOTP enabled for that user).
// Same-origin requests: the browser adds Origin, which the server's CSRF check wants.

const ENDPOINTS = {
  "login": "/api/v1/auth/login",
  "signup": "/api/v1/auth/signup",
  "reset-request": "/api/v1/auth/password-reset",
  "reset-confirm": "/api/v1/auth/password-reset/confirm",
};

// Only a path on this site may be the target after login (the server checks ?next= too).
function safeNext(value) {
  if (!value || !value.startsWith("/") || value.startsWith("//") || value.includes("\\")) return "";
  return value;
}

function show(el, text) {
  if (!el) return;
  el.textContent = text || "";
  el.hidden = !text;
}

function describe(body, status) {
  const err = body && body.error;
  if (status === 429) {
    const wait = err && err.details && err.details.retry_after_seconds;
    return "Too many attempts." + (wait ? ` Try again in ${wait} s.` : " Try again later.");
  }
  if (err && err.code === "validation_error") return "Please fill in every field.";
  if (err && err.message) return err.message.charAt(0).toUpperCase() + err.message.slice(1) + ".";
  return `Something went wrong (${status}). Please try again.`;
}

// The one-time-code field of the login form: hidden (and disabled, so it is not sent) until the API answers
// totp_required. True when it was hidden until now (the first answer only asks for the code).
function revealCode(form) {
  const field = form.querySelector("[data-totp-field]");
  const input = field && field.querySelector("input");
  if (!field || !input) return false;
  const first = field.hidden;
  field.hidden = false;
  input.disabled = false;
  input.required = true;
  input.focus();
  return first;
}

function payload(form, kind) {
  const data = new FormData(form);
  const out = {};
  for (const [key, value] of data.entries()) {
    if (key === "cf-turnstile-response") out.turnstile_token = String(value);
    else if (key === "totp_code") out.totp_code = String(value).replace(/\s+/g, "");
    else out[key] = String(value);
  }
  if (kind === "signup") {
    try {
      out.timezone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    } catch (_) {
      out.timezone = "UTC";
    }
  }
  return out;
}

async function submit(form, kind) {
  const error = form.querySelector("[data-form-error]");
  const status = form.querySelector("[data-form-status]");
  const button = form.querySelector("button[type=submit]");
  show(error, "");
  show(status, "");
  if (button) button.disabled = true;
  let finished = false;
  try {
    const response = await fetch(ENDPOINTS[kind], {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json"},
      body: JSON.stringify(payload(form, kind)),
    });
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (!response.ok) {
      const code = body && body.error && body.error.code;
      if (kind === "login" && code === "totp_required" && revealCode(form)) {
        show(error, "Enter the 6-digit code from your authenticator app.");
        return;
      }
      const codeShown = kind === "login" && form.querySelector("[data-totp-field]:not([hidden])");
      show(error, code === "invalid_credentials" && codeShown
        ? "The email, password or code is wrong." : describe(body, response.status));
      if (kind === "signup" && window.turnstile) window.turnstile.reset();
      return;
    }
    if ((kind === "login" || kind === "signup") && response.status !== 202) {
      const target = safeNext(form.dataset.next) || (body && body.redirect) || "/app";
      window.location.assign(target);
      return;
    }
    if (kind === "reset-confirm") {
      show(status, "Your password is changed. You can log in now.");
      form.querySelectorAll("input, button").forEach((el) => { el.disabled = true; });
      finished = true;
      window.setTimeout(() => window.location.assign("/login"), 1500);
      return;
    }
    show(status, (body && body.message) || "Check your email for the next step.");
    form.reset();
  } catch (_) {
    show(error, "The server could not be reached. Check your connection and try again.");
  } finally {
    if (button && !finished) button.disabled = false;
  }
}

for (const form of document.querySelectorAll("form[data-auth-form]")) {
  const kind = form.dataset.authForm;
  if (!(kind in ENDPOINTS)) continue;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit(form, kind);
  });
}
