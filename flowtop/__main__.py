from __future__ import annotations

from flowtop.cli import main

raise SystemExit(main())
