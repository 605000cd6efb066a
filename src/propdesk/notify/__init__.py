"""Notifications leaving the platform: email (SMTP)."""
