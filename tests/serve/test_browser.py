"""The search page in a real headless browser (Debian's chromium driven by Selenium, nothing
downloaded) against `tbpr serve` started as a process on a free loopback port: type a query, wait
for the grid, compare its ranked paths with the API's answer, pick a word for the heat maps, and
save a screenshot; on a model with an open-set calibration, the page says "no confident match" and shows
calibrated confidences, and "load more" adds the next ranks.

Without chromium and chromedriver (`apt-get install chromium chromium-driver`; `make test` installs
them when it runs as root) the test is skipped, except in CI (CI=true), where it fails."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    absent = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if absent:
        return f"{' and '.join(absent)} not installed: apt-get install chromium chromium-driver"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serving(emb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`tbpr serve EMB` as a process on a free loopback port; its URL once it answers."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tbpr", "serve", str(emb), "--port", str(port), "--device", "cpu"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tbpr serve did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(served_emb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _serving(served_emb, tmp_path_factory) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    missing = _missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser test must run in CI: {missing}")
        pytest.skip(missing)
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager downloads nothing
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1100,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_shows_the_apis_ranking_and_heat_maps(browser: object, server: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    query = "a person in a red coat"
    expected = httpx.get(f"{server}/api/search", params={"q": query, "k": 5}).json()
    driver.get(server)  # type: ignore[attr-defined]
    wait = WebDriverWait(driver, 30)
    wait.until(lambda d: "images" in d.find_element(By.ID, "status").text)
    box = driver.find_element(By.ID, "k")  # type: ignore[attr-defined]
    box.clear()
    box.send_keys("5")
    driver.find_element(By.ID, "q").send_keys(query, Keys.ENTER)  # type: ignore[attr-defined]
    wait.until(lambda d: d.find_element(By.ID, "grid").get_attribute("data-query") == query)
    figures = driver.find_elements(By.CSS_SELECTOR, "#grid figure")  # type: ignore[attr-defined]
    assert [(f.get_attribute("data-rank"), f.get_attribute("data-path")) for f in figures] == [
        (str(hit["rank"]), hit["path"]) for hit in expected
    ]
    assert f"{expected[0]['score']:.3f}" in figures[0].text
    wait.until(
        lambda d: all(
            d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)
            for i in d.find_elements(By.CSS_SELECTOR, "#grid img")
        )
    )
    # a word's heat map over every result
    driver.find_element(By.CSS_SELECTOR, "#words button[data-word='red']").click()  # type: ignore[attr-defined]
    wait.until(
        lambda d: all(
            "/api/heatmap?" in i.get_attribute("src")
            and d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)
            for i in d.find_elements(By.CSS_SELECTOR, "#grid img")
        )
    )
    shot = tmp_path / "serve.png"
    driver.save_screenshot(str(shot))  # type: ignore[attr-defined]
    assert shot.stat().st_size > 10_000
    if os.environ.get("TBPR_SCREENSHOT"):
        shutil.copy(shot, os.environ["TBPR_SCREENSHOT"])
    # a bad request shows its message
    field = driver.find_element(By.ID, "q")  # type: ignore[attr-defined]
    field.clear()
    field.send_keys("   ", Keys.ENTER)
    wait.until(lambda d: "the query text is empty" in d.find_element(By.ID, "status").text)
    assert driver.find_elements(By.CSS_SELECTOR, "#grid figure") == []  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def calibrated_server(
    tiny_checkpoint: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A folder served by a model whose open-set threshold nobody in it clears (a private copy of the
    tiny checkpoint with an open_set.json above every score: the described person is not there)."""
    import numpy as np

    from tasks.embed.folder import embed_folder
    from tasks.serve import open_set
    from tasks.serve.gallery import Gallery
    from tbpr_models.checkpoint import weights_digest
    from tests.embed.folder_images import write_image_folder

    root = tmp_path_factory.mktemp("calibrated")
    checkpoint = Path(shutil.copytree(tiny_checkpoint("cross_scan"), root / "ckpt"))
    emb = embed_folder(write_image_folder(root / "images"), checkpoint, root / "emb", batch_size=4).out
    gallery = Gallery(emb)  # above every score of the query the test sends: nothing clears it
    scores = [
        hit["score"] for q in ("someone", "a child in a yellow raincoat") for hit in gallery.search(q, 6)
    ]
    open_set.write(
        open_set.OpenSet(
            threshold=max(scores) + 1.0,
            false_alarm_target=0.05,
            false_alarm=0.05,
            miss_rate=0.2,
            queries=100,
            absent_quantiles=tuple(np.linspace(min(scores) - 1, max(scores) + 2, open_set.QUANTILES)),
            weights_digest=weights_digest(checkpoint),
            val_emb="val",
        ),
        checkpoint,
    )
    with _serving(emb, tmp_path_factory) as url:
        yield url


