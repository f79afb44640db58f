"""Screenshot a touchpoint HTML report in headless Chromium, to check that people can read it.

Usage::

    python bench/report_screenshot.py REPORT.html [--out REPORT.png] [--width 1400]
        [--height 5000 | --full-page] [--chromium /usr/bin/chromium]

Chromium runs with no network services (no sync, component updates or background
networking) and a throw-away profile; the report is self-contained, so nothing should be
fetched.  ``--height`` is the viewport height: a report longer than it is cut off, so
``--full-page`` measures the page first and screenshots all of it (two Chromium runs).

Exits with status 2 and a one-line message when Chromium is not installed
(``apt-get install -y chromium`` on Debian/Ubuntu).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def find_chromium(explicit: str | None) -> str | None:
    for name in (explicit,) if explicit else CANDIDATES:
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def _run(
    chromium: str, extra: list[str], url: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="touchpoint-chromium-") as profile:
        return subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={profile}", *extra, url],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def page_height(chromium: str, report: Path, width: int, timeout: float) -> int | None:
    """The page's height in CSS pixels at ``width``, or None when it cannot be measured.

    A copy of the report with a one-line script that writes ``scrollHeight`` into the DOM
    is rendered with ``--dump-dom`` (the report itself has no script and is not changed).
    """
    probe = (
        "<script>window.addEventListener('load',()=>{document.body.setAttribute("
        "'data-page-height',document.documentElement.scrollHeight)})</script>"
    )
    text = report.read_text(encoding="utf-8")
    text = text.replace("</body>", probe + "</body>", 1)
    with tempfile.TemporaryDirectory(prefix="touchpoint-probe-") as tmp:
        copy = Path(tmp) / "probe.html"
        copy.write_text(text, encoding="utf-8")
        done = _run(
            chromium,
            [f"--window-size={width},1000", "--virtual-time-budget=5000", "--dump-dom"],
            copy.as_uri(),
            timeout,
        )
    found = re.search(r'data-page-height="(\d+)"', done.stdout or "")
    return int(found.group(1)) if found else None


def screenshot(
    report: Path, out: Path, *, width: int, height: int, chromium: str, timeout: float
) -> Path:
    url = report.resolve().as_uri()
    done = _run(
        chromium,
        [f"--screenshot={out.resolve()}", f"--window-size={width},{height}"],
        url,
        timeout,
    )
    if not out.is_file():
        tail = " ".join((done.stderr or "").split())[-400:]
        raise RuntimeError(f"Chromium wrote no screenshot (exit {done.returncode}): {tail}")
    return out


def network_references(html: str) -> list[str]:
    """``src``/``href`` values that would fetch from the network (should be none)."""
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    return [r for r in refs if re.match(r"^(https?:)?//", r)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="the report HTML file")
    parser.add_argument("--out", type=Path, help="PNG to write (default: next to the report)")
    parser.add_argument("--width", type=int, default=1400, help="window width (default 1400)")
    parser.add_argument("--height", type=int, default=5000, help="window height (default 5000)")
    parser.add_argument(
        "--full-page", action="store_true", help="measure the page and capture all of it"
    )
    parser.add_argument("--chromium", help="Chromium executable (default: search the PATH)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    args = parser.parse_args(argv)

    if not args.report.is_file():
        print(f"{args.report}: no such file", file=sys.stderr)
        return 2
    chromium = find_chromium(args.chromium)
    if chromium is None:
        looked = args.chromium or ", ".join(CANDIDATES)
        print(
            f"Chromium not found (looked for {looked}); install it with "
            "`apt-get install -y chromium` or pass --chromium PATH",
            file=sys.stderr,
        )
        return 2
    refs = network_references(args.report.read_text(encoding="utf-8"))
    if refs:
        print(f"warning: the report references the network: {refs[:5]}", file=sys.stderr)
    out = args.out or args.report.with_suffix(".png")
    height = args.height
    if args.full_page:
        measured = page_height(chromium, args.report, args.width, args.timeout)
        if measured is None:
            print(f"could not measure the page; using --height {height}", file=sys.stderr)
        else:
            height = measured
    screenshot(
        args.report, out, width=args.width, height=height, chromium=chromium, timeout=args.timeout
    )
    print(f"{out} ({args.width}x{height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
