"""``chalice package`` without the deployment zip, for fast template checks in the tests.

``make package`` runs the real ``chalice package`` (dependency wheels for Lambda arm64 from
PyPI, then the zip). The SAM template does not depend on the zip's content, so the tests run
Chalice's own template generation and merge with the zip step replaced by an empty file:
``python -m infra.package --stage prod OUT`` writes ``OUT/sam.json`` in about a second.
It runs in its own process because Chalice imports ``app.py`` with the stage's environment
(queue names are read at import).
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path
from typing import Any

from infra.iam import PROJECT_DIR


def _empty_zip(self: Any, project_dir: str, python_version: str) -> str:
    path = Path(project_dir, ".chalice", "deployments", f"template-only-{python_version}.zip")
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w"):
        pass
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.package")
    parser.add_argument("--stage", default="prod", choices=["dev", "prod"])
    parser.add_argument("--merge-template", required=True)
    parser.add_argument("out")
    args = parser.parse_args(argv)

    from chalice.cli import main as chalice_main
    from chalice.deploy.packager import LambdaDeploymentPackager

    LambdaDeploymentPackager.create_deployment_package = _empty_zip  # type: ignore[method-assign]
    sys.argv = [
        "chalice",
        "--project-dir",
        str(PROJECT_DIR),
        "package",
        "--stage",
        args.stage,
        "--merge-template",
        args.merge_template,
        args.out,
    ]
    return int(chalice_main() or 0)


if __name__ == "__main__":
    raise SystemExit(main())
