"""A strategy is only its hooks: a toy one registered here, and agreement-classes, through train, gather,
resume and ``common.predict``; and no module outside the strategies names a strategy.

The toy strategy is defined in this file, not in the package: one network with a 2-class softmax
(background, the union of the experts' masks) whose outputs are saved under names of its own, read back
as one member (the union's probability), two rules and one sample.
"""

import ast
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import SPEC, TINY, make_toy_root

from common.evaluation.predictions import prediction_path, read_prediction
from common.runs import predict as predicting
from common.runs.pipeline import run_task
from common.strategies import STRATEGIES, Network, Strategy, agreement_maps, register

ROOT = Path(__file__).resolve().parents[2]


def toy_loss(y_true, y_pred):
    """Squared error of the foreground channel: enough to train the toy."""
    return keras.ops.mean(keras.ops.square(y_pred[..., 1:] - y_true), axis=(1, 2, 3))


class Union(Strategy):
    name = "toy-union"
    summary = "a test's toy: the union of the experts' masks as a 2-class softmax"
    activation = "softmax"
    members_are_experts = False
    map_rule = "foreground"

    def networks(self, experts, seed, settings=None):
        return [Network(self.name, seed, tuple(experts), False, ("background", "foreground"))]

    def output_channels(self, target_channels):
        return 2

    def targets(self, cases, network):
        chosen = [c for c in cases if c.masks]
        if not chosen:
            return None, None
        union = np.stack([np.max(list(c.masks.values()), axis=0) for c in chosen])
        return (np.stack([c.image for c in chosen]), union), None

    def loss(self, loss, smooth):
        return toy_loss, []

    def ensemble_label(self, members):
        return "the toy's union"

    def member_maps(self, network, outputs):
        return [outputs[1]]

    def rule_maps(self, network, outputs):
        return {"foreground": outputs[1], "not-background": 1.0 - outputs[0]}

    def samples(self, network, outputs):
        return [outputs[1] >= 0.5]

    def sample_names(self, network):
        return ["union"]


@pytest.fixture(scope="module")
def toy_strategy():
    register(Union())
    yield STRATEGIES["toy-union"]
    del STRATEGIES["toy-union"]


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return make_toy_root(tmp_path_factory.mktemp("toy"))


def saved_outputs(run: Path, case_id: str, network: str, names: tuple[str, ...]) -> list[np.ndarray]:
    return [read_prediction(run / "predictions" / "toy" / case_id / network / f"task01_{n}.nii.gz") for n in names]


@pytest.mark.parametrize(
    "name, saved",
    [("toy-union", ("background", "foreground")), ("agreement-classes", ("class0", "class1", "class2"))],
)
def test_a_strategy_through_train_gather_resume_and_predict(toy_strategy, toy_root, tmp_path, name, saved):
    run = tmp_path / "run"
    lines = []
    results = run_task(
        SPEC, TINY.replace(epochs=1, strategy=name), 1, toy_root, seed=2, out=run, verbose=0, plots=False,
        log=lines.append,
    )  # fmt: skip
    learner = STRATEGIES[name]
    rules = learner.rule_maps(None, saved_outputs(run, results["cases"][0], name, saved))
    assert results["strategy"] == name and results["map_rule"] == learner.map_rule
    assert set(results["map_rules"]) == set(rules) and results["per_expert"] == {}
    assert results["uncertainty"]["samples"] == learner.sample_names(learner.networks([1, 2], 0)[0])
    assert results["uncertainty"]["mean"]["ged"] is not None
    assert f"QUBIQ score by map rule (the map: {learner.map_rule}): " in lines[-1]

    # the gather's map is the chosen rule of the saved outputs, and each rule is scored from them
    for case_id in results["cases"]:
        outputs = saved_outputs(run, case_id, name, saved)
        ensemble = read_prediction(prediction_path(run / "predictions", "toy", case_id, 1))
        assert np.allclose(ensemble, learner.rule_maps(None, outputs)[learner.map_rule], atol=1e-6)
        if name == "agreement-classes":
            total = sum(outputs)  # a softmax inside the network's crop; no prediction (0) outside it
            assert np.all(np.isclose(total, 1.0, atol=1e-5) | (total == 0.0)) and np.any(total > 0.5)
            assert set(rules) == set(agreement_maps(outputs))

    # resume: a saved output lost (a run stopped while writing maps) is predicted again, and the gather agrees
    (run / "results.json").unlink()
    lost = run / "predictions" / "toy" / results["cases"][0] / name / f"task01_{saved[-1]}.nii.gz"
    lost.unlink()
    again = run_task(
        SPEC, TINY.replace(epochs=1, strategy=name), 1, toy_root, seed=2, out=run, resume=True, verbose=0,
        plots=False, log=lines.append,
    )  # fmt: skip
    assert lost.is_file() and again["score"] == pytest.approx(results["score"], abs=1e-6)
    assert any("reusing its model to write its maps" in line for line in lines)

    # common.predict applies the network the same way: its held-out maps are the run's, to 1e-6
    out = tmp_path / "predicted"
    record = predicting.predict(run, toy_root, out, log=None, tta="none")
    assert [n["members"] for n in record["networks"]] == [[name]]
    for case_id in results["cases"]:
        mine = next(out.rglob(f"{case_id}/task01.nii.gz"))
        theirs = prediction_path(run / "predictions", "toy", case_id, 1)
        assert np.allclose(read_prediction(mine), read_prediction(theirs), atol=1e-6)


