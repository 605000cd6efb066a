"""Identity: web users (argon2 passwords, sessions, resets), API tokens and principals, the signup captcha."""
