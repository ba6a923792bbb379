"""``python -m adapmtl`` (also the entry point under ``torchrun -m adapmtl``)."""

from adapmtl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