NAMES_OUTSIDE_THE_STRATEGIES = [ROOT / "common", *sorted(ROOT.glob("*.py"))]


def string_constants(path: Path):
    """Every string literal of a module but its docstrings, with its line."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_module_outside_the_strategies_names_a_strategy():
    names = [n for n in STRATEGIES if n != "toy-union"]
    files = [p for place in NAMES_OUTSIDE_THE_STRATEGIES for p in ([place] if place.is_file() else place.rglob("*.py"))]
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in files
        if path.name != "strategies.py"
        for line, text in string_constants(path)
        if any(name in text for name in names)
    ]
    assert len(files) > 40 and not found, "\n".join(found)


@pytest.mark.backend
def test_prob_unet_through_train_gather_resume_and_predict(toy_root, tmp_path):
    """Its samples saved per case, the map their mean, GED over them; resumed; predicted with the same
    samples at two batch sizes (the noise follows the seed and each image's place, not the batch)."""
    settings = TINY.replace(epochs=1, strategy="prob-unet", samples=3, latent_dim=2)
    run, lines = tmp_path / "run", []
    results = run_task(SPEC, settings, 1, toy_root, seed=2, out=run, verbose=0, plots=False, log=lines.append)
    names = ("sample01", "sample02", "sample03")
    assert results["uncertainty"]["samples"] == [f"prob-unet {n}" for n in names]
    assert results["uncertainty"]["per_case"][results["cases"][0]]["samples"] == 3
    assert "GED" in lines[-1] and "(3 samples)" in lines[-1]
    for case_id in results["cases"]:
        outputs = saved_outputs(run, case_id, "prob-unet", names)
        ensemble = read_prediction(prediction_path(run / "predictions", "toy", case_id, 1))
        assert np.allclose(ensemble, np.mean(outputs, axis=0), atol=1e-6)
        assert not np.allclose(outputs[0], outputs[1])  # other draws of z, other maps

    (run / "results.json").unlink()
    lost = run / "predictions" / "toy" / results["cases"][0] / "prob-unet" / "task01_sample03.nii.gz"
    lost.unlink()
    again = run_task(
        SPEC, settings, 1, toy_root, seed=2, out=run, resume=True, verbose=0, plots=False, log=lines.append
    )
    assert lost.is_file() and again["score"] == pytest.approx(results["score"], abs=1e-6)  # the same samples again

    maps = {}
    for batch_size in (1, 3):
        out = tmp_path / f"predicted-{batch_size}"
        predicting.predict(run, toy_root, out, log=None, tta="none", batch_size=batch_size, save_members=True)
        maps[batch_size] = {p.relative_to(out): read_prediction(p) for p in sorted(out.rglob("task01.nii.gz"))}
    assert maps[1].keys() == maps[3].keys() and len(maps[1]) >= 7
    assert all(np.allclose(maps[1][k], maps[3][k], atol=1e-6) for k in maps[1])
    members = sorted(p.name for p in (tmp_path / "predicted-1" / "members").iterdir())
    assert members == list(names)  # --save-members: the samples
