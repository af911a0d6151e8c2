"""tools/pretrained.py's plan, runs and report: which runs a sweep makes,
what each trains, how its file resumes, and how PruneTrain is paired with
each alternative (equal epochs, equal time)."""

import dataclasses
import json

import pytest

from tools import pretrained
from tools import results


def _run(seed, method, accuracy, seconds, target=None, grid=1, epochs=None,
         flops=100):
    return {"seed": seed, "method": method, "target": target, "grid": grid,
            "epochs": epochs, "accuracy": accuracy, "train_seconds": seconds,
            "one_off_seconds": 0.0, "inference_flops": flops,
            "timeline": [{"architecture": method, "lasso": "",
                          "steps": 1}]}


def _result():
    """Compress, N=1, five seeds: PruneTrain at 0.25 takes 30 s; the thin
    network from scratch takes 20 s (E=1) or 40 s (E=2), so at equal time
    it sits half-way between its two runs."""
    runs = []
    for seed in range(5):
        runs += [_run(seed, "dense", 0.90, 60),
                 _run(seed, "prunetrain", 0.88 + 0.001 * seed, 30, 0.25,
                      flops=25),
                 _run(seed, "prune_first", 0.86, 30, 0.25, flops=25),
                 _run(seed, "thin", 0.70, 20, 0.25, None, 1, flops=25),
                 _run(seed, "thin", 0.80, 40, 0.25, None, 2, flops=25)]
    return {"regime": "compress", "network": "resnet20", "runs": runs,
            "sources": {"dense": _run(None, "source", 0.9, 480, grid=None)}}


def test_report_pairs_prunetrain_with_each_alternative():
    result = _result()
    figures = pretrained.report(result)
    pairs = {row["against"]: row for row in figures["pairs"]}
    assert pairs["dense"]["mean"] == pytest.approx(-1.8)
    assert pairs["dense"]["verdict"] == "worse"
    assert pairs["prune_first"]["mean"] == pytest.approx(2.2)
    assert pairs["prune_first"]["verdict"] == "better"
    # Equal epochs: the thin network's E=1 run; equal time (30 s): half-way
    # between E=1 (20 s, 0.70) and E=2 (40 s, 0.80).
    assert pairs["thin, equal epochs (E=1)"]["mean"] == pytest.approx(18.2)
    assert pairs["thin, equal time"]["mean"] == pytest.approx(13.2)
    assert pairs["thin, equal time"]["outside"] == 0
    # prune_first's curve over N (one run of 30 s here): PruneTrain's time.
    assert pairs["prune_first, equal time"]["mean"] == pytest.approx(2.2)
    assert pairs["prune_first, equal time"]["outside"] == 0
    rows = {row["label"]: row for row in figures["rows"]}
    assert rows["prunetrain 0.25 N=1"]["time_vs_source"] == \
        pytest.approx(30 / 480)
    assert rows["prunetrain 0.25 N=1"]["flops"] == pytest.approx(0.25)
    assert rows["thin 0.25 E=2"]["time_vs_dense"] == pytest.approx(40 / 60)
    # The front: thin E=1 (fastest), PruneTrain (faster than dense); not
    # prune_first (as fast, less accurate), not thin E=2 (slower, worse).
    assert [label for label, row in rows.items() if row["front"]] == [
        "dense N=1", "prunetrain 0.25 N=1", "thin 0.25 E=1"]
    text = pretrained.markdown(result, figures)
    assert "| 1 | 0.25 | thin, equal time | +13.20 [" in text
    # A lever: paired with PruneTrain, cut-first and dense.
    result["runs"] += [_run(seed, "prunetrain_distill", 0.89 + 0.001 * seed,
                            33, 0.25, flops=25) for seed in range(5)]
    figures = pretrained.report(result)
    levers = {(row["mine"], row["against"]): row
              for row in figures["lever_pairs"]}
    assert levers[("prunetrain_distill", "prunetrain")]["mean"] == \
        pytest.approx(1.0)
    assert levers[("prunetrain_distill", "dense")]["mean"] == \
        pytest.approx(-0.8)
    assert "prunetrain_distill 0.25 N=1" in {
        row["label"] for row in figures["rows"]}
    assert "| levers: a − b |" in pretrained.markdown(result, figures)


