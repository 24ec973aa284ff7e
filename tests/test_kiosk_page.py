"""The real kiosk page in headless Chromium, fed by a NodeState the test drives with frames of a
real video (the end-to-end run with the node's own pipeline is tests/test_kiosk_e2e.py)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_node.config import KioskConfig
from edge_node.kiosk import KioskHandle, start_kiosk
from edge_node.state import FederationInfo, ModelInfo, NodeState
from edge_node.store import ClipStore
from tests.conftest import require
from tests.support import paths
from tests.support.browser import SIZES, launch_browser, open_page, skip_reason
from tests.test_kiosk_server import CLASSES, PASSWORD, ForgetWorker, add_clips, clip_count

pytestmark = pytest.mark.slow
VIDEO = paths.VIDEO / "WolfgangLanger_Pexels.mp4"


class VideoDriver:
    """Plays the video into a NodeState like the node would: preview JPEGs, a face box, and
    probabilities whose leading class moves on every second; ``face`` False shows no face."""

    def __init__(self, state: NodeState, video: Path, fps: float = 12.0) -> None:
        import cv2

        self.cv2 = cv2
        self.state, self.fps = state, fps
        self.cap = cv2.VideoCapture(str(video))
        if not self.cap.isOpened():
            raise OSError(f"cannot open {video}")
        self.face = threading.Event()
        self.face.set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="video-driver", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            ok, frame = self.cap.read()
            if not ok:
                self.cap.set(self.cv2.CAP_PROP_POS_FRAMES, 0)
                continue
            i += 1
            h, w = frame.shape[:2]
            face = self.face.is_set()
            lead = (i // int(self.fps)) % len(CLASSES)
            vfer = np.full(len(CLASSES), 0.1)
            vfer[lead] = 0.7
            ifer = np.roll(vfer, i % 2)
            self.state.update(
                emotion=CLASSES[lead] if face else None,
                vfer_probs=dict(zip(CLASSES, vfer.tolist(), strict=True)) if face else {},
                ifer_probs=dict(zip(CLASSES, ifer.tolist(), strict=True)) if face else {},
                face_present=face,
                face_box=(w // 3, h // 5, w // 4, h // 2) if face else None,
                frame_size=(w, h),
                recording=face and not self.state.pause_requested.is_set(),
                fps=self.fps,
            )
            self.state.set_preview(self.cv2.imencode(".jpg", frame)[1].tobytes())
            self.stop.wait(1.0 / self.fps)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.cap.release()


@dataclass
class Setup:
    handle: KioskHandle
    state: NodeState
    driver: VideoDriver
    db: Path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with launch_browser() as b:
        yield b


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    require(VIDEO)
    db = tmp_path / "node.db"
    add_clips(db, [0, 1, 1, 2, 3, 3, 3])
    pw = tmp_path / "operator.pw"
    pw.write_text(PASSWORD)
    state = NodeState()
    state.update(
        model=ModelInfo(
            head_version="central-r7", federation_round=7, personalized=True, classes=CLASSES
        ),
        federation=FederationInfo(enabled=True, connected=True, last_round=7),
        last_adaptation="2025-06-01T03:10:00+00:00",
    )
    stop = threading.Event()
    worker = ForgetWorker(state, db, threading.Event())
    driver = VideoDriver(state, VIDEO)
    handle = start_kiosk(state, KioskConfig(port=0, operator_password_file=pw), db, stop)
    try:
        yield Setup(handle, state, driver, db)
    finally:
        stop.set()
        handle.stop()
        driver.close()
        worker.join()


def bars(page: Any) -> dict[str, float]:
    rows = page.query_selector_all("#bars .bar-row")
    return {r.get_attribute("data-cls"): float(r.get_attribute("data-clip") or 0) for r in rows}


def inside(page: Any, selector: str, size: tuple[int, int]) -> bool:
    box = page.locator(selector).bounding_box()
    return (
        box is not None
        and box["x"] >= 0
        and box["y"] >= 0
        and (box["x"] + box["width"] <= size[0] + 0.5 and box["y"] + box["height"] <= size[1] + 0.5)
    )


@pytest.mark.parametrize("size_name", list(SIZES))
def test_layout_fits_the_screen(browser: Any, setup: Setup, tmp_path: Path, size_name: str) -> None:
    size = SIZES[size_name]
    page = open_page(browser, setup.handle.url, size)
    page.wait_for_function("document.querySelectorAll('#bars .bar-row').length === 4")
    page.wait_for_function("document.getElementById('preview').naturalWidth > 0")
    page.wait_for_selector("#rec:not([hidden])")
    shot = tmp_path / f"kiosk-{size[0]}x{size[1]}.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    for sel in (
        "#rec",
        "#emotion",
        "#bars",
        "#frame",
        "#consent",
        "#pause-btn",
        "#forget-btn",
        ".meta",
    ):
        assert page.locator(sel).is_visible(), sel
        assert inside(page, sel, size), f"{sel} leaves the {size_name} screen"
    scroll = page.evaluate(
        "[document.documentElement.scrollHeight, document.documentElement.scrollWidth]"
    )
    assert scroll[0] <= size[1] and scroll[1] <= size[0]
    assert "only model weights" in page.inner_text("#consent")
    assert page.inner_text("#model").startswith("central-r7")
    page.context.close()


def test_emotion_and_bars_change_as_the_video_plays(browser: Any, setup: Setup) -> None:
    page = open_page(browser, setup.handle.url, SIZES["pi"])
    page.wait_for_function("document.getElementById('emotion').dataset.emotion !== ''")
    emotions, samples = set(), []
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline and (len(emotions) < 3 or len(samples) < 5):
        emotions.add(page.get_attribute("#emotion", "data-emotion"))
        samples.append(bars(page))
        page.wait_for_timeout(250)
    assert len(emotions - {""}) >= 3, emotions
    assert emotions <= set(CLASSES)
    assert any(abs(a[c] - b[c]) > 0.05 for a, b in itertools.pairwise(samples) for c in CLASSES)
    assert all(0 <= v <= 1 for s in samples for v in s.values())
    page.context.close()


def test_no_face_is_clear(browser: Any, setup: Setup) -> None:
    page = open_page(browser, setup.handle.url, SIZES["pi"])
    page.wait_for_selector("#rec:not([hidden])")
    setup.driver.face.clear()
    page.wait_for_function("document.getElementById('emotion').textContent === 'No face'")
    assert page.evaluate("document.body.classList.contains('no-face')")
    assert page.locator("#facebox").is_hidden()
    page.wait_for_selector("#rec", state="hidden")
    setup.driver.face.set()
    page.wait_for_function("document.getElementById('emotion').dataset.emotion !== ''")
    page.context.close()


def test_pause_shows_paused_and_tells_the_node(browser: Any, setup: Setup) -> None:
    page = open_page(browser, setup.handle.url, SIZES["pi"])
    page.wait_for_selector("#rec:not([hidden])")
    page.click("#pause-btn")
    page.wait_for_selector("#paused:not([hidden])")
    assert setup.state.pause_requested.is_set()
    page.wait_for_selector("#rec", state="hidden")
    assert page.inner_text("#pause-btn") == "Resume recording"
    page.click("#pause-btn")
    page.wait_for_selector("#rec:not([hidden])")
    assert not setup.state.pause_requested.is_set()
    page.context.close()


def test_forget_me_asks_first_then_empties_the_database(browser: Any, setup: Setup) -> None:
    page = open_page(browser, setup.handle.url, SIZES["pi"])
    assert clip_count(setup.db) == 7
    page.click("#forget-btn")
    page.wait_for_selector("#confirm[open]")
    page.click("#confirm-cancel")
    page.wait_for_selector("#confirm", state="hidden")
    assert clip_count(setup.db) == 7  # cancelled: nothing deleted
    page.click("#forget-btn")
    page.click("#confirm-ok")
    page.wait_for_function("document.body.dataset.forgotten === '1'")
    assert "deleted" in page.inner_text("#toast")
    assert clip_count(setup.db) == 0
    page.context.close()


def test_page_fetches_nothing_from_elsewhere_and_obeys_its_policy(
    browser: Any, setup: Setup
) -> None:
    context = browser.new_context(viewport={"width": 800, "height": 480})  # CSP enforced
    page = context.new_page()
    urls: list[str] = []
    console: list[str] = []
    page.on("request", lambda req: urls.append(req.url))
    page.on("console", lambda msg: console.append(msg.text))
    page.goto(setup.handle.url, wait_until="domcontentloaded")
    page.wait_for_selector("#rec:not([hidden])")
    page.wait_for_selector("#no-preview", state="hidden")  # the MJPEG preview is showing
    assert len(page.query_selector_all("#bars .bar-row")) == len(CLASSES)
    assert urls and all(u.startswith(setup.handle.url) for u in urls), urls
    assert not [m for m in console if "Content Security Policy" in m], console
    context.close()


def test_operator_page_shows_counts_chart_and_recent_clips(
    browser: Any, setup: Setup, tmp_path: Path
) -> None:
    url = setup.handle.url + "operator"
    anonymous = browser.new_context()
    assert anonymous.request.get(url).status == 401  # the browser would show its login prompt
    anonymous.close()
    creds = {"username": "operator", "password": PASSWORD}
    page = open_page(browser, url, SIZES["fullhd"], http_credentials=creds)
    page.wait_for_function("document.body.dataset.loaded === '1'")
    counts = {
        li.get_attribute("data-cls"): int(li.get_attribute("data-n") or -1)
        for li in page.query_selector_all("#counts li")
    }
    assert counts == {"happiness": 1, "sadness": 2, "anger": 1, "neutral": 3}
    with ClipStore(setup.db) as store:  # one stacked segment per (hour, class) with clips
        segments = sum(len(b.counts) for b in store.timeline(3600))
    assert segments > 1
    assert len(page.query_selector_all("#chart svg rect")) == segments
    assert len(page.query_selector_all("#recent tr")) == 7
    shot = tmp_path / "operator-1920x1080.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    page.context.close()


def test_bars_are_smoothed_not_jumping(browser: Any, tmp_path: Path) -> None:
    """The node updates at its frame rate; a sudden change reaches the bar over several updates."""
    state = NodeState()
    state.update(model=ModelInfo(classes=CLASSES), face_present=True)
    target = {"probs": {"happiness": 1.0}}
    stop = threading.Event()

    def node() -> None:  # updates at 20 Hz like a (slow) capture loop
        while not stop.wait(0.05):
            state.update(vfer_probs=target["probs"], face_present=True)

    thread = threading.Thread(target=node, daemon=True)
    thread.start()
    handle = start_kiosk(state, KioskConfig(port=0), None, stop)
    try:
        page = open_page(browser, handle.url, SIZES["pi"])
        row = "#bars .bar-row[data-cls='{}']"
        page.wait_for_function(
            f'Number(document.querySelector("{row.format("happiness")}")?.dataset.clip) > 0.97'
        )
        target["probs"] = {"sadness": 1.0}
        page.wait_for_function(
            f'Number(document.querySelector("{row.format("sadness")}").dataset.clip) > 0'
        )
        first_step = float(page.get_attribute(row.format("sadness"), "data-clip") or 1)
        assert 0 < first_step < 0.5  # one update moves the bar part of the way, not all of it
        page.wait_for_function(
            f'Number(document.querySelector("{row.format("sadness")}").dataset.clip) > 0.9'
        )
        page.context.close()
    finally:
        stop.set()
        handle.stop()
        thread.join(5)


def test_the_pause_after_forget_me_counts_down_on_the_page(browser: Any, setup: Setup) -> None:
    """What the node does on "forget me" (the pause first): the page shows how long is left."""
    page = open_page(browser, setup.handle.url, SIZES["pi"])
    setup.state.pause_after_forget(30)
    page.wait_for_function("document.getElementById('paused').textContent.includes('resumes in')")
    text = page.inner_text("#paused")
    seconds = int(text.split("resumes in ")[1].split(" s")[0])
    assert 20 <= seconds <= 30 and page.is_disabled("#pause-btn")
    assert not page.is_visible("#rec")  # nothing is being recorded meanwhile
    setup.state.pause_after_forget(0)  # over: the badge goes and the button works again
    page.wait_for_selector("#paused", state="hidden")
    assert not page.is_disabled("#pause-btn")
    page.context.close()


def test_the_operators_notice_replaces_the_built_in_one_as_text(browser: Any, setup: Setup) -> None:
    """deployment.notice / deployment.operator reach the page, as text, never as markup."""
    from edge_node.state import Notice

    page = open_page(browser, setup.handle.url, SIZES["pi"])
    page.wait_for_selector("#consent")
    assert "Kept here" in page.inner_text("#consent")  # the built-in notice
    setup.state.update(notice=Notice(None, "City Museum <b>x</b>"))
    page.wait_for_function("document.getElementById('consent').textContent.includes('Run by')")
    text = page.inner_text("#consent")
    assert "Kept here" in text and "Run by City Museum <b>x</b>." in text  # shown, not parsed
    assert page.locator("#consent b:text('x')").count() == 0
    setup.state.update(notice=Notice("Emotion recognition in use. Ask staff for details.", None))
    page.wait_for_function("document.getElementById('consent').textContent.startsWith('Emotion')")
    assert page.inner_text("#consent") == "Emotion recognition in use. Ask staff for details."
    page.context.close()


def test_the_privacy_sentence_states_epsilon_in_plain_words(browser: Any, setup: Setup) -> None:
    """adaptation.privacy: the notice adds epsilon per night, over the window, and spent (text)."""
    from edge_node.personalization.ledger import LedgerView, notice_text
    from edge_node.state import Notice

    view = LedgerView(3.0, 15.0, 30, 1e-5, spent=4.256, last_night=1)
    page = open_page(browser, setup.handle.url, SIZES["pi"])
    page.wait_for_selector("#consent")
    setup.state.update(notice=Notice(None, "City Museum", notice_text(view)))
    page.wait_for_function("document.getElementById('consent').textContent.includes('epsilon')")
    text = page.inner_text("#consent")
    assert "Kept here" in text and "Run by City Museum." in text  # the rest stays
    assert "at most epsilon = 3 about one visit" in text and "at most 15 over 30 nights" in text
    assert "Spent so far: 4.26 of 15" in text
    page.context.close()
