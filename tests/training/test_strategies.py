"""The three strategies: their targets, losses, the one network they train, and what they write."""

import json

import keras
import numpy as np
import pytest
from helpers import SPEC, TINY, gradient, make_toy_root

from common.data.prepared import PreparedCase
from common.runs.folder import network_folder
from common.runs.pipeline import run_task
from common.spec import ConfigError, Settings
from common.strategies import STRATEGIES, Network, register, strategy
from common.training.augmentation import apply_transforms
from common.training.losses import MultiHeadLoss, SoftDiceLoss, SoftLabelLoss, multi_head_dice
from common.training.models import build_unet


def case(masks: dict[int, float]) -> PreparedCase:
    """A 2 x 2 case whose expert ``e``'s mask is the constant ``masks[e]``."""
    image = np.zeros((2, 2, 1), np.float32)
    return PreparedCase(None, image, {e: np.full((2, 2, 1), v, np.float32) for e, v in masks.items()}, None, None)


CASES = [case({1: 1.0, 2: 0.0, 3: 1.0}), case({1: 0.0, 3: 1.0}), case({2: 1.0})]


def networks(name, experts, seed):
    return [(n.name, network_folder(n), n.seed, n.heads) for n in strategy(name).networks(experts, seed)]


def test_networks_of_each_strategy():
    assert networks("per-expert", [1, 3], 10) == [
        ("seg01", "experts/seg01", 11, (1,)),
        ("seg03", "experts/seg03", 13, (3,)),
    ]
    assert networks("multi-head", [1, 3], 10) == [("multi-head", "network", 10, (1, 3))]
    assert networks("soft-label", [1, 3], 10) == [("soft-label", "network", 10, (None,))]
    assert networks("agreement-classes", [1, 3], 10) == [("agreement-classes", "network", 10, (1, 3))]


def test_registry_names_every_strategy_once():
    from common.spec import STRATEGIES as SETTINGS_CHOICES

    assert SETTINGS_CHOICES is STRATEGIES  # one registry: a strategy registered later is a choice too
    assert tuple(STRATEGIES)[:4] == ("per-expert", "multi-head", "soft-label", "agreement-classes")
    assert all(s.name == name for name, s in STRATEGIES.items())
    with pytest.raises(ConfigError, match="one of per-expert, multi-head, soft-label, agreement-classes"):
        strategy("x")
    with pytest.raises(ValueError, match="needs a new name"):
        register(STRATEGIES["per-expert"])


def targets(name, heads):
    return strategy(name).targets(CASES, Network("n", 0, tuple(heads), name == "per-expert"))


def test_targets_per_expert():
    (images, masks), available = targets("per-expert", [2])
    assert len(images) == 2 and available is None  # case 2 lacks expert 2
    assert masks[:, 0, 0, 0].tolist() == [0.0, 1.0]


