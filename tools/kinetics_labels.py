"""Regenerate co2cli/data/kinetics400_classes.txt from a torchvision wheel, without importing torchvision.

    pip download --no-deps torchvision -d /tmp/tv
    .venv/bin/python tools/kinetics_labels.py /tmp/tv/torchvision-*.whl

The wheel's torchvision/models/_meta.py holds _KINETICS400_CATEGORIES in DeepMind's logit order; we read it with
ast.literal_eval (no code from the wheel runs). tests/test_classes.py checks the order against ../shared.
"""

from __future__ import annotations

import ast
import sys
import zipfile
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "co2cli" / "data" / "kinetics400_classes.txt"


def categories_from_wheel(wheel: Path) -> list[str]:
    source = zipfile.ZipFile(wheel).read("torchvision/models/_meta.py").decode("utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_KINETICS400_CATEGORIES":
            return list(ast.literal_eval(node.value))
    raise SystemExit(f"{wheel} has no _KINETICS400_CATEGORIES")


def main() -> None:
    names = categories_from_wheel(Path(sys.argv[1]))
    if len(names) != 400:
        raise SystemExit(f"expected 400 names, got {len(names)}")
    TARGET.write_text("\n".join(names) + "\n")
    print(f"wrote {len(names)} names to {TARGET}")


if __name__ == "__main__":
    main()