def test_prunetrain_past_the_thin_curve_is_counted_outside():
    result = _result()
    for run in result["runs"]:
        if run["method"] == "prunetrain":
            run["train_seconds"] = 50  # beyond the longest thin run
    pairs = {row["against"]: row for row in pretrained.report(result)["pairs"]}
    assert pairs["thin, equal time"]["outside"] == 5
    assert pairs["thin, equal time"]["mean"] == pytest.approx(8.2)


def test_plan_has_every_method_once_and_sources_first():
    tasks = pretrained.plan("transfer", [500], [0.25], [0, 1])
    assert tasks[:2] == [(None, "source", None, None, None),
                         (None, "source", 0.25, None, None)]
    assert len(tasks) == len(set(tasks))
    methods = {t[1] for t in tasks}
    assert methods == {"source", "dense", "prunetrain", "prune_first",
                       "thin_source", "thin"}
    assert sorted(t[4] for t in tasks if t[1] == "thin" and t[0] == 0) == \
        [20, 40]
    large = pretrained.plan("transfer", [2000], [0.25], [0])
    assert {t[1] for t in large} == {"source", "dense", "prunetrain",
                                     "prune_first", "thin"}
    assert len([t for t in large if t[1] == "source"]) == 1
    frozen = pretrained.plan("transfer", [500], [0.25], [0],
                             frozen_batchnorm=True)
    assert {t[1] for t in frozen} - {t[1] for t in tasks} == {
        "dense_frozen_bn", "prunetrain_frozen_bn",
        "prunetrain_frozen_bn_recal", "prune_first_frozen_bn",
        "prune_first_frozen_bn_recal"}
    compress = pretrained.plan("compress", [1, 2], [0.5], [0])
    assert sorted(t[4] for t in compress if t[1] == "thin") == [1, 2, 8]
    assert not any(t[1] == "thin_source" for t in compress)
    levers = pretrained.plan("compress", [2], [0.5], [0],
                             levers=["distill", "searched"])
    assert {t[1] for t in levers} - {t[1] for t in compress} == {
        "prunetrain_distill", "prunetrain_searched"}


def test_a_thin_network_from_scratch_trains_whole():
    frozen = json.dumps({"config": {"layers": [
        {"config": {"trainable": False, "name": "bn"}},
        {"config": {"trainable": True, "layers": [
            {"config": {"trainable": False}}]}}]}})
    assert '"trainable": false' not in pretrained.trainable_json(frozen)
    assert pretrained.trainable_json(frozen).count('"trainable": true') == 3


def test_fine_tunes_are_the_regimes():
    compress = pretrained.fine_tune("compress", "resnet20", 2, "src.keras")
    assert (compress.epochs, compress.steps_per_epoch) == (8, 20)
    assert compress.lr_decay_epochs == (4, 6)
    assert compress.subset_seed == 0 and compress.train_size == 10_000
    transfer = pretrained.fine_tune("transfer", "resnet20", 500, "src.keras")
    assert (transfer.classes, transfer.train_size, transfer.new_head,
            transfer.freeze_epochs) == (pretrained.TARGET_CLASSES, 500, True,
                                        4)
    assert transfer.subset_seed is None  # each seed its own 500 images
    scratch = pretrained.from_scratch(transfer, "transfer", "resnet20", 40)
    assert scratch.pretrained is None and scratch.freeze_epochs == 0
    assert scratch.learning_rate == 0.1 and scratch.lr_decay_epochs == (20,
                                                                        30)


