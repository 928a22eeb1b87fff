"""report.html and compare.html in a real browser: Debian's chromium, headless, driven by chromedriver
(selenium). Any console error fails; a selected row's markup must stay text; screenshots are saved.

Chromium is installed by `make test` (the Makefile's `browser` target); run directly, this module
installs it with apt-get when it is missing and it can (as root), and skips otherwise.
SELECTRAY_SCREENSHOT=PATH also saves the report's screenshot there (docs/report.png is made so).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

BINARIES = ("chromium", "chromedriver")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1280,1600")


def _ensure_chromium() -> None:
    if all(shutil.which(b) for b in BINARIES):
        return
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip("chromium/chromedriver missing and apt-get is unavailable (or not root): run `make browser`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], check=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def browser():
    """A headless chromium with a fresh profile that records the console."""
    _ensure_chromium()
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="selectray-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        yield driver
    finally:
        driver.quit()  # ends the chromedriver and chromium processes it started
        shutil.rmtree(profile, ignore_errors=True)


@contextmanager
def _page(driver, path: Path):
    """Open a file; yields the console errors logged while loading it (checked after the block too)."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(path.resolve().as_uri())
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    yield errors
    errors += [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def _screenshot(driver, path: Path) -> None:
    assert driver.save_screenshot(str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(data[16:20], "big") >= 1000  # a real, wide image


def test_the_harness_sees_console_errors(browser, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><meta charset=utf-8><link rel=icon href='data:,'><title>x</title>"
                    "<script>console.error('logged-error'); throw new Error('thrown-error');</script>")
    browser.get_log("browser")
    browser.get(page.as_uri())
    messages = " ".join(e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE")
    assert "logged-error" in messages and "thrown-error" in messages


def test_report_and_compare_pages_in_chromium(browser, report_runs, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException

    from selectray.cli import main

    report = report_runs["length"] / "report.html"
    with _page(browser, report) as errors:
        assert not errors
        assert browser.title == "selectray report: length"
        assert browser.execute_script("return document.scripts.length") == 1  # the row's <script> is text
        assert "<script>alert(1)</script>" in browser.find_element("id", "selected").text
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 - nothing ran alert()
        details = browser.execute_script("return document.querySelectorAll('#selected details').length")
        browser.find_element("css selector", "#selected button[data-open='1']").click()
        assert browser.execute_script("return document.querySelectorAll('#selected details[open]').length") == details > 0
        images = browser.execute_script("return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        assert images and all(images)
        browser.execute_script("window.scrollTo(0, 0)")
        _screenshot(browser, tmp_path / "report.png")
    if os.environ.get("SELECTRAY_SCREENSHOT"):
        shutil.copyfile(tmp_path / "report.png", os.environ["SELECTRAY_SCREENSHOT"])

    assert main(["report", str(report_runs["length"]), "--compare", str(report_runs["kcenter"]), "--output", str(tmp_path)]) == 0
    with _page(browser, tmp_path / "compare.html") as errors:
        assert not errors
        assert browser.title == "selectray comparison"
        assert browser.execute_script("return document.scripts.length") == 1
        assert "chosen by both" in browser.find_element("id", "overlap").text
        _screenshot(browser, tmp_path / "compare.png")
