"""Headless Chromium for the tests (Debian's chromium and chromium-driver, installed by the test
set-up as tests/slurm/cluster.py installs SLURM), driven by selenium through the Snakemake report
as a reader would: the report is a single-page app, so each category is opened from its menu and
each result in it viewed with its eye button; the browser's own decoding says whether a figure loads.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from debian import ensure_debian_packages

PACKAGES = ["chromium", "chromium-driver"]
COMMANDS = ["chromium", "chromedriver"]
WAIT_SECONDS = 60  # the report is an 11 MB page of inlined figures; parsing it takes seconds


def ensure_installed() -> str | None:
    """Install Debian's chromium and chromium-driver if missing; return a reason string when impossible."""
    return ensure_debian_packages(PACKAGES, COMMANDS)


def start_chromium(width: int = 1400, height: int = 1000):
    """A headless Chromium under selenium. Both paths are given, so selenium never looks for (or
    downloads) a browser or driver of its own."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)


@dataclass
class ShownFigure:
    width: int                # natural size: 0 x 0 where the browser could not decode the image
    height: int
    last_row_painted: bool    # False where the file was cut short (see SHOWN_FIGURE)

    @property
    def loads(self) -> bool:
        return self.width > 0 and self.height > 0 and self.last_row_painted


@dataclass
class ReportView:
    menu: list[str]                    # the labels of the report's menu links
    image_results: list[str]           # every image the report embeds (its result paths)
    figures: dict[str, ShownFigure] = field(default_factory=dict)  # result path -> as shown
    screenshots: list[Path] = field(default_factory=list)

    def broken_figures(self) -> list[str]:
        return sorted(path for path, figure in self.figures.items() if not figure.loads)


# The image the app shows for the selected result (once it is not the one shown before, the
# argument), when the browser has finished with it.
# `complete` is also true for an image that failed to decode (its natural size is then 0 x 0)
# and for a truncated PNG, which keeps the size of its header: Chromium paints the rows it got and
# leaves the rest transparent, while the figures have an opaque background (matplotlib's white).
SHOWN_FIGURE = """
const path = app.state.resultPath;
if (!path || path === arguments[0] || !results[path]) return null;
const image = [...document.querySelectorAll('img')].find(i => i.getAttribute('src') === results[path].data_uri);
if (!image || !image.complete) return null;
let lastRowPainted = false;
if (image.naturalWidth > 0 && image.naturalHeight > 0) {
    const canvas = document.createElement('canvas');
    canvas.width = image.naturalWidth;
    canvas.height = 1;
    const context = canvas.getContext('2d');
    context.drawImage(image, 0, image.naturalHeight - 1, image.naturalWidth, 1, 0, 0, image.naturalWidth, 1);
    const pixels = context.getImageData(0, 0, canvas.width, 1).data;
    lastRowPainted = pixels.some((value, index) => index % 4 === 3 && value > 0);
}
return [path, image.naturalWidth, image.naturalHeight, lastRowPainted];
"""


def view_report(driver, report: Path, categories: list[str], screenshots: Path) -> ReportView:
    """Open ``report``, then every figure of each of ``categories`` through the menu; a screenshot
    of the menu and of each figure goes to ``screenshots``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    wait = WebDriverWait(driver, WAIT_SECONDS)
    url = Path(report).resolve().as_uri()

    def open_menu() -> None:
        driver.get(url)
        wait.until(lambda d: d.find_elements(By.XPATH, "//a[normalize-space(.)='Workflow']"))

    def click(label: str) -> None:
        driver.find_element(By.XPATH, f"//a[normalize-space(.)='{label}']").click()

    def view_results(view: ReportView) -> None:
        wait.until(lambda d: d.execute_script("return app.state.navbarMode") == "subcategory")
        path = None
        for row in range(len(driver.find_elements(By.CSS_SELECTOR, "table tbody tr"))):
            # re-found each time: React renders the table anew after every click
            eye_button = driver.find_elements(By.CSS_SELECTOR, "table tbody tr")[row].find_element(
                By.CSS_SELECTOR, "td:last-child a")
            eye_button.click()
            path, width, height, last_row_painted = wait.until(lambda d: d.execute_script(SHOWN_FIGURE, path))
            view.figures[path] = ShownFigure(width, height, last_row_painted)
            screenshot = screenshots / f"figure_{len(view.figures):02d}_{Path(path).stem}.png"
            driver.save_screenshot(str(screenshot))
            view.screenshots.append(screenshot)

    screenshots.mkdir(parents=True, exist_ok=True)
    open_menu()
    view = ReportView(menu=[link.text.strip() for link in driver.find_elements(By.TAG_NAME, "a") if link.text.strip()],
                      image_results=driver.execute_script(
                          "return Object.keys(results).filter(p => results[p].mime_type.startsWith('image/'))"))
    driver.save_screenshot(str(screenshots / "menu.png"))
    view.screenshots.append(screenshots / "menu.png")
    for category in (c for c in categories if c in view.menu):
        open_menu()
        click(category)
        subcategories = driver.execute_script("return Object.keys(categories[arguments[0]]).sort()", category)
        if len(subcategories) == 1:  # the app goes straight to the results of a lone subcategory
            view_results(view)
            continue
        for subcategory in subcategories:
            open_menu()
            click(category)
            wait.until(lambda d: d.execute_script("return app.state.navbarMode") == "category")
            click(subcategory)
            view_results(view)
    return view
