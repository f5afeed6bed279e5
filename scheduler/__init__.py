"""tomlflow: a scheduler for batch pipelines whose workflows are TOML files."""

__version__ = "0.1.0"