def test_targets_multi_head():
    (images, masks), available = targets("multi-head", [1, 2])
    assert masks.shape == (3, 2, 2, 2)
    assert masks[:, 0, 0, :].tolist() == [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
    assert available.tolist() == [[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]  # a missing mask is flagged, not drawn


def test_targets_soft_label():
    (images, targets_), available = targets("soft-label", [None])
    assert targets_.shape == (3, 2, 2, 1) and available is None
    assert targets_[:, 0, 0, 0] == pytest.approx([2 / 3, 1 / 2, 1.0])  # the mean of the masks each case has


def test_no_case_qualifies():
    assert targets("per-expert", [4]) == (None, None)
    assert targets("multi-head", [4, 5]) == (None, None)


def heads_targets(masks, available):
    """(B, H, W, E) masks and (B, E) flags as the multi-head loss reads them."""
    masks = np.asarray(masks, np.float32)
    flags = np.broadcast_to(np.asarray(available, np.float32)[:, None, None, :], masks.shape)
    return np.concatenate([masks, flags], axis=-1)


def test_multi_head_loss_skips_missing_masks():
    g = np.zeros((1, 2, 2, 2), np.float32)
    g[0, 0, :, 0] = 1  # head 1: top row
    g[0, :, 0, 1] = 1  # head 2: left column
    p = np.full((1, 2, 2, 2), 0.5, np.float32)
    # head 1 alone: soft Dice (2 * 1 + 1) / (2 + 2 + 1) = 0.6 -> loss 0.4; head 2 is the same by symmetry
    one = SoftDiceLoss()(g[..., :1], p[..., :1]).numpy()
    assert one == pytest.approx(0.4)
    assert MultiHeadLoss()(heads_targets(g, [[1, 0]]), p).numpy() == pytest.approx(0.4)
    assert MultiHeadLoss()(heads_targets(g, [[1, 1]]), p).numpy() == pytest.approx(0.4)
    p[..., 1] = 1.0  # head 2 now predicts everything: (2 * 2 + 1) / (2 + 4 + 1) = 5/7 -> loss 2/7
    assert MultiHeadLoss()(heads_targets(g, [[1, 1]]), p).numpy() == pytest.approx((0.4 + 2 / 7) / 2)
    assert MultiHeadLoss()(heads_targets(g, [[1, 0]]), p).numpy() == pytest.approx(0.4)  # head 2 ignored
    assert MultiHeadLoss()(heads_targets(g, [[0, 0]]), p).numpy() == pytest.approx(0.0)


def test_multi_head_loss_gives_no_gradient_to_a_missing_head():
    g = heads_targets(np.ones((1, 2, 2, 2)), [[1, 0]])
    p = np.full((1, 2, 2, 2), 0.3, np.float32)
    for loss in (MultiHeadLoss("dice"), MultiHeadLoss("dice+bce")):
        grad = gradient(lambda v, loss=loss: loss(g, v), p)
        assert np.all(grad[..., 1] == 0) and np.all(grad[..., 0] < 0)


def test_multi_head_loss_refuses_wrong_targets():
    with pytest.raises(ValueError, match="must hold 2 x 2 channels"):
        MultiHeadLoss()(np.zeros((1, 2, 2, 3), np.float32), np.zeros((1, 2, 2, 2), np.float32))
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        MultiHeadLoss("focal")


def test_multi_head_dice():
    g = np.zeros((1, 2, 2, 2), np.float32)
    g[0, 0, :, 0] = 1
    p = np.zeros((1, 2, 2, 2), np.float32)
    p[0, 0, 0, 0] = 1  # head 1: 2 * 1 / (2 + 1) = 2/3; head 2: both empty -> 1
    assert multi_head_dice(heads_targets(g, [[1, 1]]), p).numpy() == pytest.approx([(2 / 3 + 1) / 2])
    assert multi_head_dice(heads_targets(g, [[1, 0]]), p).numpy() == pytest.approx([2 / 3])


@pytest.mark.parametrize("g", [0.0, 1 / 3, 0.5, 0.8])
def test_soft_label_loss_is_minimised_at_the_target(g):
    target = np.full((1, 2, 2, 1), g, np.float32)
    grid = np.linspace(0.01, 0.99, 99)
    values = [SoftLabelLoss()(target, np.full((1, 2, 2, 1), p, np.float32)).numpy() for p in grid]
    assert grid[int(np.argmin(values))] == pytest.approx(min(max(g, 0.01), 0.99), abs=0.006)
    soft_dice_values = [SoftDiceLoss()(target, np.full((1, 2, 2, 1), p, np.float32)).numpy() for p in grid]
    if 0 < g < 1:  # soft Dice pushes away from g (module docstring of common.training.losses)
        assert abs(grid[int(np.argmin(soft_dice_values))] - g) > 0.1


def test_soft_label_loss_hand_computed():
    """g = (0.5, 0, 1, 0), p = (0.5, 0.25, 0.75, 0.25): Dice term 1 - 3 / 3.1875; BCE (ln 2 + 3 ln 4/3) / 4."""
    g = np.array([0.5, 0.0, 1.0, 0.0], np.float32).reshape(1, 2, 2, 1)
    p = np.array([0.5, 0.25, 0.75, 0.25], np.float32).reshape(1, 2, 2, 1)
    dice = 1 - (2 * 1.0 + 1) / (0.9375 + 1.25 + 1)  # sum(pg) = 1, sum(p^2) = 0.9375, sum(g^2) = 1.25, smooth 1
    bce = (np.log(2) + 3 * np.log(4 / 3)) / 4
    assert SoftLabelLoss()(g, p).numpy() == pytest.approx(dice, rel=1e-5)
    assert SoftLabelLoss(bce_weight=1)(g, p).numpy() == pytest.approx(dice + bce, rel=1e-5)
    assert SoftLabelLoss()(g, g).numpy() == pytest.approx(0.0, abs=1e-6)
    empty = np.zeros_like(g)  # an empty target: 1 - 1 / (sum(p^2) + 1) pushes towards an empty map
    assert SoftLabelLoss()(empty, p).numpy() == pytest.approx(1 - 1 / (0.9375 + 1), rel=1e-5)
    assert SoftLabelLoss()(empty, empty).numpy() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="bce_weight must be >= 0"):
        SoftLabelLoss(bce_weight=-1)


def test_soft_label_loss_has_no_gradient_at_the_target():
    """A graded, non-uniform target: both terms are stationary at p = g, pixel by pixel."""
    g = np.array([0.0, 1 / 3, 2 / 3, 1.0, 0.5, 0.2], np.float32).reshape(1, 2, 3, 1)
    grad = gradient(lambda v: SoftLabelLoss(bce_weight=1)(g, v), np.clip(g, 1e-3, 1 - 1e-3)).ravel()
    inner = (g.ravel() > 0) & (g.ravel() < 1)  # at 0 and 1 the clip moves p off the target
    assert np.abs(grad[inner]).max() < 1e-4


def test_soft_targets_survive_augmentation():
    image = np.zeros((1, 4, 4, 1), np.float32)
    soft = np.full((1, 4, 4, 1), 0.5, np.float32)
    identity = np.array([[1, 0, 0, 0, 1, 0, 0, 0]], np.float32)
    assert np.allclose(apply_transforms(image, soft, identity, binary=False)[1], 0.5)
    assert np.allclose(apply_transforms(image, soft, identity)[1], 1.0)  # binary: >= 0.5


def test_heads_share_all_but_the_last_layer():
    one = build_unet((16, 16, 1), depth=2, base_filters=4, outputs=1)
    three = build_unet((16, 16, 1), depth=2, base_filters=4, outputs=3)
    assert three.output_shape == (None, 16, 16, 3)
    assert three.count_params() - one.count_params() == 2 * (4 + 1)  # two more 1x1 heads: 4 weights + bias
    keras.backend.clear_session()


def test_soft_label_refuses_another_loss():
    with pytest.raises(ConfigError, match="soft-label trains on the mean expert mask with a squared-denominator"):
        Settings(input_size=16, depth=2, strategy="soft-label", loss="dice+bce")


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return make_toy_root(tmp_path_factory.mktemp("toy"))


@pytest.mark.parametrize("strategy", ["multi-head", "soft-label"])
def test_one_network_per_run(toy_root, tmp_path, strategy):
    run = tmp_path / strategy
    lines = []
    results = run_task(
        SPEC, TINY.replace(epochs=1, strategy=strategy), 1, toy_root, out=run, verbose=0, log=lines.append
    )
    assert not (run / "experts").exists()
    assert sorted(p.name for p in (run / "network").iterdir()) == ["model.keras", "result.json", "training_log.csv"]
    assert list(results["networks"]) == [strategy] and results["strategy"] == strategy
    model = keras.saving.load_model(run / "network" / "model.keras")
    assert model.output_shape[-1] == (2 if strategy == "multi-head" else 1)
    keras.backend.clear_session()
    maps = sorted(p.relative_to(run / "predictions" / "toy").as_posix() for p in (run / "predictions").rglob("*.gz"))
    held = results["cases"]
    if strategy == "multi-head":  # each head's map, as the per-expert networks' maps
        assert f"{held[0]}/experts/task01_seg02.nii.gz" in maps and set(results["per_expert"]) == {"seg01", "seg02"}
        assert results["uncertainty"]["mean"]["ged"] is not None
        assert lines[-1].splitlines()[-1].startswith("QUBIQ score (mean of 2 expert head(s) of one network): ")
    else:
        assert not any("/experts/" in m for m in maps) and results["per_expert"] == {}
        assert results["uncertainty"]["mean"]["ged"] is None and results["uncertainty"]["mean"]["ece"] is not None
        assert "GED and Hungarian IoU: not applicable" in lines[-1]
    assert f"{held[0]}/task01.nii.gz" in maps
    saved = json.loads((run / "results.json").read_text())
    assert set(saved["uncertainty"]["per_case"]) == set(held)
    assert (run / "plots" / "training_curves.png").is_file()
