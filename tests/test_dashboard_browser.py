"""The dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
which `make test` installs where it can): the page loads, shows a key just told, its
charts move, and its Redeliver button runs a dead letter again.

Set INORDER_SCREENSHOT=path to keep a screenshot of the page (the README's is one).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from actors import Context, UserActor
from supervisors import RedisCluster, RestartPolicy, Runtime
from supervisors.observe import AdminServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="headless Chromium is not installed (apt-get install chromium chromium-driver)",
)
TOKEN = "dashboard-test-token-0123"
GATE = threading.Event()
RUNS: list[Any] = []


class Agent(UserActor):
    async def on_message(self, message: Any, ctx: Context) -> Any:
        RUNS.append(message)
        if message == "boom" and "fixed" not in RUNS:
            raise ValueError("the model timed out")
        if message == "think":  # a long LLM call, until the test lets it end
            await asyncio.to_thread(GATE.wait, 30)
        return message


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests may run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1100",
    ):
        options.add_argument(argument)
    # The Debian driver, by path: Selenium must not try to download one.
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))  # type: ignore[arg-type]
    yield driver
    driver.quit()


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    RUNS.clear()
    GATE.clear()
    yield
    GATE.set()


def wait_for(driver: Any, condition: Any, seconds: float = 15.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.05).until(condition)


def text(driver: Any, element_id: str) -> str:
    # One read in the page: the element may be rebuilt between two WebDriver calls.
    script = "return document.getElementById(arguments[0]).innerText"
    return str(driver.execute_script(script, element_id))


def points(driver: Any, canvas: str) -> int:
    from selenium.webdriver.common.by import By

    return int(driver.find_element(By.ID, canvas).get_attribute("data-points"))


def test_the_page_shows_keys_charts_and_redelivers(browser: Any) -> None:
    from selenium.webdriver.common.by import By

    admin = AdminServer(port=0, token=TOKEN, refresh=0.2)
    with Runtime(
        Agent, observe=[admin], restart=RestartPolicy(max_retries=0, backoff_min=0.0)
    ) as rt:
        for i in range(40):
            rt.tell(f"telegram:{i % 8}", i)
        rt.tell("telegram:42", "think")
        for i in range(3):
            rt.tell("telegram:42", f"and then {i}")
        rt.tell("discord:7", "boom")
        browser.get(f"{admin.url}/#token={TOKEN}")
        assert browser.title == "inorder"
        wait_for(browser, lambda d: text(d, "state") == "running")
        # The key just told, with its three messages waiting behind the one in flight.
        wait_for(browser, lambda d: "telegram:42" in text(d, "deepest"))
        assert text(browser, "deepest").split() == ["telegram:42", "3"]
        assert "telegram:42" in text(browser, "running")
        assert text(browser, "in_flight") == "1"
        # The charts gain a point every refresh.
        seen = points(browser, "rates")
        wait_for(browser, lambda d: points(d, "rates") >= seen + 3)
        assert points(browser, "latency") >= seen + 3
        # The dead letter, and its button.
        wait_for(browser, lambda d: "discord:7" in text(d, "letters"))
        assert "ValueError: the model timed out" in text(browser, "letters")
        assert text(browser, "dead_letters_kept") == "1"
        if os.environ.get("INORDER_SCREENSHOT"):
            browser.save_screenshot(os.environ["INORDER_SCREENSHOT"])
        RUNS.append("fixed")
        browser.find_element(By.CSS_SELECTOR, "#letters button.redeliver").click()
        wait_for(browser, lambda d: "no dead letters" in text(d, "letters"))
        wait_for(browser, lambda d: RUNS.count("boom") == 2)
        assert rt.dead_letters() == []
        GATE.set()
        wait_for(browser, lambda d: "no key has messages waiting" in text(d, "deepest"))
        wait_for(browser, lambda d: text(d, "handled") == "45")


def test_the_page_says_when_it_is_not_let_in_or_the_runtime_is_gone(browser: Any) -> None:
    admin = AdminServer(port=0, token=TOKEN, refresh=0.2)
    with Runtime(Agent, observe=[admin]):
        browser.get(f"{admin.url}/")  # no token in the fragment
        wait_for(browser, lambda d: "did not answer" in text(d, "error"))
        assert "Authorization" in text(browser, "error")
        browser.get(f"{admin.url}/#token={TOKEN}")
        wait_for(browser, lambda d: text(d, "state") == "running")
    # The runtime has stopped, and its endpoint with it: the page says so.
    wait_for(browser, lambda d: "did not answer" in text(d, "error"))


def test_a_cluster_node_shows_its_shards(browser: Any, redis_url: str) -> None:
    cluster = RedisCluster(redis_url, n_shards=4, lease_ttl=1.0, tick=0.1, member_ttl=0.5,
                           join_grace=0.0)  # fmt: skip
    admin = AdminServer(port=0, refresh=0.2)
    with Runtime(Agent, cluster=cluster, observe=[admin]) as rt:
        assert rt.ask("telegram:1", "hello").get(timeout=30) == "hello"
        browser.get(f"{admin.url}/")
        wait_for(browser, lambda d: text(d, "shards").count("\n") == 3)  # four rows
        node = rt.stats()["cluster"]["node"]
        rows = [line.split("\t") for line in text(browser, "shards").splitlines()]
        assert [r[0] for r in rows] == ["0", "1", "2", "3"]
        assert {r[1] for r in rows} == {node}
        assert "takeovers" in text(browser, "cluster_totals")
        assert text(browser, "node") == f"node {node}"
