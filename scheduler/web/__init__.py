"""The web dashboard and HTTP API (``tomlflow web``): server-rendered pages, a JSON API and
``/metrics``. Handlers parse, call the functions the command line calls, and render."""
