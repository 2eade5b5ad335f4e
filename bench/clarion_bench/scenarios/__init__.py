"""The scenarios, one module each; each runs on servers it starts fresh and returns a summary
that the report turns into tables."""
