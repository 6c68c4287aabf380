"""``python -m worker.cli``: the same command as the ``worker`` script."""

from worker.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
