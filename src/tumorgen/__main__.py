"""`python -m tumorgen` is the same as the `tumorgen` command."""

from tumorgen.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
