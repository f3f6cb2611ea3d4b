"""The HTML review page: pure checks of its structure and escaping, and a real headless-Chromium run that clicks
segments and checks that the video seeks.

The browser test needs selenium, chromium and chromedriver (Debian: `apt-get install chromium chromium-driver`;
.ci/run installs them). Without them it skips, except under CI=true where it fails. Set CO2CLI_SCREENSHOT_DIR to
keep a copy of the screenshot it takes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from co2cli.review import ReviewSegment, ReviewVideo, format_clock, render_review_page, video_url
from tests.shared_paths import SAMPLE_VIDEOS, need

EVIL = "</script><script>alert(1)</script>"
CLIP = SAMPLE_VIDEOS / "v_GGSY1Qvo990.mp4"


class Tree(HTMLParser):
    """Flat list of (tag, attrs) start tags, plus the text inside each <script> and each element's text by id."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.texts: list[str] = []
        self._script: dict[str, str | None] | None = None
        self._buf: list[str] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._script, self._buf = dict(attrs), []

    def handle_endtag(self, tag):
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script, "".join(self._buf)))
            self._script = None

    def handle_data(self, data):
        if self._script is not None:
            self._buf.append(data)
        else:
            self.texts.append(data)

    def find(self, tag: str, cls: str | None = None) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and (cls is None or cls in (a.get("class") or "").split())]


def sample_videos(src: str | None = "clip.mp4", duration: float = 18.16) -> list[ReviewVideo]:
    curve = [0.05 + 0.9 * math.exp(-((i * 0.64 - 8.0) / 1.5) ** 2) for i in range(28)]
    return [
        ReviewVideo(name="v_GGSY1Qvo990", video_src=src, duration_s=duration, model="co2net-thumos14",
                    segments=[ReviewSegment("CleanAndJerk", 0.91, 6.4, 9.6),
                              ReviewSegment("CleanAndJerk", 0.42, 7.04, 8.96),  # overlaps: stacks in a sub-row
                              ReviewSegment("Snatch", 0.63, 1.28, 3.2),
                              ReviewSegment("Snatch", 0.35, 12.16, 14.72)],
                    curves={"CleanAndJerk": curve, "Snatch": [0.6 if 2 <= i <= 4 else 0.1 for i in range(28)],
                            "Background": [0.2] * 28}),
        ReviewVideo(name="features only.npy", video_src=None, duration_s=30.0, segments=[
            ReviewSegment("LongJump", 0.7, 3.0, 11.5)], curves={}, offset_s=0.5),
    ]


# --- pure checks ----------------------------------------------------------------------------------------------

