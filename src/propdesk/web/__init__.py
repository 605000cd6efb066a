"""The browser front end: pages, templates, static assets, identity, and per-user data access."""
