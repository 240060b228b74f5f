"""The HTML report (benchmark/report_html.py) in a real browser: Debian's headless Chromium driven by Selenium.

Checks what a reader sees: no console errors, every table with its headers and cells, every figure decoded,
sorting by a click on a header, the protocol in the header block and in the tooltips, notes as callouts, nothing
loaded from outside the file. A full-page screenshot goes to ``results/report_screenshot.png``.

Needs the apt packages ``chromium`` and ``chromium-driver`` (scripts/setup_system.sh installs them; nothing is
downloaded at run time): skipped without them, except in CI (``CI=true``), where their absence fails the test.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from medsynbench.benchmark.report_html import render_html
from medsynbench.benchmark.report_types import ReportFigure, ReportSection, ReportTable

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

try:  # the report engineer's store (a module-scoped fixture), to render benchmark/report.py's own output
    from tests.test_report import store as report_store  # a fixture, requested by name (report_store)

    _REPORT_STORE, _MISSING = report_store, None
except ImportError as err:
    _REPORT_STORE, _MISSING = None, err

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "results" / "report_screenshot.png"
PROTOCOL = {"extractor": "unet_encoder", "weights sha256": "a64107c331c1", "n_real": "80", "n_fake": "80"}
WARN = "fewer samples (80) than feature dimensions (128): the Fréchet distance is biased"


def _browser_binaries() -> tuple[str, str]:
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    driver = shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", browser), ("chromium-driver", driver)) if not path]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip: the dev extra)")
    if missing:
        reason = (f"headless browser test needs {', '.join(missing)} (apt: scripts/setup_system.sh installs chromium "
                  f"and chromium-driver)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    binary, chromedriver = _browser_binaries()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _figure(tmp_path: Path, name: str) -> ReportFigure:
    sizes = np.array([50, 100, 200, 400])
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=80)
    for gan, base in (("dcgan", 240.0), ("wgan_gp", 180.0)):
        mean = base * (sizes / 50) ** -0.3
        ax.errorbar(sizes, mean, yerr=0.08 * mean, marker="o", capsize=3, label=gan)
    ax.set(xscale="log", xlabel="training-set size", ylabel="fd_unet", title="FD vs training-set size")
    ax.legend()
    fig.tight_layout()
    png, svg = tmp_path / f"{name}.png", tmp_path / f"{name}.svg"
    fig.savefig(png)
    fig.savefig(svg)
    plt.close(fig)
    return ReportFigure(name=name, png=png, svg=svg, caption="fd_unet vs training-set size (mean, 95% CI over seeds)",
                        protocol={**PROTOCOL, "seeds": "0, 1, 2"})


def _sections(tmp_path: Path) -> list[ReportSection]:
    board = pd.DataFrame({
        "gan": ["wgan_gp", "dcgan", "lsgan", "stylegan2"],
        "fd_unet": [180.26, 9.5, 1200.0, float("nan")],            # numeric sort must put 9.5 first, NaN last
        "kid_unet ↓": ["0.09 ± 0.01", "0.181 ± 0.033 †", "0.25 ± 0.1", "–"],
        "n_seeds": [2, 2, 3, 0],
    })
    # the empirical study's Table 2 layout: an index of rows and two-level columns (dataset x measurement)
    columns = pd.MultiIndex.from_product([["isic_mini", "kvasir"], ["FID", "Dice"]])
    table2 = pd.DataFrame([[196.1, 0.735, 88.0, 0.81], [210.4, 0.541, 95.2, 0.77]], columns=columns,
                          index=pd.Index(["original", "original + GAN"], name="training data"))
    return [
        ReportSection(key="leaderboard", title="Leaderboard: fd_unet and kid_unet",
                      description="Ranked by fd_unet; mean ± std over seeds.",
                      tables=[ReportTable(name="board", frame=board, caption="Leaderboard of four GANs",
                                          protocol=PROTOCOL, notes=[f"† kid_unet (1 record(s) warn): {WARN}"])]),
        ReportSection(key="empirical_table2", title="Empirical study, Table 2: best-of-sweep FID and Dice",
                      tables=[ReportTable(name="table2", frame=table2, caption="Best-of-sweep FID and Dice",
                                          protocol={"model": "unet-resnet18", "seeds": "0, 1"})],
                      figures=[_figure(tmp_path, "fd_vs_size")]),
        ReportSection(key="dermatology_table2", title="Dermatology study, Table 2: classification per scenario",
                      notes=["no downstream classification records in the store: table not built"]),
    ]


def _console_errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def _open(driver, path: Path) -> None:
    driver.get_log("browser")  # drop what an earlier page logged
    driver.get(path.as_uri())
    driver.execute_script("return document.readyState")


def _screenshot(driver, *targets: Path) -> bytes:
    height = driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)")
    driver.set_window_size(1280, min(max(900, height + 20), 12000))
    png = driver.get_screenshot_as_png()
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png)
    driver.set_window_size(1280, 900)
    return png


def _check_page(driver, html_path: Path, n_tables: int, n_images: int) -> None:
    """What every report page must satisfy in the browser."""
    from selenium.webdriver.common.by import By

    _open(driver, html_path)
    assert _console_errors(driver) == []
    assert len(driver.find_elements(By.CSS_SELECTOR, "table.sortable")) == n_tables
    assert driver.execute_script("return Array.from(document.images).filter(i => i.complete && "
                                 "i.naturalWidth > 0).length") == n_images == len(driver.find_elements(By.TAG_NAME,
                                                                                                       "img"))
    # offline: every resource the page loaded is embedded (data: URIs), nothing fetched from anywhere else
    loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(name.startswith("data:") for name in loaded), loaded
    for link in driver.find_elements(By.CSS_SELECTOR, "nav.toc a"):  # the contents link to sections on the page
        target = link.get_attribute("href").split("#", 1)[1]
        assert driver.find_elements(By.ID, target), target


def test_report_in_headless_chromium(browser, tmp_path):
    from selenium.webdriver.common.by import By

    report_protocol = {"store": "results/store (11 records)", "preprocessing": "64 px, rgb, [-1, 1]",
                       "seeds": "0, 1, 2"}
    page = render_html("medsynbench report: browser test", _sections(tmp_path), tmp_path / "report.html",
                       protocol=report_protocol)
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # offline: no external URL anywhere in the page
    _check_page(browser, page, n_tables=2, n_images=1)

    # every table with its header and cell text (MultiIndex columns flattened, the index kept as a column)
    tables = browser.find_elements(By.CSS_SELECTOR, "table.sortable")
    headers = [[th.text.strip() for th in t.find_elements(By.CSS_SELECTOR, "thead th")] for t in tables]
    assert headers[0] == ["gan", "fd_unet", "kid_unet ↓", "n_seeds"]
    assert headers[1] == ["training data", "isic_mini · FID", "isic_mini · Dice", "kvasir · FID", "kvasir · Dice"]
    cells = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
             for tr in tables[1].find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert cells == [["original", "196.1", "0.735", "88", "0.81"], ["original + GAN", "210.4", "0.541", "95.2", "0.77"]]

    # sorting: a click on a header sorts numerically (9.5 before 180.26 before 1200, missing values last both ways)
    def column(i):
        return [tr.find_elements(By.TAG_NAME, "td")[i].text for tr in tables[0].find_elements(By.CSS_SELECTOR,
                                                                                             "tbody tr")]
    assert column(0)[0] == "wgan_gp"
    fd_header = tables[0].find_elements(By.CSS_SELECTOR, "thead th button")[1]
    fd_header.click()
    assert column(1) == ["9.5", "180.3", "1200", "–"] and column(0)[0] == "dcgan"
    assert tables[0].find_elements(By.TAG_NAME, "th")[1].get_attribute("aria-sort") == "ascending"
    fd_header.click()
    assert column(1) == ["1200", "180.3", "9.5", "–"] and column(0)[0] == "lsgan"
    tables[0].find_elements(By.CSS_SELECTOR, "thead th button")[2].click()  # text cells sort by their number
    assert column(2) == ["0.09 ± 0.01", "0.181 ± 0.033 †", "0.25 ± 0.1", "–"]
    tables[0].find_elements(By.CSS_SELECTOR, "thead th button")[0].click()  # text column: alphabetical
    assert column(0) == ["dcgan", "lsgan", "stylegan2", "wgan_gp"]

    # the protocol: in the header block, under the caption and as a tooltip on headers and cells
    header = browser.find_element(By.ID, "protocol").text
    assert "preprocessing" in header and "64 px, rgb, [-1, 1]" in header and "results/store (11 records)" in header
    caption = tables[0].find_element(By.XPATH, "ancestor::figure").find_element(By.TAG_NAME, "figcaption").text
    assert "weights sha256" in caption and "a64107c331c1" in caption
    th_title = tables[0].find_elements(By.TAG_NAME, "th")[1].get_attribute("title")
    assert "fd_unet" in th_title and "extractor: unet_encoder" in th_title and "n_real: 80" in th_title
    cell_title = browser.execute_script("return arguments[0].closest('[title]').title",
                                        tables[0].find_element(By.CSS_SELECTOR, "tbody td"))
    assert "weights sha256: a64107c331c1" in cell_title
    img_title = browser.find_element(By.CSS_SELECTOR, "figure.fig img").get_attribute("title")
    assert "seeds: 0, 1, 2" in img_title

    # notes: the missing table is a visible callout, the warning footnote and its marked cell are highlighted
    callouts = [c.text for c in browser.find_elements(By.CSS_SELECTOR, ".callout") if c.is_displayed()]
    assert any("no downstream classification records" in c for c in callouts)
    assert browser.find_element(By.CSS_SELECTOR, "ol.notes li.warn").text.startswith("†")
    marked = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "td.marked")]
    assert marked == ["0.181 ± 0.033 †"]
    toc = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "nav.toc a")]
    assert toc == [s.title for s in _sections(tmp_path)]

    browser.execute_script("window.scrollTo(0, 0)")
    png = _screenshot(browser, tmp_path / "report_screenshot.png", SCREENSHOT)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_console_check_sees_errors(browser, tmp_path):
    """The console check is real: a page whose script throws, or that loads a missing file, logs SEVERE."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'><title>x</title></head><body>"
                    "<img src='missing.png' alt='missing'><script>notAFunction();</script></body></html>")
    _open(browser, page)
    errors = " ".join(e["message"] for e in _console_errors(browser))
    assert "notAFunction" in errors and "missing.png" in errors


