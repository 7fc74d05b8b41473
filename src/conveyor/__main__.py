"""``python -m conveyor``: the same as the ``conveyor`` command."""

from __future__ import annotations

from conveyor.cli.main import main

if __name__ == "__main__":
    main()
