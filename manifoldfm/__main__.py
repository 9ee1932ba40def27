"""``python -m manifoldfm`` (and ``torchrun -m manifoldfm``) runs the ``manifoldfm`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
