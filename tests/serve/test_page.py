"""The web page at GET /, driven in a real headless Chromium (Selenium + Debian's chromium and chromedriver).

The browser is the system one (``.ci/run`` installs ``chromium chromium-driver`` with apt); nothing is downloaded
at run time. Without it the tests are skipped, unless ``ZSAD_REQUIRE_BROWSER=1`` (set by CI) makes that an error.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import time

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from serve.conftest import IMAGES, running

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        message = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("ZSAD_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.downloads = downloads
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser, detector):
    with running(detector) as (_app, client):
        browser.get(str(client.base_url) + "/")
        WebDriverWait(browser, 60).until(EC.text_to_be_present_in_element((By.ID, "model-status"), "Model ready"))
        yield browser


def _upload(driver, *paths):
    driver.find_element(By.ID, "file-input").send_keys("\n".join(str(p) for p in paths))


def _cards(driver):
    return driver.find_elements(By.CSS_SELECTOR, "#results .result")


def _wait_all_finished(driver, count, timeout=60):
    WebDriverWait(driver, timeout).until(
        lambda d: len(_cards(d)) == count and all(c.get_attribute("data-state") in ("done", "error") for c in _cards(d))
    )
    return _cards(driver)


def _set_threshold(driver, value):
    driver.execute_script(
        "const s = document.getElementById('threshold'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('input'));", str(value))


def test_upload_shows_score_overlay_threshold_marks_and_csv(page, detector):
    page.find_element(By.ID, "clear").click()
    name_field = page.find_element(By.ID, "class-name")
    name_field.clear()
    name_field.send_keys("metal nut")
    _upload(page, IMAGES[0], IMAGES[3])  # 256 x 320 grayscale, 210 x 280 RGB
    cards = _wait_all_finished(page, 2)
    for card, path in zip(cards, (IMAGES[0], IMAGES[3])):
        assert card.get_attribute("data-state") == "done", card.text
        expected = detector.predict(path, class_name="metal nut")
        assert float(card.get_attribute("data-score")) == pytest.approx(expected.pred_score, rel=1e-6)
        assert card.find_element(By.CLASS_NAME, "score").text == f"S5 {expected.pred_score:.4f}"
        view = card.find_element(By.CSS_SELECTOR, "img.view.overlay")
        assert view.get_attribute("src").startswith("data:image/png;base64,")
        WebDriverWait(page, 10).until(lambda d, view=view: d.execute_script("return arguments[0].complete", view))
        width, height = page.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", view)
        assert (height, width) == expected.original_size  # the overlay at the image's own size
        assert view.is_displayed()

    scores = sorted(float(c.get_attribute("data-score")) for c in cards)
    _set_threshold(page, (scores[0] + scores[1]) / 2)
    above = [c for c in _cards(page) if "above" in c.get_attribute("class").split()]
    assert [float(c.get_attribute("data-score")) for c in above] == [scores[1]]
    assert page.find_element(By.ID, "above-count").text == "1 of 2 above"
    _set_threshold(page, scores[0] - 1e-3 if scores[0] > 1e-3 else 0)
    assert page.find_element(By.ID, "above-count").text == "2 of 2 above"

    page.find_element(By.ID, "download-csv").click()
    target = page.downloads / "zsad-scores.csv"
    deadline = time.monotonic() + 20
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [r["file"] for r in rows] == ["000.png", "000.png"]
    for row, card in zip(rows, cards):
        assert float(row["pred_score"]) == float(card.get_attribute("data-score"))
        assert row["class_name"] == "metal nut" and row["image_score"] == "S5" and row["above_threshold"] == "true"
        assert set(row) >= {"S1", "S2", "S3", "S4", "S5", "height", "width", "threshold"}
    assert rows[0]["height"] == "320" and rows[0]["width"] == "256"


def test_a_non_image_shows_the_servers_error_and_the_page_keeps_working(page, tmp_path):
    page.find_element(By.ID, "clear").click()
    name_field = page.find_element(By.ID, "class-name")
    name_field.clear()
    name_field.send_keys("screw")
    notes = tmp_path / "notes.png"
    notes.write_text("not really an image")
    _upload(page, notes, IMAGES[1])
    bad, good = _wait_all_finished(page, 2)
    assert bad.get_attribute("data-state") == "error"
    assert "415" in bad.text and "not an image" in bad.text
    assert good.get_attribute("data-state") == "done"
    assert page.find_element(By.ID, "above-count").text.endswith("of 1 above")
