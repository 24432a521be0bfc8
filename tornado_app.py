"""Start the kvis HTTP service: ``python tornado_app.py --port 8080``.

Every option also reads a ``KVIS_*`` environment variable; see
``python tornado_app.py --help`` and docs/server.md.
"""

from __future__ import annotations

from kvis_parallel.server.app import main

if __name__ == "__main__":
    raise SystemExit(main())
