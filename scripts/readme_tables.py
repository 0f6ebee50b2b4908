#!/usr/bin/env python3
"""Regenerate README's settings and exit-code tables from the code (``--check`` only compares).

The tables sit between <!-- settings --> / <!-- /settings --> and <!-- exit-codes --> /
<!-- /exit-codes --> markers; tests/test_cli.py fails when they are out of step.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lwcontainer.errors import EXIT_MEANINGS  # noqa: E402
from lwcontainer.config.settings import SPECS  # noqa: E402

README = Path(__file__).resolve().parent.parent / "README.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def settings_table() -> str:
    rows = ["| variable | switch | default | meaning |", "|---|---|---|---|"]
    for spec in SPECS:
        switch = "—" if spec.secret else f"`{spec.switch}`"
        dotenv = " (.env)" if spec.dotenv else ""
        rows.append(f"| `{spec.variable}`{dotenv} | {switch} | {_cell(spec.display) or '(unset)'}"
                    f" | {_cell(spec.help)} |")
    return "\n".join(rows)


def exit_table() -> str:
    rows = ["| code | meaning |", "|---|---|"]
    rows += [f"| {int(code)} | {text} |" for code, text in EXIT_MEANINGS.items()]
    return "\n".join(rows)


def render(text: str) -> str:
    for name, table in (("settings", settings_table()), ("exit-codes", exit_table())):
        text = re.sub(rf"(<!-- {name} -->\n)(?:.*?\n)?(<!-- /{name} -->)",
                      lambda m, table=table: m.group(1) + table + "\n" + m.group(2), text,
                      flags=re.S)
    return text


if __name__ == "__main__":
    current = README.read_text()
    wanted = render(current)
    if "--check" in sys.argv:
        sys.exit(0 if current == wanted else 1)
    README.write_text(wanted)