def test_the_page_says_no_confident_match_and_loads_more(browser: object, calibrated_server: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    query = "a child in a yellow raincoat"
    expected = httpx.get(f"{calibrated_server}/api/search", params={"q": query, "k": 4})
    assert expected.headers["X-Tbpr-Verdict"] == "no confident match"
    driver.get(calibrated_server)  # type: ignore[attr-defined]
    wait = WebDriverWait(driver, 30)
    wait.until(lambda d: "calibrated" in d.find_element(By.ID, "status").text)
    box = driver.find_element(By.ID, "k")  # type: ignore[attr-defined]
    box.clear()
    box.send_keys("4")
    driver.find_element(By.ID, "q").send_keys(query, Keys.ENTER)  # type: ignore[attr-defined]
    wait.until(lambda d: d.find_element(By.ID, "grid").get_attribute("data-query") == query)
    verdict = driver.find_element(By.ID, "verdict")  # type: ignore[attr-defined]
    assert verdict.get_attribute("data-verdict") == "no confident match"
    assert verdict.text.startswith("No confident match")
    figures = driver.find_elements(By.CSS_SELECTOR, "#grid figure")  # type: ignore[attr-defined]
    first = expected.json()[0]
    assert f"{round(100 * first['confidence'])}%" in figures[0].text  # calibrated confidence, not the score
    assert not driver.find_elements(By.CSS_SELECTOR, "#grid figure.match")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "more").click()  # type: ignore[attr-defined]  # ranks 5 and 6 of 6
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid figure")) == 6)
    ranks = [f.get_attribute("data-rank") for f in driver.find_elements(By.CSS_SELECTOR, "#grid figure")]  # type: ignore[attr-defined]
    assert ranks == [str(r) for r in range(1, 7)]
    assert not driver.find_element(By.ID, "more").is_displayed()  # type: ignore[attr-defined]  # all shown


def test_more_like_this_and_hidden_duplicates(browser: object, server: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.get(server)  # type: ignore[attr-defined]
    wait = WebDriverWait(driver, 30)
    wait.until(lambda d: "images" in d.find_element(By.ID, "status").text)
    driver.find_element(By.ID, "dedupe").click()  # type: ignore[attr-defined]
    query = "someone walking"
    expected = httpx.get(f"{server}/api/search", params={"q": query, "k": 10, "dedupe": "true"}).json()
    driver.find_element(By.ID, "q").send_keys(query, Keys.ENTER)  # type: ignore[attr-defined]
    wait.until(lambda d: d.find_element(By.ID, "grid").get_attribute("data-query") == query)
    figures = driver.find_elements(By.CSS_SELECTOR, "#grid figure")  # type: ignore[attr-defined]
    assert [f.get_attribute("data-path") for f in figures] == [h["path"] for h in expected]
    path = figures[0].get_attribute("data-path")
    like = httpx.get(f"{server}/api/similar", params={"path": path, "k": 10}).json()
    figures[0].find_element(By.CSS_SELECTOR, "button.like").click()
    wait.until(lambda d: d.find_element(By.ID, "grid").get_attribute("data-mode") == "similar")
    shown = driver.find_elements(By.CSS_SELECTOR, "#grid figure")  # type: ignore[attr-defined]
    assert [f.get_attribute("data-path") for f in shown] == [h["path"] for h in like]
    assert path not in [f.get_attribute("data-path") for f in shown]
