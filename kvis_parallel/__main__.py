"""Run the command line: ``python -m kvis_parallel render|inspect ...``."""

from __future__ import annotations

import logging

from .cli import main

logger = logging.getLogger(__name__)

raise SystemExit(main())
