"""The Snakemake report of the smoke experiment, opened in headless Chromium: every category of the
rules is in its menu, every figure loads (a broken or empty image has no natural size), and
screenshots of the menu and of each figure are kept in the test's output folder."""
import re

import pytest

import browser
from conftest import REPO, snakemake

pytestmark = pytest.mark.slow


def report_categories() -> list[str]:
    """The ``report(..., category=...)`` categories of the rules the smoke experiment runs (the
    audit card is built only by the `audit` target)."""
    return sorted({category for path in (REPO / "rules").glob("*.smk") if path.name != "audit.smk"
                   for category in re.findall(r'category="([^"]+)"', path.read_text())})


@pytest.fixture(scope="module")
def chromium():
    reason = browser.ensure_installed()
    if reason:
        pytest.skip(reason)
    driver = browser.start_chromium()
    yield driver
    driver.quit()


def test_report_shows_every_figure(smoke_run, chromium, tmp_path):
    report = tmp_path / "report.html"
    snakemake(smoke_run, "--configfile", "configs/smoke.yaml", "--report", str(report))
    categories = report_categories()
    assert {"ASA", "Audit gap", "Defenses"} <= set(categories)

    view = browser.view_report(chromium, report, categories, tmp_path / "screenshots")

    print(f"report and screenshots: {tmp_path}")
    missing = [c for c in categories if c not in view.menu]
    assert not missing, f"categories {missing} are not in the report's menu {view.menu}"
    assert view.image_results, "the report embeds no figure"
    assert sorted(view.figures) == sorted(view.image_results), "a figure is not reachable from its category"
    broken = {path: view.figures[path] for path in view.broken_figures()}
    assert not broken, f"figures that do not load in Chromium: {broken}"
    assert all(path.stat().st_size > 0 for path in view.screenshots)
    assert len(view.screenshots) == len(view.figures) + 1
