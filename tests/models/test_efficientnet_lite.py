"""THE weights test: the shipped EfficientNet-Lite weights recognise a cat; random ones do not."""

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from tests.models.helpers import CHELSEA_CAT_CLASSES, one_torch_thread
from wildreid.errors import WeightsError
from wildreid.models import efficientnet_lite
from wildreid.models.cards import ModelCard
from wildreid.models.efficientnet_lite import (
    build_efficientnet_lite_classifier,
    lite_weights_path,
    map_by_position,
)
from wildreid.models.factory import load_model, model_card


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def chelsea_batch(card: ModelCard) -> torch.Tensor:
    """The cat photo stretched to the card's input size and normalised, (1, 3, H, W)."""
    h, w = card.input_size
    image = Image.fromarray(data.chelsea()).resize((w, h), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(card.mean).view(3, 1, 1)
    std = torch.tensor(card.std).view(3, 1, 1)
    return ((pixels - mean) / std).unsqueeze(0)


def cat_prediction(classifier: torch.nn.Module, card: ModelCard) -> tuple[int, float]:
    with torch.inference_mode():
        probabilities = classifier(chelsea_batch(card)).softmax(dim=-1)[0]
    top = int(probabilities.argmax())
    return top, float(probabilities[top])


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_pretrained_lite_classifies_the_cat_photo_as_a_cat(variant: int) -> None:
    card = model_card(f"efficientnet-lite{variant}")
    top, probability = cat_prediction(build_efficientnet_lite_classifier(variant), card)
    # Measured: lite0 285 (Egyptian cat) p=0.77, lite1 285 p=0.78, lite2 285 p=0.75.
    assert top in CHELSEA_CAT_CLASSES
    assert probability > 0.6


def test_random_lite0_does_not_classify_the_cat_photo_as_a_cat() -> None:
    torch.manual_seed(0)
    classifier = build_efficientnet_lite_classifier(0, pretrained=False)
    top, probability = cat_prediction(classifier, model_card("efficientnet-lite0"))
    assert not (top in CHELSEA_CAT_CLASSES and probability > 0.6)
    assert probability < 0.3  # measured 0.07 (class 428) with seed 0


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_load_lite_gives_eval_model_shape_and_file_sha256(variant: int) -> None:
    model = load_model(f"efficientnet-lite{variant}")
    file_bytes = lite_weights_path(variant).read_bytes()
    assert model.space.weights_sha256 == hashlib.sha256(file_bytes).hexdigest()
    assert model.card.weights_sha256 == model.space.weights_sha256
    assert not model.module.training
    assert all(not m.training for m in model.module.modules())
    size = {0: 224, 1: 240, 2: 260}[variant]
    assert model.space.input_size == (size, size)
    assert model.space.dim == 1280 and model.space.crop_mode == "stretch"
    with torch.inference_mode():
        out = model.module(torch.randn(2, 3, size, size))
    assert out.shape == (2, 1280)
    assert torch.isfinite(out).all()


def test_lite0_embedding_is_the_classifiers_pooled_pre_logits() -> None:
    model = load_model("efficientnet-lite0")
    classifier = build_efficientnet_lite_classifier(0)
    x = chelsea_batch(model.card)
    with torch.inference_mode():
        expected = classifier.forward_head(classifier.forward_features(x), pre_logits=True)
        torch.testing.assert_close(model.module(x), expected)


def test_lite_normalisation_is_the_tf_lite_one() -> None:
    card = model_card("efficientnet-lite0")
    np.testing.assert_allclose(card.mean, [127 / 255] * 3)
    np.testing.assert_allclose(card.std, [128 / 255] * 3)


def test_map_by_position_names_the_first_mismatch() -> None:
    target = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2)}
    good = {"x": torch.ones(2, 3), "y": torch.ones(2)}
    assert list(map_by_position(good, target, what="t")) == ["a.weight", "a.bias"]
    with pytest.raises(WeightsError, match=r"tensor #1 y \(3,\) does not fit a.bias \(2,\)"):
        map_by_position({"x": torch.ones(2, 3), "y": torch.ones(3)}, target, what="t")
    with pytest.raises(WeightsError, match="1 tensors in the file but 2"):
        map_by_position({"x": torch.ones(2, 3)}, target, what="t")


def test_lite_weights_of_another_variant_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="tensors in the file but"):
        load_model("efficientnet-lite0", weights=lite_weights_path(1))
    state = torch.load(lite_weights_path(0), weights_only=True)
    first = next(iter(state))
    state[first] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(WeightsError, match=rf"tensor #0 {first} \(1,\) does not fit conv_stem"):
        load_model("efficientnet-lite0", weights=bad)


def test_pinned_sha256_catches_a_different_package_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "efficientnet-lite0.pth"
    torch.save(torch.load(lite_weights_path(0), weights_only=True), copy)  # same tensors
    monkeypatch.setattr(efficientnet_lite, "lite_weights_path", lambda variant: copy)
    with pytest.raises(WeightsError, match="expected 579344248a93"):
        load_model("efficientnet-lite0")
    # The same file given explicitly is the user's choice: it loads, with its own sha256.
    model = load_model("efficientnet-lite0", weights=copy)
    assert model.space.weights_sha256 == hashlib.sha256(copy.read_bytes()).hexdigest()
    assert model.card.weights_source == f"file:{copy}"
