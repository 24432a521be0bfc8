"""Run the server with ``python -m kvis_parallel.server``."""

from __future__ import annotations

from .app import main

raise SystemExit(main())
