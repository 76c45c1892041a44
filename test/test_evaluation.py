"""Evaluation: official cityscapesScripts evaluators on generated data, the full oracle, the
in-process PQ, ``casnet eval`` end to end, and the user's files that it must leave alone."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from casnet_core import evaluation
from casnet_core.cli import main as casnet_main
from casnet_core.data import list_samples, read_instance_ids, read_label_ids
from casnet_core.evaluation import (
    METRIC_KEYS,
    CityscapesResultWriter,
    EvalPrediction,
    clean_panoptic,
    full_oracle_prediction,
    panoptic_quality,
    run_official_evaluators,
)
from casnet_core.evaluation.compat import forkserver_workers, working_directory
from casnet_core.formats import MAX_PANOPTIC_ID, encode_panoptic_rgb, read_panoptic_png, write_png

ROAD, SKY, BUILDING, CAR, PERSON = 7, 23, 11, 26, 24


@pytest.fixture(scope="session")
def eval_root(tmp_path_factory):
    """4 generated validation images at 256x512 (and 1 training image, unused)."""
    from casnet_core.synth import generate_dataset

    return Path(generate_dataset(tmp_path_factory.mktemp("eval_synth"), num_train=1, num_val=4,
                                 height=256, width=512, seed=3))


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: relative path -> (size, mtime in ns)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="session")
def full_oracle(eval_root, tmp_path_factory):
    """``evaluate(oracle="full")`` once: (out dir, metrics, the dataset's files before, and after). The
    checkpoint fixture (random weights) comes from conftest.py."""
    out = tmp_path_factory.mktemp("oracle_full")
    before = _files(eval_root)
    metrics = evaluation.evaluate(eval_root, "val", out, oracle="full", progress=False)
    return out, metrics, before, _files(eval_root)


def _assert_fractions(metrics: dict, keys=METRIC_KEYS) -> None:
    for key in keys:
        value = metrics[key]
        assert isinstance(value, float) and 0.0 <= value <= 1.0, (key, value)


def test_full_oracle_is_near_perfect_through_the_official_evaluators(full_oracle):
    out, metrics, _, _ = full_oracle
    # Ground-truth semantics, attributes and box probability: what is lost is lost by the post-processing
    # (see full_oracle_prediction), and the paper's claim is that it loses little.
    assert metrics["PQ"] >= 0.98, metrics
    assert metrics["AP"] >= 0.95, metrics
    assert metrics["mIoU"] == pytest.approx(1.0)  # the semantic output is the ground truth itself

    written = json.loads((out / "metrics.json").read_text())
    _assert_fractions(written)
    assert written["source"] == "oracle-full" and written["num_images"] == 4
    assert written["per_class"]["instance"]["car"]["AP"] is not None
    assert set(written["per_class"]["panoptic"]) >= {"road", "car"}
    # The official evaluators wrote their results beside the predictions, in the official formats.
    for name in ("resultPanopticSemanticLabeling.json", "resultInstanceLevelSemanticLabeling.json",
                 "resultPixelLevelSemanticLabeling.json", "gtInstances.json", "matches.json"):
        assert (out / "evaluators" / name).is_file(), name
    official_pq = json.loads((out / "evaluators" / "resultPanopticSemanticLabeling.json").read_text())
    assert official_pq["All"]["pq"] == pytest.approx(written["PQ"])
    txt = sorted((out / "instance").glob("*.txt"))
    assert len(txt) == 4
    first = txt[0].read_text().splitlines()[0].split(" ")
    assert first[0].startswith("masks/") and int(first[1]) in (24, 25, 26, 27, 28, 31, 32, 33)
    # Nothing written into the installed package (the scripts' default locations).
    import cityscapesscripts

    package = Path(cityscapesscripts.__file__).parent
    assert not (package / "evaluation" / "gtInstances.json").exists()
    assert not (package.parent / "evaluationResults").exists()


def _oracle_predictions(root: Path) -> tuple[list[str], list[EvalPrediction], list[np.ndarray]]:
    names, predictions, gts = [], [], []
    for sample in list_samples(root, "val"):
        gt = read_instance_ids(sample.instance_ids_path)
        names.append(sample.name)
        predictions.append(full_oracle_prediction(read_label_ids(sample.label_ids_path), gt))
        gts.append(gt)
    return names, predictions, gts


def _damage(panoptic: np.ndarray) -> np.ndarray:
    """Merges the two largest thing instances of one class and turns the largest stuff segment into
    another stuff class on its left half: a merge and a label shift."""
    damaged = panoptic.copy()
    ids, areas = np.unique(damaged, return_counts=True)
    things = [(a, i) for i, a in zip(ids, areas) if i >= 1000]
    by_class: dict[int, list] = {}
    for area, i in sorted(things, reverse=True):
        by_class.setdefault(i // 1000, []).append(i)
    pairs = [v[:2] for v in by_class.values() if len(v) >= 2]
    if pairs:
        keep, merged = pairs[0]
        damaged[damaged == merged] = keep
    stuff = [(a, i) for i, a in zip(ids, areas) if 0 < i < 1000]
    _, largest = max(stuff)
    other = SKY if largest != SKY else ROAD
    left = np.zeros_like(damaged, dtype=bool)
    left[:, : damaged.shape[1] // 2] = True
    damaged[(damaged == largest) & left] = other
    return damaged


def test_damaged_predictions_lower_pq_and_in_process_pq_agrees_with_official(eval_root, full_oracle, tmp_path):
    _, oracle_metrics, _, _ = full_oracle
    names, predictions, gts = _oracle_predictions(eval_root)

    # Undamaged: the in-process PQ equals the official one on the same predictions.
    in_process = panoptic_quality([p.panoptic for p in predictions], gts)
    for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st"):
        assert in_process[key] == pytest.approx(oracle_metrics[key], abs=1e-3), key

    damaged = [EvalPrediction(_damage(p.panoptic), None, p.scores) for p in predictions]
    writer = CityscapesResultWriter(tmp_path, "val")
    for name, prediction in zip(names, damaged):
        writer.add(name, prediction)
    writer.close()
    official = run_official_evaluators(eval_root, "val", writer)
    assert official["PQ"] < oracle_metrics["PQ"] - 0.05, (official["PQ"], oracle_metrics["PQ"])
    assert official["PQ_th"] < oracle_metrics["PQ_th"]
    assert official["PQ_st"] < oracle_metrics["PQ_st"]
    assert official["mIoU"] < 0.99  # the shifted stuff labels reach the label-id PNGs too
    in_process = panoptic_quality([p.panoptic for p in damaged], gts)
    for key in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"):
        assert in_process[key] == pytest.approx(official[key], abs=1e-3), key
    for name, values in official["per_class"]["panoptic"].items():
        assert in_process["per_class"][name]["PQ"] == pytest.approx(values["PQ"], abs=1e-3), name


def test_panoptic_quality_follows_the_official_rules_on_a_hand_built_case():
    r, v, S, C = ROAD, 0, SKY, CAR  # road, void, sky, car crowd region (car label id without instance)
    A, B = CAR * 1000, CAR * 1000 + 1
    gt = np.array([
        [A, A, A, A, r, r, B, B, B, B],
        [A, A, A, A, r, r, B, B, B, B],
        [r, r, r, r, r, r, r, S, S, S],
        [v, v, r, r, r, r, C, C, C, C],
    ])
    F, X, P, b = CAR * 1000 + 2, CAR * 1000 + 3, PERSON * 1000, BUILDING
    pred = np.array([
        [A, A, A, A, r, B, B, B, B, B],
        [A, A, A, A, r, B, B, B, B, B],
        [F, F, F, r, r, r, r, b, b, b],
        [P, P, r, r, r, r, X, X, X, X],
    ])
    result = panoptic_quality([pred], [gt])
    # car: A exact (IoU 1), B 8 of 10 pixels (IoU 0.8): 2 TP; F lies on road: FP; X lies on the crowd
    # region of its class: ignored. PQ = 1.8 / (2 + 0.5 * 1).
    assert result["per_class"]["car"] == {"PQ": pytest.approx(0.72), "SQ": pytest.approx(0.9),
                                          "RQ": pytest.approx(0.8), "tp": 2, "fp": 1, "fn": 0}
    # road: 10 predicted pixels, all on the 15 of the ground truth: IoU 10/15, a TP.
    assert result["per_class"]["road"]["PQ"] == pytest.approx(10 / 15)
    # sky missed (FN) and building hallucinated (FP) both count, with PQ 0; the person on void does not.
    assert (result["per_class"]["sky"]["fn"], result["per_class"]["building"]["fp"]) == (1, 1)
    assert result["per_class"]["person"] == {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "tp": 0, "fp": 0, "fn": 0}
    assert result["n"] == 4 and result["n_th"] == 1 and result["n_st"] == 3
    assert result["PQ"] == pytest.approx((0.72 + 10 / 15) / 4)
    assert result["PQ_th"] == pytest.approx(0.72)
    assert result["PQ_st"] == pytest.approx(10 / 15 / 3)


def test_casnet_eval_checkpoint_end_to_end(eval_root, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = casnet_main(["eval", "--data", str(eval_root), "--split", "val", "--out", str(out),
                      "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--max-images", "1"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    _assert_fractions(metrics)
    assert metrics["source"] == "checkpoint" and metrics["num_images"] == 1
    assert metrics["mIoU"] < 0.9  # random weights: the semantics are not the ground truth
    printed = capsys.readouterr().out
    assert "PQ" in printed and "AP50" in printed and "metrics.json" in printed
    assert len(list((out / "semantic").glob("*_labelIds.png"))) == 1


def test_semantic_oracle_and_semantic_dir_feed_the_given_semantics(eval_root, tiny_checkpoint, tmp_path):
    # --oracle semantic: ground-truth label ids replace the semantic head, so mIoU is perfect
    # whatever the (random) attributes are.
    metrics = evaluation.evaluate(eval_root, "val", tmp_path / "oracle", checkpoint=tiny_checkpoint,
                                  oracle="semantic", device="cpu", max_images=1, progress=False)
    assert metrics["source"] == "oracle-semantic"
    assert metrics["mIoU"] == pytest.approx(1.0)
    # --semantic-dir: the same label ids from a folder, named like the images.
    semantic_dir = tmp_path / "other_model"
    semantic_dir.mkdir()
    sample = list_samples(eval_root, "val")[0]
    shutil.copy(sample.label_ids_path, semantic_dir / f"{sample.name}_leftImg8bit.png")
    metrics = evaluation.evaluate(eval_root, "val", tmp_path / "separated", checkpoint=tiny_checkpoint,
                                  semantic_dir=semantic_dir, device="cpu", max_images=1, progress=False)
    assert metrics["source"] == "checkpoint+semantic-dir"
    assert metrics["mIoU"] == pytest.approx(1.0)
    # Two candidates for one image are an error, not a guess.
    shutil.copy(sample.label_ids_path, semantic_dir / f"{sample.name}_gtFine_labelIds.png")
    with pytest.raises(FileNotFoundError, match="expected one"):
        evaluation.find_semantic_files(semantic_dir, [sample.name])


def test_instance_mode_reports_only_meaningful_metrics(eval_root, tmp_path):
    import torch

    from casnet_core.checkpoint import save_checkpoint
    from casnet_core.model import build_casnet

    torch.manual_seed(0)
    model = build_casnet("hrnet_w18_small", mode="instance", fusion_channels=32, head_channels=16)
    checkpoint = save_checkpoint(tmp_path / "instance.pt", model.eval())
    metrics = evaluation.evaluate(eval_root, "val", tmp_path / "eval", checkpoint=checkpoint, oracle="semantic",
                                  device="cpu", max_images=1, progress=False)
    assert metrics["mode"] == "instance"
    for key in ("PQ", "SQ", "RQ", "PQ_st", "mIoU"):
        assert metrics[key] is None and key in metrics["not_meaningful"]
    _assert_fractions(metrics, ("PQ_th", "AP", "AP50", "mIoU_th"))
    # Ground-truth semantics: thing pixels are exactly right even though stuff is background.
    assert metrics["mIoU_th"] == pytest.approx(1.0)
    assert set(metrics["per_class"]["iou"]) <= {"person", "rider", "car", "truck", "bus", "train", "motorcycle",
                                                "bicycle"}


def test_ground_truth_conversion_is_cached_and_redone_when_stale(eval_root, tmp_path):
    """The cache is keyed by the ground truth's content: a touched file reuses it, a changed file rebuilds it."""
    import shutil

    import cv2

    data = shutil.copytree(eval_root, tmp_path / "data")  # changed below: not the session's dataset
    cache = tmp_path / "cache"
    json_file, folder = evaluation.prepare_panoptic_ground_truth(data, "val", cache_dir=cache)
    assert json_file == cache.resolve() / "cityscapes_panoptic_val.json"
    assert len(list(folder.glob("*_panoptic.png"))) == 4
    before = json_file.stat().st_mtime_ns
    source = next((data / "gtFine" / "val").glob("*/*_instanceIds.png"))
    os.utime(source, ns=(before + 1000, before + 1000))  # newer, same content
    evaluation.prepare_panoptic_ground_truth(data, "val", cache_dir=cache)
    assert json_file.stat().st_mtime_ns == before  # fresh: reused
    ids = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
    ids[:8, :8] = 7  # a patch of road: another ground truth
    assert cv2.imwrite(str(source), ids)
    evaluation.prepare_panoptic_ground_truth(data, "val", cache_dir=cache)
    assert json_file.stat().st_mtime_ns > before
    annotations = json.loads(json_file.read_text())["annotations"]
    assert len(annotations) == 4 and all(a["segments_info"] for a in annotations)


def test_eval_writes_nothing_into_the_dataset_and_caches_under_out(full_oracle):
    out, _, before, after = full_oracle
    assert after == before  # not one file of --data added, removed or rewritten
    assert (out / "gt_panoptic" / "cityscapes_panoptic_val.json").is_file()
    assert len(list((out / "gt_panoptic" / "cityscapes_panoptic_val").glob("*_panoptic.png"))) == 4


def test_eval_refuses_outputs_that_overlap_its_inputs(eval_root, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["eval", "--data", str(eval_root), "--max-images", "1"]
    assert casnet_main([*base, "--out", str(out), "--oracle", "full"]) == 0
    kept = _files(out)
    semantic = out / "semantic"
    assert len(list(semantic.glob("*_labelIds.png"))) == 1
    capsys.readouterr()

    # The semantics of an earlier run as --semantic-dir, with the same --out: OUT/semantic would be emptied.
    rc = casnet_main([*base, "--out", str(out), "--checkpoint", str(tiny_checkpoint), "--device", "cpu",
                      "--semantic-dir", str(semantic)])
    error = capsys.readouterr().err
    assert rc == 2 and error.count("\n") == 1 and "--semantic-dir" in error and "choose another --out" in error
    assert _files(out) == kept  # stopped before touching anything

    # --out inside --data: refused before the folder is made.
    rc = casnet_main([*base, "--out", str(eval_root / "results"), "--oracle", "full"])
    assert rc == 2 and "--data" in capsys.readouterr().err
    assert not (eval_root / "results").exists()

    # A cache folder that would land on the predictions or the checkpoint.
    for cache in (out / "panoptic", tiny_checkpoint.parent):
        rc = casnet_main([*base, "--out", str(out), "--oracle", "semantic", "--checkpoint", str(tiny_checkpoint),
                          "--cache-dir", str(cache)])
        assert rc == 2 and "--cache-dir" in capsys.readouterr().err
    assert _files(out) == kept

    # The same semantics into another --out: they are read, not removed (the full oracle's are the ground truth).
    metrics = evaluation.evaluate(eval_root, "val", tmp_path / "separated", checkpoint=tiny_checkpoint,
                                  semantic_dir=semantic, device="cpu", max_images=1, progress=False)
    assert metrics["mIoU"] == pytest.approx(1.0)
    assert _files(out) == kept


def test_a_named_cache_dir_may_be_where_the_official_tools_put_it(eval_root, tmp_path):
    data = Path(shutil.copytree(eval_root, tmp_path / "data"))
    metrics = evaluation.evaluate(data, "val", tmp_path / "eval", oracle="full", max_images=1, progress=False,
                                  cache_dir=data / "gtFine")
    cached = data / "gtFine" / "cityscapes_panoptic_val.json"
    assert cached.is_file() and not (tmp_path / "eval" / "gt_panoptic").exists()
    stamp = cached.stat().st_mtime_ns
    again = evaluation.evaluate(data, "val", tmp_path / "eval", oracle="full", max_images=1, progress=False,
                                cache_dir=data / "gtFine")
    assert cached.stat().st_mtime_ns == stamp  # reused
    assert again["PQ"] == metrics["PQ"]


def test_result_writer_panoptic_png_reads_back_as_the_cleaned_map(tmp_path):
    panoptic = np.array([[CAR * 1000 + 1, CAR * 1000 + 1, 33_999], [ROAD, 5, 0]])  # 5: ignoreInEval, becomes void
    writer = CityscapesResultWriter(tmp_path, "val")
    writer.add("city_000000_000000", EvalPrediction(panoptic))
    writer.close()
    read = read_panoptic_png(writer.panoptic_dir / "city_000000_000000_panoptic.png")
    assert read.tolist() == clean_panoptic(panoptic).tolist() == [[26001, 26001, 33999], [7, 0, 0]]
    # The encoding itself spans 24 bits, all three channels.
    ids = np.array([[0, 255, 256, 65535], [65536, 1 << 23, MAX_PANOPTIC_ID, 7]])
    assert encode_panoptic_rgb(ids)[1, 2].tolist() == [255, 255, 255]
    write_png(tmp_path / "ids.png", encode_panoptic_rgb(ids))
    assert read_panoptic_png(tmp_path / "ids.png").tolist() == ids.tolist()


def test_working_directory_is_restored_even_on_error(tmp_path):
    start = os.getcwd()
    with pytest.raises(RuntimeError):
        with working_directory(tmp_path):
            assert Path.cwd() == tmp_path.resolve()
            raise RuntimeError("inside")
    assert os.getcwd() == start


def test_the_panoptic_evaluators_pool_does_not_fork_the_caller():
    # cityscapesScripts' panoptic evaluator calls multiprocessing.Pool of its module: within forkserver_workers its
    # workers are forked from the forkserver process (their parent is not this process, so they inherit neither
    # its threads' locks nor its signal handlers); afterwards the module has its own multiprocessing back.
    import multiprocessing
    import types

    module = types.SimpleNamespace(multiprocessing=multiprocessing)
    with forkserver_workers(module):
        with module.multiprocessing.Pool(processes=1) as pool:
            worker_parent = pool.apply(os.getppid)
    assert worker_parent != os.getpid()
    assert module.multiprocessing is multiprocessing
