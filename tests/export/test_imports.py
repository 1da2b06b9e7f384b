"""The export package stays a core module: no Textual, no Rich."""

from __future__ import annotations

import subprocess
import sys


def test_export_imports_no_ui() -> None:
    code = (
        "import sys, flowtop.export.ipfix as m; "
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('textual', 'rich')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
