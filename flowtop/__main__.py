from __future__ import annotations

try:
    from flowtop.cli import main
except KeyboardInterrupt:  # Ctrl-C before main() installs its handler: nothing to undo
    raise SystemExit(130) from None

raise SystemExit(main())
