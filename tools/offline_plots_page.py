"""Write the page template that lets `dvc plots show` draw every chart with no network (issue #25).

DVC's page loads Vega, Vega-Lite and Vega-Embed from a CDN. This fetches the exact versions DVC's renderer asks
for (read from dvc_render, so they stay one fact) with `npm pack`, and inlines each package's minified browser
build, with its BSD-3-Clause notice, into DVC's own page in place of ``{scripts}``. DVC fills a template's
``{plot_divs}`` and drops the CDN tags when ``{scripts}`` is absent. `.dvc/config`'s ``plots.html_template``
points at the result. Rerun this after upgrading DVC (tests/test_plots.py says when):

    python tools/offline_plots_page.py        # needs npm and the registry; writes .dvc/plots/
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dvc_render.html import PAGE_HTML
from dvc_render.vega import VegaRenderer

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".dvc" / "plots"
PAGE = OUT / "offline.html"
CDN_SCRIPT = re.compile(r'src="https://cdn\.jsdelivr\.net/npm/([a-z-]+)@([0-9.]+)"')
LICENSE = "BSD-3-Clause"


@dataclass(frozen=True)
class Library:
    name: str
    version: str
    file: str  # the browser build inlined: the package's `jsdelivr` entry, the file the CDN serves
    sha256: str  # of the file as published, before its source-map comment is dropped
    code: str
    notice: str  # the package's LICENSE text, which BSD-3-Clause asks to travel with the code


def wanted() -> list[tuple[str, str]]:
    """(package, version) of each script DVC's Vega page loads, in its order."""
    return CDN_SCRIPT.findall(VegaRenderer.SCRIPTS)


def fetch(name: str, version: str, workdir: Path) -> Library:
    """The package's minified browser build and license, from the npm registry."""
    subprocess.run(["npm", "pack", "--silent", f"{name}@{version}"], cwd=workdir, check=True, capture_output=True)
    with tarfile.open(workdir / f"{name}-{version}.tgz") as tar:
        meta = json.load(tar.extractfile("package/package.json"))  # type: ignore[arg-type]
        if meta["license"] != LICENSE:
            raise SystemExit(f"{name}@{version} is {meta['license']}, not {LICENSE}: check before inlining it")
        raw = tar.extractfile(f"package/{meta['jsdelivr']}").read()  # type: ignore[union-attr]
        notice = tar.extractfile("package/LICENSE").read().decode()  # type: ignore[union-attr]
    code = re.sub(r"\n?//# sourceMappingURL=\S+\s*$", "", raw.decode())  # the .map is not shipped
    if "</script" in code or "<!--" in code:  # either would end or hide the inline script early
        raise SystemExit(f"{name}@{version} contains </script or <!-- and cannot be inlined as is")
    return Library(name, version, meta["jsdelivr"], hashlib.sha256(raw).hexdigest(), code, notice.strip())


def script_tag(lib: Library) -> str:
    origin = f"{lib.name}@{lib.version} {lib.file} from the npm registry, sha256 {lib.sha256}, {LICENSE}"
    return f"<!-- {origin}\n{lib.notice}\n-->\n<script>\n{lib.code}\n</script>"


def page(libs: list[Library]) -> str:
    """DVC's own page with the libraries inline where its CDN tags would go."""
    return PAGE_HTML.replace("{scripts}", "\n".join(script_tag(lib) for lib in libs))


def readme(libs: list[Library], size: int) -> str:
    rows = "\n".join(f"| {lib.name} | {lib.version} | `{lib.file}` | {LICENSE} | `{lib.sha256}` |" for lib in libs)
    return f"""# Offline page for `dvc plots show`

`offline.html` is the page template `.dvc/config` names (`plots.html_template`): DVC's own page with Vega,
Vega-Lite and Vega-Embed inlined, so the page `dvc plots show` writes draws every chart with no network. Written
by `python tools/offline_plots_page.py` ({size / 1e6:.2f} MB); do not edit it by hand.

The versions are those DVC's renderer (dvc-render) loads from the CDN; each file is the package's minified
browser build (`jsdelivr` entry of its package.json) as published on the npm registry (`npm pack NAME@VERSION`),
with only its trailing source-map comment removed. Each script is preceded by its package's LICENSE text.

| package | version | file | license | sha256 of the published file |
|---|---|---|---|---|
{rows}

Sources: https://github.com/vega/vega, https://github.com/vega/vega-lite, https://github.com/vega/vega-embed.
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        libs = [fetch(name, version, Path(tmp)) for name, version in wanted()]
    OUT.mkdir(parents=True, exist_ok=True)
    text = page(libs)
    PAGE.write_text(text, encoding="utf8")
    (OUT / "README.md").write_text(readme(libs, len(text.encode())), encoding="utf8")
    print(f"wrote {PAGE.relative_to(ROOT)}: {', '.join(f'{lib.name}@{lib.version}' for lib in libs)}")


if __name__ == "__main__":
    main()
