"""The workbench page in a real browser: Debian's chromium driven headless through chromium-driver
(Selenium). It types a query, checks that the four columns show what the CLI returns for each mode, judges
two hits and checks the qrels file the server wrote. Skips, saying so, where the browser is not installed
(``apt install chromium chromium-driver``; ``.ci/run`` installs them where it may)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install 'hybrid-search[serve]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install selenium")

from test_workbench import Served, cli  # noqa: E402

MODES = ["bm25", "knn", "hybrid", "hybrid+rerank"]
QUERY = "how do batteries make electricity"


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/lib/chromium/chromedriver" if Path("/usr/lib/chromium/chromedriver").exists() else None
    )
    if not chromium or not driver:
        pytest.skip("Debian's chromium and chromium-driver are not installed: apt install chromium chromium-driver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def _steady(check):
    """A wait condition that a re-render between finding an element and reading it only postpones."""
    from selenium.common.exceptions import StaleElementReferenceException

    def run(browser):
        try:
            return check(browser)
        except StaleElementReferenceException:
            return False

    return run


def _columns(browser) -> list[list[str]]:
    columns = browser.find_elements("css selector", "#columns .column")
    return [[h.get_attribute("data-doc") for h in c.find_elements("css selector", ".hit")] for c in columns]


@pytest.fixture()
def data(tmp_path) -> Path:
    data = tmp_path / "data"
    done = cli("ingest", "sample", "--index", "sample", "--data-dir", str(data), "-q")
    assert done.returncode == 0, done.stderr
    return data


def test_the_page_shows_the_cli_hits_and_judging_writes_qrels(data, tmp_path):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    expected = {}
    for mode in MODES:
        shown = cli("search", QUERY, "--index", "sample", "--data-dir", str(data), "--mode", mode, "--json", "-q")
        assert shown.returncode == 0, shown.stderr
        expected[mode] = [h["doc_id"] for h in json.loads(shown.stdout)["hits"]]
    profile = tmp_path / "lexical.toml"
    profile.write_text('[search]\nmode = "bm25"\n')
    browser = _browser()  # first: a skip for a missing browser leaves no server running
    try:
        server = Served(data, "--profile", f"lexical={profile}")
    except BaseException:
        browser.quit()
        raise
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 120)
        wait.until(_steady(lambda b: b.find_elements("css selector", "#index option")))
        box = browser.find_element("id", "query")
        box.send_keys(QUERY, Keys.ENTER)
        wait.until(_steady(lambda b: all(_columns(b)) and len(_columns(b)) == 4))
        assert _columns(browser) == [expected[m] for m in MODES]
        assert "overlap (RBO" in browser.find_element("id", "overlap").text
        why = browser.find_element("css selector", '#columns .column[data-column="2"] .hit .why').text
        assert "bm25 #" in why or "knn #" in why  # the hybrid column says where each hit came from

        first = expected["bm25"][0]
        other = next(d for d in expected["knn"] if d != first)
        browser.find_element(
            "css selector", f'.column[data-column="0"] .hit[data-doc="{first}"] button[data-grade="2"]'
        ).click()
        wait.until(_steady(lambda b: b.find_element("id", "judged").text == "1"))
        browser.find_element(
            "css selector", f'.column[data-column="1"] .hit[data-doc="{other}"] button[data-grade="1"]'
        ).click()
        wait.until(
            _steady(
                lambda b: (
                    "on"
                    in b.find_element(
                        "css selector", f'.column[data-column="1"] .hit[data-doc="{other}"] button[data-grade="1"]'
                    ).get_attribute("class")
                )
            )
        )
        # pooled: the document judged in the first column shows its grade in every column that holds it
        for column in range(4):
            marks = browser.find_elements(
                "css selector", f'.column[data-column="{column}"] .hit[data-doc="{first}"] button.on'
            )
            if first in expected[MODES[column]]:
                assert [m.get_attribute("data-grade") for m in marks] == ["2"]
        # the two profiles compared on the judged query, on the page
        from selenium.webdriver.support.ui import Select

        Select(browser.find_element("id", "profileA")).select_by_value("lexical")
        browser.find_element("id", "compareGo").click()
        wait.until(_steady(lambda b: len(b.find_elements("css selector", "#compareOut tr")) == 3))
        rows = [r.text for r in browser.find_elements("css selector", "#compareOut tr")]
        assert rows[1].startswith("lexical bm25") and rows[2].startswith("(served settings)")
        assert "1 judged queries; paired randomisation test p =" in browser.find_element("id", "compareOut").text
        shot = tmp_path / "workbench.png"
        browser.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        browser.quit()
        server.stop()
    lines = (data / "judgements" / "sample" / "qrels" / "test.tsv").read_text().splitlines()
    assert sorted(lines[1:]) == sorted([f"{lines[1].split()[0]}\t{first}\t2", f"{lines[1].split()[0]}\t{other}\t1"])
    queries = (data / "judgements" / "sample" / "queries.jsonl").read_text().splitlines()
    assert [json.loads(q)["text"] for q in queries] == [QUERY]
