"""The built documentation site reads offline (#36): no page loads a script, a stylesheet, a font or an image from
the network, and the pipeline graph (a ```mermaid block) is drawn by the script the site ships, in a real browser
with the network shut off. (`make test` also builds the site with --strict: links and anchors.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"
URL_IN_CSS = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])([^'")\s]+)""")
# the attributes through which a page loads something (an <a href> is a link the reader may follow, not a load)
LOADS = {"script": ("src",), "link": ("href",), "img": ("src", "srcset"), "source": ("src", "srcset")}
LOADS |= {tag: ("src",) for tag in ("iframe", "embed", "audio", "video", "track", "input")} | {"object": ("data",)}


def mkdocs_config() -> dict:
    return yaml.load((REPO / "mkdocs.yml").read_text(encoding="utf-8"), Loader=yaml.Loader)  # it has !!python tags


def remote(url: str) -> bool:
    """Loaded from somewhere else than the site itself: any scheme but data: (file: too), or protocol-relative."""
    return url.startswith("//") or bool(re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", url)) and not url.startswith("data:")


class Loads(HTMLParser):
    """Every URL an HTML page loads by itself: its load attributes, inline styles and <style> blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in LOADS.get(tag, ()):
                self.urls += [part.split()[0] for part in value.split(",")] if name == "srcset" else [value]
            elif name == "style":
                self.urls += URL_IN_CSS.findall(value)
        self._in_style = tag == "style"

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.urls += URL_IN_CSS.findall(data)

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False


def test_the_theme_draws_mermaid_with_the_script_the_site_ships() -> None:
    """Material fetches mermaid from a CDN unless a page already has a global `mermaid` of the major it asks for."""
    material = pytest.importorskip("material")  # the theme, a dev dependency
    bundle = next((Path(material.__file__).parent / "templates/assets/javascripts").glob("bundle.*.js"))
    code = bundle.read_text(encoding="utf-8")
    assert 'typeof mermaid=="undefined"' in code, "Material no longer uses a loaded mermaid: recheck mkdocs.yml"
    asked = re.findall(r"unpkg\.com/mermaid@(\d+)/", code)
    scripts = mkdocs_config()["extra_javascript"]
    mermaid = [REPO / "docs" / s for s in scripts if "mermaid" in s]
    assert len(asked) == 1 and len(mermaid) == 1 and mermaid[0].is_file()
    shipped = re.search(r'\{version:"(\d+)\.[\d.]+[^"]*"\}', mermaid[0].read_text(encoding="utf-8"))
    assert shipped and shipped.group(1) == asked[0], f"Material asks for mermaid@{asked[0]}: ship that major"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.slow
def test_no_page_of_the_site_loads_anything_from_the_network(site: Path) -> None:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= len(mkdocs_config()["nav"])
    found: dict[str, list[str]] = {}
    for page in pages:
        parser = Loads()
        parser.feed(page.read_text(encoding="utf-8"))
        assert parser.urls, page  # the parser sees the page's scripts and stylesheets at all
        if bad := [url for url in parser.urls if remote(url)]:
            found[page.relative_to(site).as_posix()] = bad
    for sheet in sorted(site.rglob("*.css")):
        if bad := [url for url in URL_IN_CSS.findall(sheet.read_text(encoding="utf-8")) if remote(url)]:
            found[sheet.relative_to(site).as_posix()] = bad
    assert found == {}


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=f"no chromium and chromedriver; install: {INSTALL}")
def test_a_browser_with_no_network_draws_the_pipeline_graph(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Headless Chromium, every host name unresolvable, opens pipeline.html from the disk: the mermaid block
    becomes an <svg> (Material puts it in a closed shadow root; the page is made to open it before it loads)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager: never download a browser or a driver
    # Chromium leaves a socket folder in TMPDIR for good: give it one we remove. Short, in /tmp: the socket's path
    # must fit in 108 bytes, which a pytest-xdist tmp_path does not leave room for.
    scratch = tempfile.mkdtemp(prefix="chromium-")
    monkeypatch.setenv("TMPDIR", scratch)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with the driver named too, Selenium never downloads a browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600"):
        options.add_argument(arg)
    options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND")  # no network: a CDN fetch fails
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        open_shadow = "const a = Element.prototype.attachShadow;"
        open_shadow += "Element.prototype.attachShadow = function (o) { return a.call(this, {...o, mode: 'open'}); };"
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": open_shadow})
        driver.get((site / "pipeline.html").as_uri())
        drawn = "const m = document.querySelector('div.mermaid'); return !!(m && m.shadowRoot"
        drawn += " && m.shadowRoot.querySelector('svg g.node'));"
        deadline = time.monotonic() + 30
        while not driver.execute_script(drawn) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert driver.execute_script(drawn), "the graph is not drawn: the page shows its mermaid source"
        assert driver.execute_script("return document.querySelectorAll('pre.mermaid').length") == 0
    finally:
        driver.quit()
        shutil.rmtree(scratch, ignore_errors=True)
