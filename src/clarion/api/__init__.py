"""The HTTP API under /v1: publish (publishers), inbox (users), keys (admins)."""
