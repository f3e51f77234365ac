"""Training learns: a few epochs lift validation mAP well above the untrained network."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.test_trainer import tiny_config
from wildreid.config import load_config, to_dict
from wildreid.data.synthetic import SynthConfig, generate_synthetic
from wildreid.training.components import seed_all, validate
from wildreid.training.config import TrainConfig
from wildreid.training.distributed import init_distributed
from wildreid.training.setup import build_setup
from wildreid.training.trainer import train


@pytest.fixture(scope="module")
def easy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 identities x 8 images, 32 px, mild viewpoint changes, the body drawn."""
    root = tmp_path_factory.mktemp("learn") / "data"
    config = SynthConfig(
        identities=8,
        size_px=32,
        train_examples=8,
        gallery_examples=1,
        query_examples=1,
        max_rotation_deg=15.0,
        max_tilt_deg=10.0,
        supersample=1,
        body_visible=True,
    )
    generate_synthetic(root, config=config, workers=1)
    return root


@pytest.mark.parametrize(
    "losses",
    [
        [{"name": "triplet", "params": {"margin": 0.3, "mining": "hard"}}],
        [{"name": "arcface", "params": {"margin_rad": 0.1, "scale": 30.0}}],
    ],
    ids=["triplet", "arcface"],
)
def test_a_few_epochs_lift_validation_map(
    easy: Path, tmp_path: Path, losses: list[dict[str, object]]
) -> None:
    config = tiny_config(
        easy,
        "data.val_kind=closed",
        "data.val_fraction=0.25",
        "augment.blur_prob=0",
        "augment.random_erasing=0",
        "augment.resized_crop_scale=[1, 1]",
        "augment.rotation_deg=0",
        "augment.color_jitter=0",
        sampler={"p": 4, "k": 4, "batches_per_epoch": 4},
        schedule={"epochs": 8, "warmup_epochs": 1},
        optim={"lr": 1e-2},
    )
    raw = to_dict(config)
    raw["losses"] = losses
    config = load_config(raw, TrainConfig)
    seed_all(0)
    ctx = init_distributed("cpu")
    setup = build_setup(config, ctx, run_dir=tmp_path / "untrained")
    before = validate(
        setup.net, space=setup.space, data=setup.data, config=config, device=ctx.device
    )
    result = train(config, out_dir=tmp_path / "run")
    after = result.best_metrics
    print(losses[0]["name"], before["mAP"], after["mAP"], [r["val_mAP"] for r in result.history])
    assert after["mAP"] > before["mAP"] + 0.1
