"""Load a page in real headless Chromium and read back what a probe script saw in the DOM."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Runs after the page has loaded: reports each section, its tables and its images, and whether
# every image really decoded (naturalWidth > 0), plus any network request the page attempted.
_PROBE = """
<script>
window.addEventListener('load', function () {
  var out = {sections: {}, resources: performance.getEntriesByType('resource').map(function (r) { return r.name; })};
  document.querySelectorAll('section').forEach(function (s) {
    var imgs = Array.prototype.map.call(s.querySelectorAll('img'), function (i) {
      return {complete: i.complete, width: i.naturalWidth, height: i.naturalHeight};
    });
    out.sections[s.id] = {title: (s.querySelector('h2') || {}).textContent || '',
                          tables: s.querySelectorAll('table').length, images: imgs,
                          text: s.innerText.slice(0, 2000)};
  });
  var pre = document.createElement('pre');
  pre.id = 'probe-result';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def probe_page(html_path: Path, workdir: Path) -> dict:
    """Open a copy of ``html_path`` with the probe appended in headless Chromium; return its findings."""
    assert CHROMIUM, "chromium is not installed"
    page = workdir / "probed.html"
    page.write_text(html_path.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"),
                    encoding="utf-8")
    profile = workdir / "chromium-profile"
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="probe-result">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"probe found nothing; chromium said: {proc.stderr[-800:]}"
    import html

    return json.loads(html.unescape(match.group(1)))


def screenshot(html_path: Path, png: Path, workdir: Path) -> Path:
    """A full-width screenshot of the page (for people, not assertions)."""
    assert CHROMIUM, "chromium is not installed"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={workdir / 'chromium-shot'}", "--window-size=1280,3000",
         f"--screenshot={png}", html_path.as_uri()],
        capture_output=True, timeout=120, check=False,
    )
    return png
