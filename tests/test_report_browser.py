"""report.html in a real headless browser (Debian's chromium, driven by Playwright).

The browser is a real component: in CI (CI=true) a missing chromium is a
failure, not a skip — a skipped browser test is a test that never ran.
"""

import os
import shutil

import pytest

from gridwatch.config import config_from_dict
from gridwatch.pipeline import run
from gridwatch.simulate import simulate_dataset

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    data = tmp_path_factory.mktemp("sim")
    labels = simulate_dataset(data, n_meters=120, days=30, seed=4)
    out = tmp_path_factory.mktemp("out")
    cfg = config_from_dict({"data": {"timezone": labels["timezone"]},
                            "analysis": {"history_days": 30}})
    run(data, out, config=cfg)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((out / "report.html").resolve().as_uri())
        yield page, errors
        browser.close()


def _column(page, key):
    return page.evaluate(
        """key => Array.from(document.querySelectorAll('#case-table tbody tr'))
               .filter(r => !r.hidden)
               .map(r => r.children[Array.from(document.querySelectorAll('#case-table th'))
                                     .findIndex(h => h.dataset.key === key)].innerText)""",
        key,
    )


def test_report_loads_without_console_errors(report):
    page, errors = report
    assert page.title().startswith("GridWatch")
    assert errors == []


def test_every_image_decodes(report):
    page, _ = report
    images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
    assert len(images) >= 1
    assert all(done and width > 0 for done, width in images)


def test_sorting_the_case_list_by_a_numeric_column(report):
    page, _ = report
    header = page.locator("#case-table th[data-key='kw'] button")
    header.click()  # numbers sort largest first
    first = [float(v.replace(",", "")) for v in _column(page, "kw") if v.strip()]
    header.click()  # then smallest first
    second = [float(v.replace(",", "")) for v in _column(page, "kw") if v.strip()]
    assert len(first) >= 5 and len(set(first)) > 1
    assert first == sorted(first, reverse=True)
    assert second == sorted(first)


def test_flagged_only_filter(report):
    page, _ = report
    total = len(_column(page, "site"))
    page.locator("input[type=checkbox]").first.check()
    flagged = len(_column(page, "site"))
    assert 0 < flagged < total
