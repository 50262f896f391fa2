"""Type-check the package as it is installed: ``hybrid_search.*`` over the repository's top-level folders.

mypy names modules by their path, and the folders ``config/``, ``search/``... become ``hybrid_search.config``
and so on only through ``package-dir`` in pyproject.toml. This lays the same tree out with symbolic links
under ``build/typecheck`` (read from pyproject, so it cannot drift) and runs mypy on it.

    python .ci/typecheck.py [mypy options]
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path

from mypy import api

REPO = Path(__file__).resolve().parent.parent  # .ci/ is one level below the root


def link_tree() -> Path:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    package_dir: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    root = REPO / "build" / "typecheck"
    shutil.rmtree(root, ignore_errors=True)
    for package, folder in sorted(package_dir.items()):
        target = root.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for entry in (REPO / folder).iterdir():
            if entry.suffix in (".py", ".typed") or (entry / "__init__.py").is_file():
                link = target / entry.name
                if not link.exists():
                    os.symlink(entry, link)
    return root


def main() -> int:
    root = link_tree()
    out, err, status = api.run(
        [*sys.argv[1:], "--config-file", str(REPO / "pyproject.toml"), str(root / "hybrid_search")]
    )
    sys.stdout.write(out.replace(str(root) + "/", ""))
    sys.stderr.write(err)
    return status


if __name__ == "__main__":
    sys.exit(main())
