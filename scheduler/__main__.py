"""`python -m scheduler` runs the tomlflow command line."""

from scheduler.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
