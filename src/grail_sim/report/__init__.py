"""The report stage: Markdown reports (Jinja2) per model and the portfolio, with figures."""
