"""A run split into jobs (one per expert, --train-only) into one run folder, then gathered without TensorFlow."""

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import SPEC, TINY, make_toy_root

from common import cli
from common.evaluation.predictions import prediction_path, read_prediction
from common.gather import gather_run
from common.gather import main as gather_main
from common.runs.crossval import RESULTS_FILE as CV_RESULTS
from common.runs.crossval import run_cross_validation
from common.runs.folder import claim_config
from common.runs.jobs import job_command
from common.runs.pipeline import run_task
from common.score import score_folder
from common.spec import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = TINY.replace(epochs=1)
#: What a one-process run writes after its experts: removed to gather a one-process run's maps again.
SCORED_OUTPUTS = ("results.json", "dice_matrix.csv", "plots")


def quiet(_line):
    pass


def job(root, run, experts, settings=SETTINGS, lines=None, **kwargs):
    log = lines.append if lines is not None else quiet
    return run_task(
        SPEC, settings, 1, root, experts=experts, seed=3, out=run, verbose=0, log=log, train_only=True, **kwargs
    )


def snapshot(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its modification time (ns): what a no-op must leave as it was."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return make_toy_root(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def jobs_run(toy_root, tmp_path_factory):
    """Two jobs, experts 1 and 2, into one folder; ``partial`` is a copy taken after the first job."""
    base = tmp_path_factory.mktemp("jobs")
    run, partial = base / "run", base / "partial"
    first, second = [], []
    reports = [job(toy_root, run, [1], lines=first)]
    shutil.copytree(run, partial)
    reports.append(job(toy_root, run, [2], lines=second))
    return {"run": run, "partial": partial, "reports": reports, "lines": (first, second)}


@pytest.fixture(scope="module")
def one_process(toy_root, tmp_path_factory):
    """The jobs' plan (seed 3) run in one process, per strategy: trained once, for the tests that only read it."""
    made = {}

    def run(strategy: str = "per-expert") -> tuple[Path, dict]:
        if strategy not in made:
            out = tmp_path_factory.mktemp("whole") / strategy
            settings = SETTINGS.replace(strategy=strategy)
            made[strategy] = (
                out,
                run_task(SPEC, settings, 1, toy_root, seed=3, out=out, verbose=0, log=quiet, plots=False),
            )
        return made[strategy]

    return run


def test_jobs_write_only_their_experts(jobs_run):
    run = jobs_run["run"]
    first, second = jobs_run["reports"]
    assert first["trained"] == ["seg01"] and first["missing"] == ["seg02"]
    assert second["trained"] == ["seg02"] and second["missing"] == [] and second["finished"] == ["seg01", "seg02"]
    assert second["gather"] == f"python -m common.gather {run}"
    assert jobs_run["lines"][1][-1].startswith("gather now with: python -m common.gather")
    assert jobs_run["lines"][0][-2].endswith("1 of 2 planned experts of " + str(run) + " finished, not yet: seg02")
    config = json.loads((run / "config.json").read_text())
    assert config["jobs"] is True and config["experts"] == [1, 2] and config["predict_test"] is False
    assert set(config["split"]["per_expert"]) == {"seg01", "seg02"}
    for name in ("seg01", "seg02"):
        for file in ("model.keras", "training_log.csv", "result.json"):
            assert (run / "experts" / name / file).is_file()
    assert sorted(p.name for p in (run / "jobs").iterdir()) == ["seg01.log", "seg02.log"]
    # nothing shared: no results, no ensemble map, no run.log, no plots, no temporary files
    assert not (run / "results.json").exists() and not (run / "run.log").exists() and not (run / "plots").exists()
    assert not list((run / "predictions").rglob("task01.nii.gz"))
    assert not list(run.rglob(".*.tmp")) and not list(run.rglob(".write-test*"))
    held, validation = config["split"]["held_out"], config["split"]["validation"]
    for case_id in held + validation:
        for expert in (1, 2):
            assert prediction_path(run / "predictions", "toy", case_id, 1, expert).is_file()


def test_gather_scores_the_saved_maps(jobs_run, toy_root):
    run = jobs_run["run"]
    lines = []
    results = gather_run(run, log=lines.append)
    saved = json.loads((run / "results.json").read_text())
    assert saved["score"] == results["score"] and 0 <= saved["score"] <= 1 and saved["gathered"] is True
    held = saved["cases"]
    split = json.loads((run / "config.json").read_text())["split"]
    assert set(saved["per_case"]) == set(held) == set(split["held_out"])
    assert set(saved["uncertainty"]["per_case"]) == set(held) and saved["uncertainty"]["samples"] == ["seg01", "seg02"]
    assert saved["uncertainty"]["mean"]["ged"] is not None
    assert set(saved["per_expert"]) == {"seg01", "seg02"} and saved["per_expert"]["seg01"]["best_epoch"] == 1
    assert set(saved["networks"]) == {"seg01", "seg02"} and saved["strategy"] == "per-expert"
    # the ensemble maps (held-out and validation cases) are the mean of the experts' saved maps
    for case_id in [*held, *saved["predictions"]["validation"]]:
        members = [read_prediction(prediction_path(run / "predictions", "toy", case_id, 1, e)) for e in (1, 2)]
        ensemble = read_prediction(prediction_path(run / "predictions", "toy", case_id, 1))
        np.testing.assert_allclose(ensemble, np.mean(members, axis=0), rtol=0, atol=1e-7)
    # the standalone scorer on the folder's predictions gives the same score
    rescored = score_folder(run / "predictions", toy_root, "toy", "train", 1)
    assert rescored["score"] == saved["score"] and rescored["dice"] == saved["dice"]
    for name in ("dice_matrix.csv", "plots/dice_vs_threshold.png", "plots/training_curves.png"):
        assert (run / name).is_file(), name
    for case_id in held:
        assert (run / "plots" / f"case_{case_id}.png").is_file()
    log_text = (run / "run.log").read_text()
    assert "seg01 epoch 1/1" in log_text and "seg02 epoch 1/1" in log_text  # the jobs' logs, then the table
    assert log_text.rstrip().splitlines()[-1].split(" ", 1)[1].startswith("QUBIQ score (ensemble of 2 expert")
    assert lines[-1].splitlines()[-1] == f"QUBIQ score (ensemble of 2 expert network(s)): {saved['score']:.4f}"
    # gathering again changes nothing
    before = snapshot(run)
    assert gather_run(run, log=quiet)["score"] == saved["score"]
    assert snapshot(run) == before


def test_gather_imports_no_tensorflow(jobs_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(jobs_run["partial"], run)
    shutil.copytree(jobs_run["run"] / "experts" / "seg02", run / "experts" / "seg02")
    for path in (jobs_run["run"] / "predictions").rglob("task01_seg02.nii.gz"):
        target = run / path.relative_to(jobs_run["run"])
        shutil.copy2(path, target)
    code = (
        "import sys; from common.gather import main; main([sys.argv[1], '--no-plots']); "
        "print('imported:', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(run)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().splitlines()[-1] == "imported: []"
    assert "QUBIQ score (ensemble of 2 expert network(s))" in result.stdout
    assert (run / "results.json").is_file() and not (run / "plots").exists()


def test_gather_names_a_missing_expert(jobs_run):
    partial = jobs_run["partial"]
    before = snapshot(partial)
    with pytest.raises(ConfigError) as caught:
        gather_run(partial, log=quiet)
    message = str(caught.value)
    assert "1 of 2 planned experts not finished" in message
    assert "seg02: no " in message and "result.json" in message and "seg01:" not in message
    assert "--train-only --experts 2" in message.splitlines()[-1]
    assert snapshot(partial) == before


def test_gather_names_missing_maps(jobs_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(jobs_run["partial"], run)
    victim = next((run / "predictions").rglob("task01_seg01.nii.gz"))
    victim.unlink()
    with pytest.raises(ConfigError, match=r"seg01: trained, but 1 of \d+ maps are missing, e.g. .*task01_seg01"):
        gather_run(run, log=quiet)


def test_a_job_with_another_setting_is_refused(jobs_run, toy_root):
    partial = jobs_run["partial"]
    before = snapshot(partial)
    with pytest.raises(ConfigError, match=r"another configuration \(settings.epochs: 1 -> 2\)"):
        job(toy_root, partial, [2], settings=SETTINGS.replace(epochs=2))
    with pytest.raises(ConfigError, match=r"seed: 3 -> 4"):
        run_task(SPEC, SETTINGS, 1, toy_root, experts=[2], seed=4, out=partial, verbose=0, log=quiet, train_only=True)
    assert snapshot(partial) == before


def test_rerunning_a_finished_job_retrains_nothing(jobs_run, toy_root, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(jobs_run["partial"], run)
    before = snapshot(run)
    lines = []
    report = job(toy_root, run, [1], lines=lines)
    assert report["trained"] == ["seg01"] and report["missing"] == ["seg02"]
    assert any("seg01: already trained and predicted" in line for line in lines)
    after = snapshot(run)
    assert {k: v for k, v in after.items() if not k.startswith("jobs/")} == {
        k: v for k, v in before.items() if not k.startswith("jobs/")
    }


def test_gathering_a_one_process_run_reproduces_its_score(one_process, tmp_path):
    """The same networks give the same score in one process and gathered from their saved maps."""
    whole, results = one_process()
    copy = tmp_path / "copy"
    shutil.copytree(whole, copy, ignore=shutil.ignore_patterns(*SCORED_OUTPUTS, "task01.nii.gz"))
    assert not list((copy / "predictions").rglob("task01.nii.gz"))
    gathered = gather_run(copy, log=quiet, plots=False)
    assert gathered["score"] == pytest.approx(results["score"], abs=1e-6)
    np.testing.assert_allclose(gathered["dice"], results["dice"], rtol=0, atol=1e-6)
    for name in ("seg01", "seg02"):
        assert gathered["per_expert"][name]["score"] == pytest.approx(results["per_expert"][name]["score"], abs=1e-6)
    for key, value in results["uncertainty"]["mean"].items():
        assert gathered["uncertainty"]["mean"][key] == pytest.approx(value, abs=1e-6), key
    assert gathered["networks"]["seg01"]["best_epoch"] == results["networks"]["seg01"]["best_epoch"]
    for case_id in [*results["cases"], "case06", "case07"]:
        np.testing.assert_allclose(
            read_prediction(prediction_path(copy / "predictions", "toy", case_id, 1)),
            read_prediction(prediction_path(whole / "predictions", "toy", case_id, 1)),
            rtol=0,
            atol=1e-7,
        )


def test_claiming_config_is_race_safe(tmp_path):
    config = {"jobs": True, "dataset": {"name": "toy"}, "task": 1, "experts": [1, 2], "seed": 0, "settings": {"a": 1}}
    errors = []

    def claim():
        try:
            claim_config(tmp_path, config)
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert json.loads((tmp_path / "config.json").read_text()) == config
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    with pytest.raises(ConfigError, match=r"settings.a: 1 -> 2"):
        claim_config(tmp_path, {**config, "settings": {"a": 2}})
    assert json.loads((tmp_path / "config.json").read_text()) == config


def test_job_refusals(toy_root, tmp_path):
    with pytest.raises(ConfigError, match="strategy multi-head: the run is one network .* leave out --experts"):
        job(toy_root, tmp_path / "a", [1], settings=SETTINGS.replace(strategy="multi-head"))
    with pytest.raises(ConfigError, match="--train-only needs --out RUN"):
        job(toy_root, None, [1])
    with pytest.raises(ConfigError, match="rerun the job's own command"):
        job(toy_root, tmp_path / "a", [1], resume=True)
    assert not (tmp_path / "a").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds notes.txt, which no run writes"):
        job(toy_root, other, [1])
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    one_process = tmp_path / "one"
    one_process.mkdir()
    (one_process / "config.json").write_text(json.dumps({"dataset": {"name": "toy"}, "experts": [1, 2]}))
    with pytest.raises(ConfigError, match="is a one-process run folder .*--resume"):
        job(toy_root, one_process, [1])


def test_gather_refuses_what_it_cannot_gather(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "dataset": SPEC.to_dict(),
                "task": 1,
                "experts": [1, 2],
                "seed": 3,
                "jobs": True,
                "settings": SETTINGS.replace(strategy="soft-label").to_dict(),
            }
        )
    )
    with pytest.raises(ConfigError, match="no split .* run the jobs first: .*--train-only"):
        gather_run(tmp_path, log=quiet)
    with pytest.raises(ConfigError, match="not a run folder"):
        gather_run(tmp_path / "nowhere", log=quiet)


@pytest.mark.parametrize(
    "command, expected",
    [
        # python -m common.gather has no --gather: it names the folder, under its own name
        (lambda folder: gather_main([str(folder)]), "python -m common.gather: error: {d}: not a run folder"),
        # a dataset script names its option
        (lambda folder: cli.main(SPEC, SETTINGS, SETTINGS, 1, ["--gather", str(folder)]), "error: --gather {d}: not"),
    ],
)
def test_gather_of_what_is_not_a_run_folder_names_the_commands_own_argument(tmp_path, capsys, command, expected):
    with pytest.raises(SystemExit) as caught:
        command(tmp_path / "nope")
    err = capsys.readouterr().err.strip()
    assert caught.value.code == 2 and expected.replace("{d}", str(tmp_path / "nope")) in err, err
    assert "(no config.json there)" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("strategy", ["per-expert", "multi-head", "soft-label", "prob-unet"])
def test_one_process_and_jobs_plus_gather_give_the_same_results(strategy, one_process, jobs_run, toy_root, tmp_path):
    """The property the plan promises: the same plan run in one process, or as jobs (one per network) and
    a gather, trains the same networks and writes the same scores, for every strategy."""
    whole_dir, whole = one_process(strategy)
    run = tmp_path / "jobs"
    if strategy == "per-expert":  # the two expert jobs of ``jobs_run``, gathered anew in a copy
        shutil.copytree(
            jobs_run["run"], run, ignore=shutil.ignore_patterns(*SCORED_OUTPUTS, "run.log", "task01.nii.gz")
        )
    else:  # a single-network strategy is one job
        report = job(toy_root, run, None, settings=SETTINGS.replace(strategy=strategy))
        assert report["missing"] == [] and report["trained"] == [strategy]
    gathered = gather_run(run, log=quiet, plots=False)
    assert gathered["gathered"] is True and "gathered" not in whole
    for key in ("score", "per_threshold", "per_case", "dice", "cases", "experts_in_ensemble", "reference_scores"):
        assert gathered[key] == whole[key], key
    assert gathered["uncertainty"]["mean"] == whole["uncertainty"]["mean"]
    assert {k: v["score"] for k, v in gathered["per_expert"].items()} == {
        k: v["score"] for k, v in whole["per_expert"].items()
    }
    assert set(gathered["networks"]) == set(whole["networks"])
    for case_id in whole["cases"]:
        np.testing.assert_array_equal(
            read_prediction(prediction_path(run / "predictions", "toy", case_id, 1)),
            read_prediction(prediction_path(whole_dir / "predictions", "toy", case_id, 1)),
        )


def test_job_command_swaps_the_experts():
    config = {"command": ["Kidney.py", "--demo", "--out", "runs/x y", "--experts", "1", "--train-only", "--experts=3"]}
    assert job_command(config, Path("runs/x y"), [2, 3]) == (
        "python Kidney.py --demo --out 'runs/x y' --train-only --experts 2,3"
    )


def test_command_line(jobs_run, toy_root, tmp_path, capsys, monkeypatch):
    def main(argv):
        monkeypatch.setattr(sys, "argv", ["Toy.py", *argv])  # the command config.json records
        return cli.main(SPEC, SETTINGS, SETTINGS, 1, argv)

    for argv, message in (
        (["--gather", str(jobs_run["run"]), "--epochs", "3"], "--epochs does not apply"),
        (["--train-only", "--folds", "2", "--out", str(tmp_path / "cv")], "--train-only with --folds needs --fold k"),
        (["--fold", "1", "--out", str(tmp_path / "cv")], "give --folds K (or --splits FILE) too"),
        (["--gather", str(tmp_path / "nowhere")], "not a run folder"),
    ):
        with pytest.raises(SystemExit) as caught:
            main(argv if argv[0] == "--gather" else ["--data-root", str(toy_root), *argv])
        assert caught.value.code == 2
        assert message in capsys.readouterr().err
    # a job through the command line: the recorded command names the job's options
    run = tmp_path / "run"
    report = main(
        ["--data-root", str(toy_root), "--seed", "3", "--out", str(run), "--experts", "2", "--train-only", "--quiet"]
    )
    assert report["trained"] == ["seg02"] and report["missing"] == ["seg01"]
    with pytest.raises(SystemExit):
        main(["--gather", str(run)])
    err = capsys.readouterr().err
    assert "seg01: no " in err
    assert err.rstrip().splitlines()[-1].strip() == (
        f"python Toy.py --data-root {toy_root} --seed 3 --out {run} --train-only --quiet --experts 1"
    )


def test_folds_as_jobs_then_resume_gathers(toy_root, tmp_path):
    """Fold 1 as one job, fold 2 as one job per expert; --resume of the folder then trains nothing."""
    cv = tmp_path / "cv"

    def fold_job(fold, experts=None, train_only=False, seed=3):
        return run_cross_validation(
            SPEC,
            SETTINGS,
            1,
            toy_root,
            2,
            experts=experts,
            seed=seed,
            out=cv,
            plots=False,
            verbose=0,
            log=quiet,
            only_fold=fold,
            train_only=train_only,
        )

    first = fold_job(1)
    assert 0 <= first["score"] <= 1 and (cv / "fold1" / "results.json").is_file()
    assert fold_job(2, [1], train_only=True)["missing"] == ["seg02"]
    with pytest.raises(ConfigError, match="seed: 3 -> 4"):
        fold_job(2, [2], train_only=True, seed=4)
    assert fold_job(2, [2], train_only=True)["missing"] == []
    assert not (cv / CV_RESULTS).exists() and not (cv / "fold2" / "results.json").exists()
    assert sorted(p.name for p in (cv / "jobs").iterdir()) == ["fold1.log", "fold2-seg01.log", "fold2-seg02.log"]
    models = snapshot(cv / "fold2" / "experts")
    lines = []
    summary = run_cross_validation(
        SPEC, SETTINGS, 1, toy_root, None, experts=[1, 2], seed=3, out=cv, resume=True, plots=False, log=lines.append
    )
    assert snapshot(cv / "fold2" / "experts") == models  # gathered: no expert retrained nor run
    assert any("[fold 1/2] already done" in line for line in lines)
    assert any("[fold 2/2] every expert was trained by its job: gathering" in line for line in lines)
    fold2 = json.loads((cv / "fold2" / "results.json").read_text())
    assert fold2["gathered"] is True and summary["fold_scores"] == [first["score"], fold2["score"]]
    assert json.loads((cv / CV_RESULTS).read_text())["mean"] == pytest.approx(np.mean(summary["fold_scores"]))
    with pytest.raises(ConfigError, match="--fold 3: the cross-validation has folds 1 to 2"):
        fold_job(3)


def test_a_job_that_loses_the_race_writes_nothing(toy_root, tmp_path, monkeypatch):
    """Another job with another configuration claims config.json while this one loads its data."""
    from common.runs import folder

    run = tmp_path / "run"
    original = folder.open_job_dir

    def open_then_another_job_claims(out, config):
        opened = original(out, config)
        folder.claim_file(opened / "config.json", {**config, "seed": 99})
        return opened

    monkeypatch.setattr(folder, "open_job_dir", open_then_another_job_claims)
    with pytest.raises(ConfigError, match="seed: 99 -> 3"):
        job(toy_root, run, [1])
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == ["config.json", "jobs"]


def test_a_job_joins_a_folder_written_before_a_setting_existed(tmp_path):
    """As --resume does: a setting added since (here mixed_precision) counts at its default."""
    from common.runs.folder import check_same_run

    settings = TINY.to_dict()
    config = {"jobs": True, "settings": settings}
    old = {"jobs": True, "settings": {k: v for k, v in settings.items() if k != "mixed_precision"}}
    check_same_run(old, config, tmp_path)  # no error
    with pytest.raises(ConfigError, match="settings.epochs: "):
        check_same_run({"jobs": True, "settings": {**old["settings"], "epochs": 99}}, config, tmp_path)