def test_what_each_task_trains_and_what_it_waits_for(tmp_path):
    study = pretrained.Study("compress", "resnet20", str(tmp_path))
    final = json.dumps({"config": {"trainable": False}})
    finals, first = {(0, 0.25, 1): final}, (0, 1)
    # Sources first: the dense source trains now, into its cache folder.
    source, widths = study.args((None, "source", None, None, None), finals,
                                first)
    assert widths is None and source.log_dir == str(
        tmp_path / "compress_resnet20_dense")
    # Nothing else starts before the dense source is cached.
    assert study.args((0, "dense", None, 1, None), finals, first) is None
    path = tmp_path / "compress_resnet20_dense" / "model.keras"
    path.parent.mkdir()
    path.write_text("")
    dense, _ = study.args((0, "dense", None, 1, None), finals, first)
    assert dense.pretrained == str(path) and dense.seed == 0
    assert not dense.prunetrain and not dense.freeze_batchnorm
    pruned, _ = study.args((0, "prunetrain", 0.25, 1, None), finals, first)
    assert (pruned.prunetrain, pruned.flops_target, pruned.strength,
            pruned.proximal, pruned.scales) == (True, 0.25, 0.02, True, True)
    frozen, _ = study.args((0, "prunetrain_frozen_bn", 0.25, 1, None),
                           finals, first)
    assert frozen.freeze_batchnorm and frozen.prunetrain
    assert frozen.recalibrate_steps == 0
    recal, _ = study.args((0, "prune_first_frozen_bn_recal", 0.25, 1, None),
                          finals, first)
    assert recal.freeze_batchnorm and recal.prune_first
    assert recal.recalibrate_steps == pretrained.RECALIBRATE_STEPS
    assert recal.precise_bn == 0
    cut, _ = study.args((0, "prune_first", 0.25, 1, None), finals, first)
    assert cut.prune_first and cut.flops_target == 0.25
    # Issue 38's levers: PruneTrain's flags and the lever's.
    taught, _ = study.args((0, "prunetrain_distill", 0.25, 1, None), finals,
                           first)
    assert dataclasses.replace(taught, distill_epochs=0) == pruned
    assert taught.distill_epochs == 2
    searched, _ = study.args((0, "prunetrain_searched", 0.25, 1, None),
                             finals, first)
    assert dataclasses.replace(searched, ranking=pruned.ranking) == pruned
    assert searched.ranking == "searched"
    # A thin run trains its PruneTrain run's widths, whole, from scratch;
    # seed 1's PruneTrain run is not done: it waits.
    thin, architecture = study.args((0, "thin", 0.25, None, 8), finals,
                                    first)
    assert thin.pretrained is None and thin.epochs == 8
    assert architecture == pretrained.trainable_json(final)
    assert study.args((1, "thin", 0.25, None, 8), finals, first) is None
    # --precise_bn: every run but the sources' re-estimates its statistics.
    precise = dataclasses.replace(study, precise_bn=20)
    assert precise.args((0, "thin", 0.25, None, 8), finals,
                        first)[0].precise_bn == 20
    assert precise.args((0, "prunetrain", 0.25, 1, None), finals,
                        first)[0].precise_bn == 20
    # What the file holds is not run again: its runs, and cached sources.
    result = study.fresh()
    result["runs"].append({"seed": 0, "method": "dense", "target": None,
                           "grid": 1, "epochs": None})
    result["sources"] = {"dense": {}, "thin 0.25": {}}
    assert study.held(result) == {(0, "dense", None, 1, None),
                                  (None, "source", None, None, None)}


def test_a_sweep_file_resumes_and_refuses_another_regime(tmp_path):
    path = str(tmp_path / "sweep.json")
    compress = pretrained.Study("compress", sources=str(tmp_path))
    assert pretrained.load_state(path, compress)["runs"] == []
    state = compress.fresh()
    state["runs"] = [{"seed": 0, "method": "dense"}]
    results.write(state, path)
    assert pretrained.load_state(path, compress)["runs"] == state["runs"]
    with pytest.raises(ValueError, match="--regime='compress' there, "
                       "'transfer' now"):
        pretrained.load_state(path, pretrained.Study(
            "transfer", sources=str(tmp_path)))
    with pytest.raises(ValueError, match="precise_bn"):
        pretrained.load_state(path, pretrained.Study(
            "compress", sources=str(tmp_path), precise_bn=20))
