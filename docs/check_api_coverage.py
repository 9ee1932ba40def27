"""Check that every public name of the package is documented in the built API pages.

Usage: ``python docs/check_api_coverage.py SITE_DIR`` after ``mkdocs build``. A public name is
an entry of the ``__all__`` of ``manifoldfm`` or of one of its public submodules (modules
whose dotted path has no part starting with ``_``); it counts as documented when the HTML of
the API pages has an anchor whose last dotted part is that name (mkdocstrings gives every
rendered object such an ``id``). Exit status 1 lists the missing names.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path


def public_names() -> dict[str, str]:
    import manifoldfm

    names: dict[str, str] = {}
    modules = ["manifoldfm"] + [
        m.name
        for m in pkgutil.walk_packages(manifoldfm.__path__, "manifoldfm.")
        if not any(part.startswith("_") for part in m.name.split("."))
    ]
    for modname in modules:
        module = importlib.import_module(modname)
        for name in getattr(module, "__all__", []):
            if name.startswith("_") or inspect.ismodule(getattr(module, name)):
                continue
            names.setdefault(name, f"{modname}.{name}")
    return names


def main(site: str) -> int:
    pages = list((Path(site) / "api").rglob("*.html"))
    if not pages:
        print(f"no API pages under {site}/api: build the docs first")
        return 2
    html = "\n".join(p.read_text(encoding="utf-8") for p in pages)
    anchors = {a.rsplit(".", 1)[-1] for a in re.findall(r'id="([\w.]+)"', html)}
    missing = sorted(full for name, full in public_names().items() if name not in anchors)
    if missing:
        print("public names missing from the API pages:\n  " + "\n  ".join(missing))
        return 1
    print(f"all {len(public_names())} public names appear in the API pages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "site"))
