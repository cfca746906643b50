"""report.html in a real browser: headless Chromium opens it from disk, takes a screenshot
and dumps the DOM. Needs a ``chromium`` binary (Debian's package; ``.ci/run`` installs
it); skipped with a reason without one."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
from conftest import CRAFTED_RUN_NAME
from PIL import Image

pytestmark = pytest.mark.browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM = next((found for name in BROWSERS if (found := shutil.which(name))), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# Added to a copy of the page for the test only (the report itself has no script, and its
# Content-Security-Policy would refuse this one, so the copy drops it): counts alert()
# calls and records every image's natural size in the DOM that --dump-dom prints.
PROBE = """<script>
window.__alerts = 0;
window.alert = function () { window.__alerts += 1; };
window.addEventListener("load", function () {
  var sizes = Array.prototype.map.call(document.images, function (img) {
    return [img.naturalWidth, img.naturalHeight];
  });
  document.body.setAttribute("data-images", JSON.stringify(sizes));
  document.body.setAttribute("data-alerts", String(window.__alerts));
  document.body.setAttribute("data-scripts", String(document.scripts.length));
});
</script>"""


def chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="mtlkit-chromium-") as profile:
        return subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def test_report_renders_in_headless_chromium(reported_run, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("MTLKIT_REQUIRE_BROWSER"):  # CI installs it: missing is a failure
            pytest.fail("MTLKIT_REQUIRE_BROWSER is set but no chromium binary was found")
        pytest.skip("no chromium binary (Debian: apt-get install chromium)")
    page = (reported_run / "report.html").read_text(encoding="utf-8")
    assert 'http-equiv="Content-Security-Policy"' in page
    probed = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)
    probed = probed.replace("<head>", "<head>" + PROBE, 1)
    probe_file = tmp_path / "probed.html"
    probe_file.write_text(probed, encoding="utf-8")

    screenshot = tmp_path / "report.png"
    shot = chromium(
        "--window-size=1200,1800",
        "--hide-scrollbars",
        f"--screenshot={screenshot}",
        (reported_run / "report.html").as_uri(),
    )
    assert screenshot.is_file(), shot.stderr[-2000:]
    pixels = np.asarray(Image.open(screenshot).convert("RGB"))
    colours = np.unique(pixels.reshape(-1, 3) // 16, axis=0)
    assert len(colours) > 20, "the screenshot is (nearly) blank"

    dumped = chromium("--virtual-time-budget=5000", "--dump-dom", probe_file.as_uri())
    dom = dumped.stdout
    assert "<title>" in dom, dumped.stderr[-2000:]
    title = re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    assert title.startswith("&lt;/title&gt;&lt;script&gt;alert(1)")
    assert CRAFTED_RUN_NAME not in dom
    body = re.search(r"<body([^>]*)>", dom).group(1)
    sizes = json.loads(re.search(r'data-images="([^"]*)"', body).group(1).replace("&quot;", '"'))
    expected = len(re.findall(r"<img ", page))
    assert len(sizes) == expected > 5
    assert all(w > 0 and h > 0 for w, h in sizes), sizes
    assert re.search(r'data-alerts="0"', body), "a script ran from the page's data"
    assert re.search(r'data-scripts="1"', body)  # only the probe
    assert "<table>" in dom and "<th>AUC</th>" in dom  # the metrics table