def test_page_is_self_contained():
    page = render_review_page(sample_videos())
    tree = Tree(page)
    assert not re.search(r"https?://", page), "no absolute URLs anywhere (no CDN scripts, fonts, styles)"
    assert "<link" not in page and "@import" not in page and "url(" not in page
    scripts = tree.find("script")
    assert all("src" not in a for a in scripts)
    assert [a.get("type") for a in scripts] == ["application/json", None]
    csp = next(a["content"] for a in tree.find("meta") if a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp
    code = tree.scripts[1][1]
    digest = base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp, "the CSP must allow exactly the page's own script"


def test_structure_segments_lanes_curves():
    videos = sample_videos()
    tree = Tree(render_review_page(videos, title="My review"))
    segs = tree.find("button", "seg")
    assert len(segs) == 5
    first = [a for a in segs if a["data-video"] == "v_GGSY1Qvo990"]
    assert sorted((a["data-label"], float(a["data-start"]), float(a["data-end"])) for a in first) == sorted(
        (s.label, s.start_s, s.end_s) for s in videos[0].segments)
    assert any(a["data-start"] == "6.4" for a in first)  # repr of the float, usable in a CSS selector
    assert [a["data-label"] for a in tree.find("div", "lane")] == ["CleanAndJerk", "Snatch", "LongJump"]
    assert "height:52px" in tree.find("div", "lane")[0]["style"], "two overlapping CleanAndJerk segments -> 2 rows"
    players = tree.find("video")
    assert len(players) == 1 and players[0]["src"] == "clip.mp4" and players[0]["preload"] == "metadata"
    assert "controls" in players[0]
    lines = tree.find("polyline", "curve")
    assert [a["data-class"] for a in lines] == ["CleanAndJerk", "Snatch", "Background"]
    points = [p.split(",") for p in lines[0]["points"].split()]
    assert len(points) == 28
    assert float(points[0][0]) == pytest.approx(0.32 / 18.16 * 1000, abs=0.01)  # snippet centre: (0 + 0.5) * 0.64
    assert float(points[-1][0]) == pytest.approx(27.5 * 0.64 / 18.16 * 1000, abs=0.01)
    assert [a["data-class"] for a in tree.find("button", "legend-item")] == ["CleanAndJerk", "Snatch", "Background"]
    assert "My review" in tree.texts and "v_GGSY1Qvo990" in tree.texts
    assert any("00:18.16" in t for t in tree.texts)
    ticks = [t for t in tree.find("span", "tick")]
    assert len(ticks) >= 4
    data = json.loads(tree.scripts[0][1])
    assert [len(v["segments"]) for v in data["videos"]] == [4, 1]
    assert data["videos"][1]["video_src"] is None


def test_curve_gaps_and_offset():
    video = ReviewVideo("x", None, 10.0, [], {"a": [0.1, float("nan"), 0.3, 0.4]}, snippet_seconds=1.0, offset_s=2.0)
    lines = Tree(render_review_page([video])).find("polyline", "curve")
    assert [len(a["points"].split()) for a in lines] == [1, 2]  # NaN splits the line
    assert float(lines[0]["points"].split(",")[0]) == pytest.approx(250.0)  # (2 + 0.5) / 10 of 1000 units


def test_user_text_is_escaped_everywhere():
    evil_name = '"><img src=x onerror=alert(2)>'
    evil_src = 'a.mp4" onerror="alert(3)'
    video = ReviewVideo(evil_name, evil_src, 10.0, [ReviewSegment(EVIL, 0.5, 1.0, 2.0)], {EVIL: [0.1, 0.2]},
                        model="<b>m</b>")
    page = render_review_page([video], title=EVIL)
    assert EVIL not in page and evil_name not in page and "<b>m</b>" not in page
    tree = Tree(page)
    assert len(tree.find("script")) == 2, "the label must not open or close a script element"
    assert not tree.find("img") and not [a for _, a in tree.tags if "onerror" in a]
    assert tree.find("video")[0]["src"] == evil_src
    seg = tree.find("button", "seg")[0]
    assert seg["data-label"] == EVIL and seg["data-video"] == evil_name
    assert EVIL in tree.texts and evil_name in tree.texts  # shown as text, after entity decoding
    raw_json = tree.scripts[0][1]
    assert "<" not in raw_json and ">" not in raw_json and "&" not in raw_json and "\\u003c/script" in raw_json
    data = json.loads(raw_json)
    assert data["videos"][0]["segments"][0]["label"] == EVIL and data["videos"][0]["name"] == evil_name


def test_helpers_and_validation():
    assert [format_clock(t) for t in (-0.001, 6.4, 59.999, 3725.5)] == ["00:00.00", "00:06.40", "01:00.00", "62:05.50"]
    assert video_url("/data/my videos/a#1.mp4", "/data/review") == "../my%20videos/a%231.mp4"
    assert video_url("/data/review/b.mp4", "/data/review") == "b.mp4"
    with pytest.raises(ValueError, match="snippet_seconds"):
        render_review_page([ReviewVideo("x", None, 1.0, [], {}, snippet_seconds=0.0)])
    with pytest.raises(ValueError, match="non-finite"):
        render_review_page([ReviewVideo("x", None, 1.0, [ReviewSegment("a", 1.0, float("nan"), 1.0)], {})])
    # A missing duration falls back to the data's extent; an empty page still renders.
    tree = Tree(render_review_page([ReviewVideo("x", None, 0.0, [ReviewSegment("a", 1.0, 0.0, 4.0)], {})]))
    assert json.loads(tree.scripts[0][1])["videos"][0]["timeline_s"] == 4.0
    assert "No videos." in render_review_page([])


# --- real browser ---------------------------------------------------------------------------------------------

def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the browser test (.ci/run installs chromium and chromium-driver)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by selenium through the system chromedriver (never selenium-manager: no network)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("needs the selenium package (pip install selenium)")
    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        _unavailable("needs chromium and chromedriver on PATH (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
                "--allow-file-access-from-files", "--mute-audio", "--window-size=1280,1000",
                "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_bin), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _webm_clip(path: Path, seconds: float = 14.0, fps: int = 25) -> None:
    """A small VP8 clip (moving bar) for browsers without H.264."""
    import av
    import numpy as np

    with av.open(str(path), "w", format="webm") as out:
        stream = out.add_stream("libvpx", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(int(seconds * fps)):
            img = np.full((120, 160, 3), 235, np.uint8)
            x = int(i / (seconds * fps) * 150)
            img[:, x:x + 10] = (40, 90, 200)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _clip(driver, folder: Path) -> tuple[Path, float]:
    """The real H.264 sample clip when Chromium decodes H.264 (Debian's does), else a generated WebM."""
    h264 = driver.execute_script(
        "return document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.42E01E\"');")
    if h264:
        target = folder / "videos" / "v_GGSY1Qvo990.mp4"
        target.parent.mkdir()
        shutil.copyfile(need(CLIP), target)
        import av

        with av.open(str(target)) as container:
            return target, container.duration / 1e6
    target = folder / "videos" / "clip.webm"
    target.parent.mkdir()
    _webm_clip(target)
    return target, 14.0


def _wait(driver, condition, timeout: float = 10.0, message: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition, message)


def _current_time(driver) -> float:
    return driver.execute_script("return document.querySelector('video').currentTime;")


def _click_and_check(driver, start: float) -> float:
    """Click the segment starting at `start`; wait until the video is at [start - 0.3, start + 1) (it may play)."""
    seg = driver.find_element("css selector", f'.seg[data-video="v_GGSY1Qvo990"][data-start="{start!r}"]')
    seg.click()
    seen: list[float] = []

    def arrived(d):
        seen.append(_current_time(d))
        return start - 0.3 <= seen[-1] < start + 1.0

    from selenium.common.exceptions import TimeoutException

    try:
        _wait(driver, arrived, 5.0)
    except TimeoutException:
        raise AssertionError(f"the video never reached {start} s after the click (last currentTime values: "
                             f"{seen[-5:]})") from None
    return seen[-1]


def test_clicking_segments_seeks_the_video(browser, tmp_path):
    driver = browser
    clip, duration = _clip(driver, tmp_path)
    page_dir = tmp_path / "review"
    page_dir.mkdir()
    videos = sample_videos(src=video_url(clip, page_dir), duration=duration)
    assert videos[0].video_src.startswith("../videos/")
    page = page_dir / "index.html"
    page.write_text(render_review_page(videos, title="co2cli review: browser test"), encoding="utf-8")

    driver.get(page.as_uri())
    ready = "var v = document.querySelector('video'); return v.readyState >= 1 || !!v.error;"
    _wait(driver, lambda d: d.execute_script(ready), 15.0, "the video never loaded its metadata")
    assert driver.execute_script("var e = document.querySelector('video').error; return e && [e.code, e.message]") \
        is None
    assert driver.execute_script("return document.querySelector('video').duration") == pytest.approx(duration, abs=0.1)

    t = _click_and_check(driver, 6.4)
    _wait(driver, lambda d: "active" in d.find_element("id", "seg-0-0").get_attribute("class"), 3.0,
          "the clicked segment is not highlighted while the video is inside it")
    left = driver.execute_script("return parseFloat(document.getElementById('playhead-0').style.left)")
    assert left == pytest.approx(_current_time(driver) / duration * 100, abs=3.0), (t, left)
    shot = tmp_path / "review_page.png"
    driver.save_screenshot(str(shot))
    if os.environ.get("CO2CLI_SCREENSHOT_DIR"):  # copied at once, so a later failure still leaves it behind
        keep = Path(os.environ["CO2CLI_SCREENSHOT_DIR"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, keep / shot.name)
    assert shot.stat().st_size > 10_000

    _click_and_check(driver, 1.28)

    # Robust before the metadata has loaded: reset the element to preload="none" (readyState 0), then click.
    state = driver.execute_script(
        "var v = document.querySelector('video'); v.pause(); v.preload = 'none'; v.src = v.getAttribute('src');"
        "return [v.readyState, v.networkState];")
    assert state[0] == 0, state
    _click_and_check(driver, 12.16)

    # Clicking the timeline background seeks there (without playing); the feature-only video moves its cursor.
    driver.execute_script("document.querySelector('video').pause()")
    box = driver.find_element("id", "tracks-0")
    driver.execute_script(
        "var el = arguments[0], r = el.getBoundingClientRect();"
        "el.dispatchEvent(new MouseEvent('click', {bubbles: true, clientX: r.left + r.width / 2, clientY: r.top + 5}))",
        box)
    assert _current_time(driver) == pytest.approx(duration / 2, abs=0.2)
    driver.find_element("css selector", '.seg[data-video="features only.npy"]').click()
    assert driver.find_element("id", "time-1").text == "00:03.00"

    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors  # e.g. a CSP violation or a script error


# --- real browser: what a new user hit (odd names, a moved video, a phone-sized window) -------------------------

ODD_NAMES = ["hash#1", "query?2", "back\\slash3", "tab\t4", "new\nline5"]


def test_cli_page_plays_videos_with_odd_names(browser, tmp_path, i3d_rgb_weights):
    """`co2 localize ... --html DIR` on videos named with '#', '?', a backslash, a tab and a newline: every player
    loads its video (the src is percent-encoded; unencoded, Chromium looks for another file)."""
    import subprocess
    import sys

    from tests.test_video_pipeline import cut_clip

    folder = tmp_path / "videos"
    folder.mkdir()
    clip = cut_clip(need(CLIP), tmp_path / "clip.mp4", 0.7)
    if not browser.execute_script(
            "return document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.42E01E\"');"):
        clip = tmp_path / "clip.webm"
        _webm_clip(clip, seconds=0.7)
    for name in ODD_NAMES:
        shutil.copyfile(clip, folder / f"{name}{clip.suffix}")
    proc = subprocess.run([sys.executable, "-m", "co2cli.cli", "localize", *sorted(folder.iterdir()), "--classes",
                           "kinetics", "--html", tmp_path / "page", "-q"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    browser.set_window_size(1280, 1000)
    browser.get((tmp_path / "page" / "index.html").as_uri())
    states = ("return Array.prototype.map.call(document.querySelectorAll('video'), function (v) {"
              " return [v.readyState, v.error ? v.error.code : 0]; });")
    _wait(browser, lambda d: all(r >= 1 or e for r, e in d.execute_script(states)), 15.0, "videos never loaded")
    got = browser.execute_script(states)
    assert len(got) == len(ODD_NAMES) and all(ready >= 1 and error == 0 for ready, error in got), got
    assert not [e for e in browser.find_elements("css selector", ".video-error") if e.is_displayed()]


def test_moved_video_says_so_in_the_page(browser, tmp_path):
    page = tmp_path / "index.html"
    page.write_text(render_review_page(sample_videos(src="gone/v_GGSY1Qvo990.mp4")), encoding="utf-8")
    browser.set_window_size(1280, 1000)
    browser.get(page.as_uri())
    _wait(browser, lambda d: d.find_element("id", "video-error-0").is_displayed(), 10.0,
          "no visible message for a video that cannot be loaded")
    assert "gone/v_GGSY1Qvo990.mp4" in browser.find_element("id", "video-error-0").text


def test_page_fits_a_400_px_window(browser, tmp_path):
    """No sideways scrolling at 400 px; the time readout and every lane label are shown whole (not clipped)."""
    videos = sample_videos(src="clip.mp4")  # not there: the player and its message both have to fit
    long_label = ReviewSegment("passing American football (not in game)", 0.5, 2.0, 4.0)
    videos[1] = ReviewVideo("features only.npy", None, 30.0, [*videos[1].segments, long_label])
    page = tmp_path / "index.html"
    page.write_text(render_review_page(videos), encoding="utf-8")
    browser.set_window_size(400, 900)
    browser.get(page.as_uri())
    width = browser.execute_script("return document.documentElement.clientWidth")
    assert width <= 400
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width
    clipped = browser.execute_script("""
        var out = [];
        document.querySelectorAll('.time-readout, .readout, .lane-label').forEach(function (el) {
          var r = el.getBoundingClientRect();
          if (el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1 || r.right > innerWidth)
            out.push([el.className, el.textContent, el.scrollWidth, el.clientWidth, el.scrollHeight,
                      el.clientHeight, r.right]);
        });
        return out;""")
    assert clipped == []