def test_leaderboard_html_in_headless_chromium(browser, tmp_path):
    """The leaderboard's HTML output (benchmark/leaderboard.py) renders without console errors, with its marks."""
    from selenium.webdriver.common.by import By

    from medsynbench.benchmark.leaderboard import write_leaderboard
    from tests.test_leaderboard import WARN as LB_WARN
    from tests.test_leaderboard import make, store

    recs = [make(s, fd, gan=g, kid=kid, warning=LB_WARN) for g, fd, kid in
            [("dcgan", 100.0, 0.05), ("wgan_gp", 80.0, 0.09)] for s in (0, 1, 2)]
    _, _, md = write_leaderboard(store(tmp_path, recs), tmp_path / "lb", ["kid_unet", "fd_unet"])
    _check_page(browser, md.with_suffix(".html"), n_tables=1, n_images=0)
    assert "percentile" not in browser.find_element(By.ID, "protocol").text
    assert "Student-t 95% CI" in browser.find_element(By.ID, "protocol").text
    cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "td.marked")]
    assert len(cells) == 2 and all(c.endswith("†") for c in cells)  # fd_unet carries the warning in both rows
    title = browser.find_element(By.CSS_SELECTOR, "th").get_attribute("title")  # both metrics: one protocol
    assert "kid_unet, fd_unet: extractor unet_encoder · weights sha256 aaaa11110000" in title and "n_real 80" in title
    _screenshot(browser, tmp_path / "leaderboard.png")


def test_built_report_in_headless_chromium(browser, request, tmp_path):
    """The report that benchmark/report.py builds (its own report.html) from the store that tests/test_report.py
    builds: every table and figure on the page, no console errors."""
    if _REPORT_STORE is None:
        pytest.skip(f"benchmark/report.py or tests/test_report.py (its `store` fixture) not there yet: {_MISSING}")
    from medsynbench.benchmark.report import build_report

    store = request.getfixturevalue("report_store")
    out = tmp_path / "report"
    sections = build_report(store["store"], out, {"experiment_name": "report-test"}, n_boot=300)
    n_tables = sum(len(s.tables) for s in sections)
    n_images = sum(1 for s in sections for f in s.figures if Path(f.png).is_file())
    assert n_tables and n_images
    _check_page(browser, out / "report.html", n_tables=n_tables, n_images=n_images)
    from selenium.webdriver.common.by import By

    captions = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "figure figcaption .cap")]
    assert captions == [x.caption for s in sections for x in [*s.tables, *s.figures]]  # tables, then figures
    _screenshot(browser, tmp_path / "built.png", REPO / "results" / "report_screenshot_built.png")
