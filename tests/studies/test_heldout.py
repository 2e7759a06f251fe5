"""Held-out evaluation reuses what it can: unchanged models are neither generated nor scored again, and images
scored with another pose-estimator setting are scored again without being generated again."""

import json

from PIL import Image

from humantune.data.mannequin.world import MannequinConfig, render_sample
from humantune.eval.pose_estimators import MediaPipePoseEstimator
from humantune.studies.heldout import HeldoutSet, evaluate_models, write_reference


def test_a_new_estimator_setting_rescores_kept_images_without_generating_them(tmp_path):
    scenes = [render_sample(MannequinConfig(n=2, seed=1, second_person_prob=0.0), i) for i in range(2)]
    held = HeldoutSet(captions=[s.caption for s in scenes], seeds=[0, 1], images=[s.image for s in scenes],
                      targets=[{"keypoints": s.keypoints, "bboxes": s.bboxes, "areas": s.areas} for s in scenes])
    reference = write_reference(held, tmp_path / "reference", {"n": 2})
    calls = []

    def generate(indices):
        calls.append(list(indices))
        return [Image.fromarray(scenes[i].image) for i in indices]

    def run(margin):
        with MediaPipePoseEstimator(margin=margin) as estimator:
            return evaluate_models({"m": generate}, held, tmp_path / "eval", {"m": {"v": 1}}, reference,
                                   progress=False, metrics=["oks"], estimator=estimator)["m"]

    first = run(0.0)
    assert calls == [[0, 1]] and "extended" not in first["estimator"]
    metrics = tmp_path / "eval" / "m" / "metrics" / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    assert run(0.0) == first and metrics.stat().st_mtime_ns == stamp   # nothing to do
    again = run(0.25)
    assert calls == [[0, 1]]                                              # not generated again ...
    assert "extended by 0.25 of the longer side" in again["estimator"]   # ... but scored with the new setting
    assert json.loads(metrics.read_text())["estimator"] == again["estimator"]
    assert again["metrics"]["oks"]["num_images"] == 2
