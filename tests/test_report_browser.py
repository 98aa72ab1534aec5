"""The report of a small real run (600 digits, EfficientNet-Lite0, K-Means) opened from
disk by headless Chromium (Debian's `chromium`; .ci/run installs it) with every request
sent to a local proxy that only records it: the page draws, holds K cluster sections
with their thumbnails, and asks the network for nothing an empty page does not."""
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import numpy as np
import pytest
from PIL import Image

from seal_fast import pipeline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# without a browser a developer's run skips; CI installs one, so there it is a failure
pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                reason="needs Debian's chromium (apt-get install chromium)")


class RecordingProxy:
    """A proxy on the loopback that answers nothing and records each request's first line."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.requests: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.getsockname()[1]

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.requests.append(conn.recv(512).decode("latin-1").split("\r\n")[0])
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        self.thread.join()
        self.server.close()


def _hosts(requests) -> set[str]:
    out = set()
    for line in requests:
        parts = line.split()
        if len(parts) >= 2:
            out.add(re.sub(r"^[a-z]+://", "", parts[1]).split("/")[0].split(":")[0])
    return out


def open_in_browser(page, tmp_path, name):
    """(screenshot as an array, the DOM after load, the hosts the browser asked for)."""
    assert CHROMIUM, "chromium is not installed"
    proxy = RecordingProxy()
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / (name + '-profile')}",
             f"--proxy-server=http://127.0.0.1:{proxy.port}", "--proxy-bypass-list=<-loopback>"]
    try:
        shot = tmp_path / f"{name}.png"
        subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri()],
                       capture_output=True, timeout=120, check=True)
        dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                             check=True).stdout
        time.sleep(0.5)
    finally:
        proxy.close()
    return np.asarray(Image.open(shot).convert("L")), dom, _hosts(proxy.requests)


@pytest.fixture(scope="module")
def browser_baseline(tmp_path_factory):
    """The hosts the browser contacts on its own (updates, time) for a page that asks for nothing."""
    tmp = tmp_path_factory.mktemp("blank")
    page = tmp / "blank.html"
    page.write_text("<!DOCTYPE html><html><body><p>blank</p></body></html>")
    return open_in_browser(page, tmp, "blank")[2]


def test_the_request_check_can_fail(tmp_path, browser_baseline):
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://report-leak.invalid/x.png"></body></html>')
    hosts = open_in_browser(page, tmp_path, "leaky")[2]
    assert "report-leak.invalid" in hosts - browser_baseline


def test_report_of_digits_opens_offline_in_a_browser(tmp_path, digits_store, browser_baseline):
    run = pipeline.cluster(digits_store, "kmeans", 10, seed=0)
    pipeline.save_run(run, tmp_path / "km.npy")
    page = tmp_path / "report.html"
    pipeline.report(tmp_path / "km.npy", digits_store.path, page, progress=False)

    pixels, dom, hosts = open_in_browser(page, tmp_path, "report")
    assert hosts - browser_baseline == set()
    # drawn: not one colour, with dark text and thumbnails on the white page
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.01
    sections = re.findall(r'<details class="cluster" id="c(\d+)"[^>]*>(.*?)</details>', dom, flags=re.S)
    assert sorted(int(c) for c, _ in sections) == list(range(10))
    for _, body in sections:
        assert len(re.findall(r'<img src="data:image/png;base64,', body)) >= 2
    assert "Confusion matrix" in dom and "ACC" in dom
