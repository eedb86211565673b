"""A real headless Chromium looking at a report: what a reader's browser renders, not what the HTML string says.

Chromium (Debian's `chromium` package) is driven over the Chrome DevTools Protocol on a pipe
(`--remote-debugging-pipe`: JSON messages ending in NUL on file descriptors 3 and 4), so no port is opened and
the page is loaded unchanged. Every lookup of a host name is refused (`--host-resolver-rules`) and Chromium's
background services are off: the browser reaches nothing but the file it is given.

Also a script: `python -m tests.dashboards.browser REPORT.html OUT_DIR` writes the two report screenshots of docs/.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
QUIET = [
    "--headless",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-pings",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--hide-scrollbars",
    "--mute-audio",
]

# What the test asks of the page, evaluated inside it once it has loaded (images are data: URLs, decoded by then).
CHECKS = """(async () => {
  await Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)));
  const sections = Array.from(document.querySelectorAll('h2')).map(h => {
    let text = '', images = 0;
    for (let n = h.nextElementSibling; n && n.tagName !== 'H2'; n = n.nextElementSibling) {
      text += n.innerText.trim(); images += n.tagName === 'IMG' ? 1 : n.querySelectorAll('img').length;
    }
    return {title: h.innerText.trim(), text: text.length, images: images, top: h.getBoundingClientRect().top + scrollY};
  });
  return {
    title: document.title, h1: (document.querySelector('h1') || {}).innerText || '',
    height: document.documentElement.scrollHeight, width: document.documentElement.scrollWidth,
    images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth,
                                                  height: i.naturalHeight, shown: i.getBoundingClientRect().width})),
    sections: sections,
  };
})()"""


def find_chromium() -> str | None:
    """Path of a Chromium or Chrome on PATH, or None."""
    return next((path for name in NAMES if (path := shutil.which(name))), None)


class Browser:
    """One headless Chromium with one page, spoken to over the DevTools pipe; stopped by its pid."""

    def __init__(self, executable: str, width: int = 1100, height: int = 900, timeout: float = 60) -> None:
        self.timeout, self._id, self._buffer = timeout, 0, b""
        self._profile = tempfile.mkdtemp(prefix="report-browser-")
        to_chrome, self._out = os.pipe()
        self._in, from_chrome = os.pipe()
        args = [
            executable,
            *QUIET,
            "--remote-debugging-pipe",
            f"--user-data-dir={self._profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to start its sandbox as root

        def pipes() -> None:
            """In the child: Chromium reads fd 3 and writes fd 4 (both moved aside first, so they cannot clash)."""
            read, write = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chrome, from_chrome))
            os.dup2(read, 3)
            os.dup2(write, 4)

        # close_fds=False keeps the 3 and 4 made here; the parent's own descriptors are close-on-exec anyway.
        self._log = Path(self._profile) / "chromium.log"  # a file, not a pipe nobody reads until the end
        with self._log.open("wb") as log:
            self.proc = subprocess.Popen(args, preexec_fn=pipes, close_fds=False, stdout=log, stderr=log)
        os.close(to_chrome)
        os.close(from_chrome)
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable", session=True)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=True,
        )

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._in], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self._in, 1 << 20) if ready else b""
            if not chunk:
                log = self._log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"Chromium did not answer within {self.timeout} s; its log ends:\n{log}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: bool = False) -> dict[str, Any]:
        """Send one DevTools command and wait for its answer (events on the way are dropped)."""
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._message(deadline)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def open(self, page: Path) -> None:
        """Load a file and wait for its load event (all images of the page fetched)."""
        self.call("Page.navigate", {"url": page.resolve().as_uri()}, session=True)
        deadline = time.monotonic() + self.timeout
        while True:
            event = self._message(deadline)
            if event.get("method") == "Page.loadEventFired" and event.get("sessionId") == self.session:
                return

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"the page's script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, top: float, height: float, width: float = 1100) -> Path:
        """A PNG of the page from `top` down, `height` CSS pixels high (beyond the window if need be)."""
        import base64

        clip = {"x": 0, "y": top, "width": width, "height": height, "scale": 1}
        shot = self.call(
            "Page.captureScreenshot",
            {"format": "png", "clip": clip, "captureBeyondViewport": True},
            session=True,
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        """Stop Chromium (by its pid) and remove its profile."""
        for fd in (self._out, self._in):
            os.close(fd)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def inspect_report(page: Path, executable: str) -> dict[str, Any]:
    """What Chromium rendered of `page`: title, size, every image's natural size, each section's content."""
    with Browser(executable) as browser:
        browser.open(page)
        return browser.evaluate(CHECKS)


def screenshots(page: Path, out: Path, executable: str, width: int = 1100) -> list[Path]:
    """Two PNGs `width` px wide: the report from its top to the baseline (the winner in detail included), and
    from its figures to the end of the held-out test (at most 3600 px each)."""
    out.mkdir(parents=True, exist_ok=True)
    with Browser(executable, width=width) as browser:
        browser.open(page)
        seen = browser.evaluate(CHECKS)
        tops = [s["top"] for s in seen["sections"]] + [seen["height"] + 16]
        where = {s["title"]: s["top"] for s in seen["sections"]}
        first = min(where.get("Baseline on the same folds", 1416), 3616) - 16
        start = max(0, where.get("Figures", seen["height"] / 2) - 16)
        end = min(next(t for t in tops if t > where.get("Held-out test", seen["height"])) - 16, start + 3600)
        return [
            browser.screenshot(out / "report-top.png", 0, first, width),
            browser.screenshot(out / "report-figures.png", start, end - start, width),
        ]


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m tests.dashboards.browser REPORT.html OUT_DIR")
    found = find_chromium()
    if found is None:
        sys.exit("no Chromium found (Debian: apt-get install chromium)")
    for shot in screenshots(Path(sys.argv[1]), Path(sys.argv[2]), found):
        print(shot)
