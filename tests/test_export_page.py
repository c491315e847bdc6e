"""The export folder's index.html in a real headless Chromium: it loads model.safetensors, draws, and its canvas
equals torch's pixels within one grey level, for latents the test injects and for the page's own seeded draw.

Debian's `chromium` and `chromium-driver` only (selenium is given both paths, so Selenium Manager never downloads
a browser); without them the test skips with the line that installs them.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from exports import random_generator

from wgan.data.prepared import to_uint8
from wgan.export.folder import write_export
from wgan.images.render import make_grid
from wgan.models.conditional import ConditionalGenerator
from wgan.models.sampling import balanced_digits, draw_latents

pytestmark = pytest.mark.slow

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver"
NORM = (0.5, 0.5)
CANVAS = """const c = document.getElementById("grid");
const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data, grey = [];
for (let i = 0; i < d.length; i += 4) grey.push(d[i]);
return [c.width, c.height, grey];"""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not (CHROMIUM and DRIVER):
        pytest.skip(f"no chromium or chromedriver on PATH: `{INSTALL}` (Debian) runs the page's test")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    # Chromium leaves a socket folder in TMPDIR for good: give it one we remove (test_site.py says why in /tmp)
    scratch = tempfile.mkdtemp(prefix="chromium-")
    env = {**os.environ, "TMPDIR": scratch}
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER, env=env))
    driver.set_script_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """An HTTP server over tmp_path/export (what `python -m http.server -d models/export` does)."""
    folder = tmp_path / "export"
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_port}/index.html"
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # no access log in the test output
        pass


def _canvas(browser) -> np.ndarray:
    width, height, grey = browser.execute_script(CANVAS)
    return np.array(grey, dtype=np.int16).reshape(height, width)


def _torch_grid(generator, z: torch.Tensor, digits: torch.Tensor | None, nrow: int) -> np.ndarray:
    with torch.no_grad():
        images = to_uint8(generator(z, *(() if digits is None else (digits,))), *NORM)[:, 0].numpy()
    return make_grid(images, nrow, 2, 1).astype(np.int16)


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
def test_the_page_draws_torchs_pixels(conditional: bool, browser, served: tuple[Path, str]) -> None:
    folder, url = served
    generator = random_generator(conditional)
    write_export(generator, NORM, {"fid": 1.0}, {"evaluate": {"n_samples": 1}}, "models/generator.pt", folder)
    browser.get(url)
    loaded = browser.execute_async_script(
        "const done = arguments[0]; wgan.ready.then(() => done('ok'), e => done(String(e)))"
    )
    assert loaded == "ok"
    assert browser.find_element("id", "status").text.startswith("drew 100 digits in")  # drawn on load
    assert browser.find_element("id", "digit-label").is_displayed() == conditional

    # (1) latents injected by the test
    n = 64
    z = torch.randn(n, generator.latent_dim, generator=torch.Generator().manual_seed(1))
    digits = balanced_digits(n) if isinstance(generator, ConditionalGenerator) else None
    browser.execute_script(
        "wgan.draw(arguments[0], arguments[1], arguments[2], 8)",
        z.flatten().tolist(),
        None if digits is None else digits.tolist(),
        n,
    )
    got, want = _canvas(browser), _torch_grid(generator, z, digits, 8)
    assert got.shape == want.shape and int(np.abs(got - want).max()) <= 1
    assert len(np.unique(want)) > 50  # a grid of real variety, not a flat one that anything would match

    # (2) the page's own controls: seed and count (and a digit) give `wgan sample`'s latents, untruncated
    digit = "7" if conditional else ""
    browser.execute_script(
        "document.getElementById('seed').value = 3; document.getElementById('count').value = 37;"
        "document.getElementById('digit').value = arguments[0];"
        "wgan.drawSeed();",
        digit,
    )
    z = draw_latents((37,), generator.latent_dim, 3)
    digits = torch.full((37,), 7) if conditional else None
    got, want = _canvas(browser), _torch_grid(generator, z, digits, 10)
    assert got.shape == want.shape and int(np.abs(got - want).max()) <= 1
