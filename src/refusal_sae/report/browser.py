"""Open a report in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by selenium): wait until
every figure has drawn, read the console, take a screenshot. Used by the report's browser test and
``scripts/report_screenshot.py``; selenium is a test extra."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")

# figures whose plot SVG holds drawn elements (an empty or failed plot has none)
_OVERFLOWING = ("return Array.from(document.querySelectorAll('.plotly-graph-div')).filter(d => "
                "d.querySelector('svg.main-svg') && d.querySelector('svg.main-svg').getBoundingClientRect().width > "
                "d.parentElement.clientWidth + 2).length")
_DRAWN = ("return Array.from(document.querySelectorAll('.plotly-graph-div')).filter(d => "
          "d.querySelector('svg.main-svg') && d.querySelectorAll('svg.main-svg *').length > 10).length")


@dataclass
class BrowserCheck:
    figures: int  # figure divs in the page
    drawn: int  # of them with a non-empty SVG
    errors: list[dict]  # console messages of level SEVERE
    height: int  # the page's full height in CSS pixels
    overflowing: int = 0  # figures drawn wider than their column


def browser_missing() -> str | None:
    """Why the browser check cannot run here, or ``None``."""
    if not CHROMIUM.is_file() or not CHROMEDRIVER.is_file():
        return "headless Chromium is not installed (apt-get install chromium chromium-driver; .ci/run does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def check_in_browser(page: str | Path, screenshot: str | Path | None = None, width: int = 1400,
                     height: int | None = None, timeout: float = 60.0, section: str | None = None) -> BrowserCheck:
    """Load ``page``, wait for its figures, screenshot ``width`` × ``height`` CSS pixels from the top (default: the
    whole page), or the whole ``<section id=section>``."""
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={width},1000",
              "--hide-scrollbars", "--force-device-scale-factor=1"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        driver.get(Path(page).resolve().as_uri())
        n = driver.execute_script("return document.querySelectorAll('.plotly-graph-div').length")

        def settle() -> None:
            try:  # every figure drawn, and sized to its column once the page had loaded (the page sets data-sized)
                WebDriverWait(driver, timeout).until(
                    lambda d: d.execute_script(_DRAWN) == n and d.execute_script("return document.body.dataset.sized") == "1")
            except TimeoutException:
                pass  # reported through `drawn` / `overflowing`

        settle()
        overflowing = driver.execute_script(_OVERFLOWING)  # before any window resize re-fits them
        full = int(driver.execute_script("return document.documentElement.scrollHeight"))
        if screenshot is not None and section is not None:
            driver.set_window_size(width, full)  # every figure laid out at its final size, then the section alone
            settle()
            driver.find_element("id", section).screenshot(str(screenshot))
        elif screenshot is not None:
            driver.set_window_size(width, min(full, height) if height else full)
            driver.execute_script("window.scrollTo(0, 0)")
            settle()
            driver.save_screenshot(str(screenshot))
        drawn = driver.execute_script(_DRAWN)
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        return BrowserCheck(n, drawn, errors, full, overflowing)
    finally:
        driver.quit()
