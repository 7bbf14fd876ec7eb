"""The app in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by selenium.

On a real DDTI ultrasound image with the real LiteMedSAM weights: upload, one click inside the nodule, wait for the
overlay, switch to zero-shot and back (prompts kept), export the mask and check the downloaded file (original size,
Dice with the expert mask). The adapter is fitted in the fixture: a HyP-Adpt (decoder-only, r = 16) trained for
40 steps (AdamW, lr 5e-3, cosine) on this image's cached LiteMedSAM embedding, each step two random single positive
clicks inside the nodule (about 15 s on a quiet 2-core CPU); it tests the app's path from click to file, not
generalisation. Zero-shot LiteMedSAM gives an (almost) empty mask for one click; the fitted adapter gave Dice 0.72-0.75
for seven different clicks inside the nodule (2026-11-29), and the test asks for more than ``MIN_DICE``.

A screenshot is saved in the test's temp folder; set ``PEFT_MEDSA_SCREENSHOT=path.png`` to keep it (the README's
``docs/app.png`` comes from this test).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_data_or_skip

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
IMAGE = "27_1"
MIN_DICE = 0.6
TRAIN_STEPS = 40
CLICKS_PER_STEP = 2

pytestmark = [pytest.mark.real_data, pytest.mark.real_weights, pytest.mark.slow]


def _requirements():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(
            f"Chromium is missing ({CHROMIUM} / {CHROMEDRIVER}): apt-get install -y chromium chromium-driver "
            "(CI installs them in .ci/run)"
        )
    pytest.importorskip("selenium", reason="selenium is not installed (pip install 'peft-medsa[app]')")
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'peft-medsa[app]')")
    from peft_medsa.backbones.lite_medsam import find_lite_medsam_checkpoint

    try:
        find_lite_medsam_checkpoint()
    except FileNotFoundError as err:
        pytest.skip(f"LiteMedSAM weights absent: {err}")
    folder = shared_data_or_skip() / "ddti_thyroid"
    return folder / "images" / f"{IMAGE}.png", folder / "masks" / f"{IMAGE}.gif"


def _fit_adapter(image_path: Path, mask: np.ndarray, folder: Path) -> None:
    """A HyP-Adpt fitted on one image's cached embedding with random single clicks (see the module docstring)."""
    import torch
    from peft import get_peft_model

    from peft_medsa import HyPAdptConfig
    from peft_medsa.backbones import convert_lite_medsam
    from peft_medsa.inference.predictor import MedSAPredictor
    from peft_medsa.prompts import positive_points
    from peft_medsa.training.losses import dice_bce_loss

    torch.manual_seed(0)
    model = get_peft_model(convert_lite_medsam(), HyPAdptConfig(r=16))
    predictor = MedSAPredictor(model)
    predictor.set_image(image_path)
    embeddings, scale = predictor.image_embeddings.detach(), np.asarray(predictor.resize_info.scale_xy)
    target = torch.as_tensor(mask, dtype=torch.float32)[None, None].expand(CLICKS_PER_STEP, 1, *mask.shape)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, TRAIN_STEPS)
    labels = torch.ones(1, CLICKS_PER_STEP, 1, dtype=torch.long)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(TRAIN_STEPS):  # a batch of single clicks, each its own prompt: (1, P, 1, 2)
        points = torch.as_tensor(positive_points(mask, CLICKS_PER_STEP, rng) * scale, dtype=torch.float32)
        outputs = model(image_embeddings=embeddings, input_points=points[None, :, None], input_labels=labels,
                        multimask_output=False)
        loss = dice_bce_loss(predictor.postprocess(outputs.pred_masks[0]), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.save_pretrained(folder)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    image_path, mask_path = _requirements()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import torch

    from peft_medsa.app import AppController, load_segmenter
    from peft_medsa.app.launch import launch_app
    from peft_medsa.app.ui import build_app
    from peft_medsa.data.io import read_mask

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared: one thread is several times faster than two under load
    mask = read_mask(mask_path) > 127
    adapter = tmp_path_factory.mktemp("ddti-adapter")
    _fit_adapter(image_path, mask, adapter)
    app = build_app(AppController(load_segmenter("lite-medsam", [f"ddti={adapter}"])))
    address = launch_app(app, _free_port(), block=False)
    yield address, image_path, mask
    app.close()
    torch.set_num_threads(threads)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads)})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    yield driver, downloads
    driver.quit()


