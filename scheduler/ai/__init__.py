"""Asking about pipelines: read-only tools (``tools``), the Claude loop (``ask``)."""
