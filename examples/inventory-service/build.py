"""Builds dist/inventory.pyz, a single-file zip application of the inventory package.

Every module is compiled first, so a syntax error fails the build. Entries carry a fixed
timestamp, so the same sources always give the same artifact. Run from the repository root:
`python3 build.py`, then `python3 dist/inventory.pyz`.
"""

import compileall
import pathlib
import sys
import zipfile

PACKAGE = pathlib.Path("inventory")
ARTIFACT = pathlib.Path("dist") / "inventory.pyz"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
MAIN = "from inventory.server import main\n\nmain()\n"


def add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    entry = zipfile.ZipInfo(name, FIXED_TIME)
    entry.compress_type = zipfile.ZIP_DEFLATED
    entry.external_attr = 0o644 << 16
    archive.writestr(entry, data)


def build() -> int:
    if not compileall.compile_dir(str(PACKAGE), quiet=1):
        print("build: the package does not compile", file=sys.stderr)
        return 1
    ARTIFACT.parent.mkdir(exist_ok=True)
    staging = ARTIFACT.with_suffix(".pyz.tmp")
    with zipfile.ZipFile(staging, "w") as archive:
        add(archive, "__main__.py", MAIN.encode())
        for module in sorted(PACKAGE.rglob("*.py")):
            add(archive, module.as_posix(), module.read_bytes())
    staging.replace(ARTIFACT)
    print(f"build: wrote {ARTIFACT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(build())