def test_click_switch_adapter_and_export_in_chromium(served_app, browser, tmp_path):
    from PIL import Image
    from selenium.common.exceptions import (
        ElementClickInterceptedException,
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    address, image_path, mask = served_app
    driver, downloads = browser
    wait = WebDriverWait(driver, 120)

    def message() -> str:
        return driver.find_element(By.CSS_SELECTOR, "#message textarea").get_attribute("value")

    def click_when_free(selector: str) -> None:  # a busy component is covered by Gradio's progress animation
        def attempt(d) -> bool:
            try:
                d.find_element(By.CSS_SELECTOR, selector).click()
            except ElementClickInterceptedException:
                return False
            return True

        wait.until(attempt)

    def pick_adapter(name: str) -> None:
        def attempt(d) -> bool:  # retried until the page shows the switch (a busy page may drop the click)
            if message().startswith(f"adapter: {name};"):
                return True
            try:
                d.find_element(By.CSS_SELECTOR, "#adapter input").click()
                options = d.find_elements(By.CSS_SELECTOR, "#adapter li[role=option]")
                next((o for o in options if o.get_attribute("aria-label") == name), None).click()
            except (AttributeError, ElementClickInterceptedException, StaleElementReferenceException):
                pass
            return False

        try:
            WebDriverWait(driver, 120, poll_frequency=5).until(attempt)
        except TimeoutException:
            driver.save_screenshot(str(tmp_path / "failure.png"))
            pytest.fail(f"adapter {name!r} not shown; message: {message()!r}; screenshot {tmp_path / 'failure.png'}")

    driver.get(address)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#message textarea") and message() == "open an image or a "
               "volume" and d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))  # the page is live
    driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(image_path))
    wait.until(lambda d: "opened" in message())
    assert message() == f"opened {image_path.name}: image 300 x 300 px"

    image = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#canvas img"))
    first_overlay = image.get_attribute("src")
    width, height, natural_w, natural_h = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.width, r.height, arguments[0].naturalWidth, "
        "arguments[0].naturalHeight];",
        image,
    )
    assert (natural_w, natural_h) == mask.shape[::-1]
    rows, cols = np.nonzero(mask)
    x, y = float(np.median(cols)), float(np.median(rows))
    assert mask[int(y), int(x)]  # inside the nodule
    scale = min(width / natural_w, height / natural_h, 1.0)
    ActionChains(driver).move_to_element_with_offset(
        image, round((x - natural_w / 2) * scale), round((y - natural_h / 2) * scale)
    ).click().perform()
    wait.until(lambda d: "(ddti)" in message() and "1 click(s)" in message())
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#canvas img").get_attribute("src") != first_overlay)
    adapted_area = int(message().split("mask ")[1].split(" px")[0])
    candidates = driver.find_element(By.ID, "candidates").text
    assert "single-mask output" in candidates and "candidate 3 (predicted IoU" in candidates

    pick_adapter("none: zero-shot")
    assert "1 click(s)" in message()  # the prompt is kept
    zero_shot_area = int(message().split("mask ")[1].split(" px")[0])
    assert zero_shot_area < 0.2 * mask.sum() < adapted_area

    pick_adapter("ddti")
    click_when_free("#export-mask")
    link = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#mask-file a"))
    link[0].click()
    target = downloads / f"{IMAGE}_mask.png"
    wait.until(lambda d: target.exists() and not list(downloads.glob("*.crdownload")))
    time.sleep(0.2)
    exported = np.asarray(Image.open(target))
    assert exported.shape == mask.shape  # the original size, not the model's 256 x 256
    predicted = exported > 127
    assert int(predicted.sum()) == adapted_area
    dice = 2 * (predicted & mask).sum() / (predicted.sum() + mask.sum())
    assert dice > MIN_DICE, f"Dice {dice:.3f} with the fitted adapter"

    screenshot = tmp_path / "app.png"
    driver.execute_script("window.scrollTo(0, 0);")
    driver.save_screenshot(str(screenshot))
    assert Image.open(screenshot).size[0] >= 1000
    if os.environ.get("PEFT_MEDSA_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["PEFT_MEDSA_SCREENSHOT"])
