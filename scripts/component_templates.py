#!/usr/bin/env python3
"""Write (or with --check, compare) lwcontainer's CI/CD component templates, templates/*.yml,
from the scaffold's jobs (lwcontainer/ci/templates.py), so the two never drift apart."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lwcontainer.ci.scaffold import component_template  # noqa: E402

ENGINES = ("inplace", "docker")


def main(argv: list[str]) -> int:
    stale = []
    for engine in ENGINES:
        path = ROOT / "templates" / f"{engine}.yml"
        text = component_template(engine)
        if "--check" in argv:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run scripts/component_templates.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
