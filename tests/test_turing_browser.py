"""End to end in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium; nothing downloaded):
train a tiny run, create a study from it, open a rater link on the real server, answer with clicks and with keys,
close the browser mid-way and reopen the link (it resumes), finish, then check the results tables and the admin's
results page. Screenshots: results/turing/rating_page.png, results/turing/results_page.png."""
from __future__ import annotations

import time

import pandas as pd

from medsynbench.benchmark.run import execute_run
from medsynbench.benchmark.turing import db
from medsynbench.benchmark.turing.create import create_study
from medsynbench.benchmark.turing.results import write_results
from medsynbench.benchmark.turing.server import running
from tests.conftest import REPO, SMOKE, compose_config
from tests.test_report_browser import _browser_binaries
from tests.test_turing_security import turing_cfg

SHOTS = REPO / "results" / "turing"
N = 8


def _driver():
    binary, chromedriver = _browser_binaries()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,820",
                "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.set_page_load_timeout(60)
    return driver


def _wait(driver, predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate(driver)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; progress: "
                         f"{driver.find_element('id', 'progress').text!r}")


def _progress(driver) -> str:
    return driver.find_element("id", "progress").text


def _advanced(before: str):
    """The page moved on: the next image, or the end page after the last one."""
    return lambda d: d.find_element("id", "done").is_displayed() or _progress(d) != before


def _answer_with_clicks(driver, answer: str, confidence: int, comment: str | None = None):
    before = _progress(driver)
    if comment:
        driver.find_element("id", "comment").send_keys(comment)
    driver.find_element("css selector", f".conf[data-confidence='{confidence}']").click()
    driver.find_element("id", f"btn-{answer}").click()
    _wait(driver, _advanced(before), "the next image after a click")


def _answer_with_keys(driver, key: str, confidence: int):
    from selenium.webdriver.common.action_chains import ActionChains

    before = _progress(driver)
    ActionChains(driver).send_keys(key).send_keys(str(confidence)).perform()
    _wait(driver, _advanced(before), "the next image after a key press")


def _image_decoded(driver) -> bool:
    return driver.execute_script("const i = document.getElementById('image'); "
                                 "return i.complete && i.naturalWidth > 0;")


def _severe(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_rate_in_chromium_resume_and_results(tmp_path):
    _browser_binaries()  # skip early (before training) without a browser
    run_cfg = compose_config([*SMOKE, f"paths.results_dir={tmp_path / 'results'}", "data.train_size=16",
                              "evaluate=false"])
    record = execute_run(run_cfg)
    summary = create_study(turing_cfg(tmp_path, f"study_dir={tmp_path / 'study'}", f"runs=[{record['training_id']}]",
                                      f"n_images={N}", "raters=[dr_a]", "show_score=true", "display_size=384",
                                      "title=Dermoscopy visual Turing test"))
    token, admin = summary["rater_tokens"]["dr_a"], summary["admin_token"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    answers = []  # (answer, confidence) in the order shown
    with running(summary["study_dir"]) as url:
        driver = _driver()
        try:
            driver.get(f"{url}/r/{token}")
            _wait(driver, lambda d: _progress(d) == f"1 / {N}", "the first image")
            _wait(driver, _image_decoded, "the image to decode")
            _answer_with_clicks(driver, "real", 4, comment="sharp border")
            _answer_with_clicks(driver, "synthetic", 2)
            _answer_with_keys(driver, "s", 5)
            _wait(driver, lambda d: _progress(d) == f"4 / {N}", "image 4")
            driver.find_element("css selector", ".conf[data-confidence='3']").click()  # chosen, not yet answered
            _wait(driver, _image_decoded, "image 4 to decode")
            driver.save_screenshot(str(SHOTS / "rating_page.png"))
            assert not _severe(driver), _severe(driver)
        finally:
            driver.quit()  # the browser closes mid-way
        answers += [("real", 4), ("synthetic", 2), ("synthetic", 5)]
        conn = db.connect(summary["study_dir"])
        assert conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 3  # saved on every click
        conn.close()

        driver = _driver()
        try:
            driver.get(f"{url}/r/{token}")
            _wait(driver, lambda d: _progress(d) == f"4 / {N}", "resuming at image 4")
            _answer_with_keys(driver, "r", 1)
            driver.find_element("id", "prev").click()  # go back and change image 4: the last answer wins
            _wait(driver, lambda d: _progress(d) == f"4 / {N}", "back at image 4")
            from selenium.webdriver.common.action_chains import ActionChains
            from selenium.webdriver.common.keys import Keys

            ActionChains(driver).send_keys("s").send_keys("3").perform()  # a revisited image waits for Next
            _wait(driver, lambda d: d.find_element("css selector", ".conf.selected").text == "3", "confidence 3")
            assert _progress(driver) == f"4 / {N}"
            _wait(driver, lambda d: d.find_element("id", "status").text == "saved", "the change saved")
            ActionChains(driver).send_keys(Keys.ARROW_RIGHT).perform()
            _wait(driver, lambda d: _progress(d) == f"5 / {N}", "image 5 after the right arrow")
            answers.append(("synthetic", 3))
            for i in range(5, N + 1):
                if i % 2:
                    _answer_with_keys(driver, "r", 1 + i % 5)
                    answers.append(("real", 1 + i % 5))
                else:
                    _answer_with_clicks(driver, "synthetic", 1 + i % 5)
                    answers.append(("synthetic", 1 + i % 5))
            _wait(driver, lambda d: d.find_element("id", "done").is_displayed(), "the end page")
            score = driver.find_element("id", "score").text
            assert f"of {N} correct" in score
            assert not _severe(driver), _severe(driver)

            state = driver.execute_script(
                "return fetch(location.pathname + '/state').then(r => r.json());")
            assert state["finished"] and [(it["answer"], it["confidence"]) for it in state["items"]] == answers
            driver.get(f"{url}/admin/{admin}/results")
            _wait(driver, lambda d: d.find_elements("css selector", "#per-rater table"), "the results table")
            assert "dr_a" in driver.find_element("id", "per-rater").text
            assert all(driver.execute_script("return [...document.images].map(i => i.complete && i.naturalWidth > 0)"))
            driver.set_window_size(1200, 1400)
            driver.save_screenshot(str(SHOTS / "results_page.png"))
            driver.get(f"{url}/admin/{token}")
            assert "403" in driver.title
        finally:
            driver.quit()

    conn = db.connect(summary["study_dir"])
    truth = {r["id"]: r["truth"] for r in conn.execute("SELECT id, truth FROM images")}
    conn.close()
    correct = sum(a == truth[it["id"]] for (a, _), it in zip(answers, state["items"]))
    assert score.startswith(f"Your score: {correct} of {N} correct")
    out = write_results(summary["study_dir"])
    table = pd.read_csv(out["out_dir"] / "per_rater.csv")
    assert table["rater"].tolist() == ["dr_a"] and table["n"].item() == N and table["correct"].item() == correct
    comments = pd.read_csv(out["out_dir"] / "comments.csv")
    assert comments["comment"].tolist() == ["sharp border"]
    per_image = pd.read_csv(out["out_dir"] / "per_image.csv")
    assert len(per_image) == N and set(per_image["source"]) == {"real", record["training_id"]}
