"""The report's HTML in a real headless Chromium: it renders, every image loads, no script error,
and its first screen (a screenshot) holds the lengthening summary."""

import json
import re
import subprocess
from pathlib import Path

from selflengthen.orchestration.reporting import build_report, publish_report
from tests.fixtures.browser import chromium_command
from tests.orchestration.helpers import run_config
from tests.orchestration.test_reporting import finished_run

BROWSER_TIMEOUT_S = 120
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Runs first in the page: records script errors, then on load writes what it saw into the DOM.
PROBE = """<script>
window.probeErrors = [];
window.addEventListener('error', event => window.probeErrors.push(String(event.message || event.type)), true);
window.addEventListener('load', () => {
  const images = [...document.images].map(image => ({alt: image.alt, complete: image.complete, width: image.naturalWidth}));
  const probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({images, errors: window.probeErrors, first: document.querySelector('h2').textContent});
  document.body.appendChild(probe);
});
</script>"""


def run_chromium(chromium: Path, tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    return subprocess.run(chromium_command(chromium, profile, *arguments), capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=False)


def test_report_renders_in_chromium_with_every_image_and_the_summary_first(chromium_bin: Path, tmp_path: Path) -> None:
    config = run_config(str(tmp_path / "runs"))
    finished_run(config)
    page = Path(publish_report(config, build_report(config))).parent / "report.html"
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")

    dom = run_chromium(chromium_bin, tmp_path, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    assert dom.returncode == 0, dom.stderr
    match = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert match, dom.stdout[-2000:]
    seen = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    assert seen["errors"] == []
    assert [image["alt"] for image in seen["images"]] == ["held-out answer length per iteration", "lengths, iteration 1", "lengths, iteration 2"]
    assert all(image["complete"] and image["width"] > 0 for image in seen["images"]), seen["images"]
    assert seen["first"] == "Answer length across iterations"

    screenshot = tmp_path / "first-screen.png"
    shot = run_chromium(chromium_bin, tmp_path, "--window-size=1280,900", f"--screenshot={screenshot}", page.as_uri())
    assert shot.returncode == 0, shot.stderr
    assert screenshot.read_bytes().startswith(PNG_SIGNATURE) and screenshot.stat().st_size > 10_000
