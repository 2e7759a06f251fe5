import json
import shutil

import numpy as np
import pytest
from PIL import Image

from humantune.data.loaders import open_pose_dataset
from humantune.data.mannequin.world import MannequinConfig, write_world
from humantune.errors import HumantuneError
from humantune.eval import anatomy, image_metrics, pose_metrics
from humantune.eval.pose_estimators import MediaPipePoseEstimator, PoseEstimator
from humantune.eval.inputs import pair_by, read_generated_folder
from humantune.eval.metrics import METRICS
from humantune.studies.evaluation import evaluate


class RecordingEstimator(PoseEstimator):
    """MediaPipe, remembering every detection so the test can recompute metrics from the same inputs."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def estimate(self, image):
        result = self.inner.estimate(image)
        self.calls.append(result)
        return result


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    reference = write_world(MannequinConfig(n=8, size=128, seed=3), root / "reference", workers=1, progress=False)
    generated = root / "generated"
    generated.mkdir()
    rng = np.random.default_rng(0)
    for i, path in enumerate(sorted((reference / "images").glob("*.png"))):
        image = np.asarray(Image.open(path).convert("RGB")).astype(np.int16)
        if i % 2:  # every other image perturbed: noise plus a shifted patch
            image = image + rng.integers(-20, 21, size=image.shape)
            image[40:70, 40:70] = np.roll(image[40:70, 40:70], 6, axis=1)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(generated / path.name)
    with MediaPipePoseEstimator() as mp:
        recorder = RecordingEstimator(mp)
        result = evaluate(generated, reference, out_dir=root / "out", estimator=recorder, progress=False)
    return {"root": root, "reference": reference, "generated": generated, "result": result,
            "calls": recorder.calls}


def _batch(folder):
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))])


def test_image_metrics_equal_direct_calls(world):
    summary = json.loads((world["root"] / "out" / "metrics.json").read_text())
    gen, ref = _batch(world["generated"]), _batch(world["reference"] / "images")
    m = summary["metrics"]
    assert m["ssim"]["value"] == pytest.approx(image_metrics.ssim(gen, ref, 255.0), abs=1e-12)
    assert m["psnr"]["value"] == pytest.approx(image_metrics.psnr(gen, ref, 255.0, max_db=100.0), abs=1e-12)
    assert m["l1"]["value"] == pytest.approx(image_metrics.l1_error(gen, ref), abs=1e-12)
    assert m["psnr"]["conventions"]["data_range"] == 255 and m["ssim"]["n"] == 8
    lo, hi = m["ssim"]["ci95"]
    assert lo <= m["ssim"]["value"] <= hi and "bootstrap" in m["ssim"]["ci_method"]
    # the unperturbed half is identical to the reference: SSIM 1, PSNR at the cap
    rows = [json.loads(line) for line in (world["root"] / "out" / "per_image.jsonl").read_text().splitlines()]
    assert [r["ssim"] == pytest.approx(1.0) for r in rows] == [True, False] * 4
    assert rows[0]["psnr"] == 100.0 and rows[1]["psnr"] < 40


def test_pose_metrics_equal_direct_calls(world):
    m = world["result"].summary["metrics"]
    generated_dets, reference_dets = world["calls"][:8], world["calls"][8:]
    dataset = open_pose_dataset(world["reference"])
    targets = [pose_metrics.PoseGroundTruth(s.keypoints, s.bboxes, s.areas) for s in dataset]
    direct = pose_metrics.pose_agreement(generated_dets, targets, "segment")
    assert m["oks"]["value"] == pytest.approx(direct.mean_oks, abs=1e-12)
    assert m["oks"]["ap"] == pytest.approx(direct.ap, abs=1e-12) and m["oks"]["n"] == direct.num_people
    assert m["oks"]["conventions"]["area_convention"] == "segment"
    debiased = pose_metrics.debiased_pose_agreement(generated_dets, reference_dets)
    assert m["oks_debiased"]["value"] == pytest.approx(debiased.mean_oks, abs=1e-12)
    checks = [anatomy.anatomy_checks(d.keypoints[0] if d.num_people else None, None, 0.5, (128, 128))
              for d in generated_dets]
    rate = anatomy.anomaly_rate(checks)
    assert m["anomaly_rate"]["value"] == rate.rate
    assert m["anomaly_rate"]["ci95"] == pytest.approx([rate.ci95_lo, rate.ci95_hi])
    assert "Wilson" in m["anomaly_rate"]["ci_method"]
    assert 0.0 <= m["pck"]["value"] <= 1.0 and m["pck"]["conventions"]["threshold"] == 0.2
    assert all(m[k]["images_per_s"] > 0 for k in m)
    assert world["result"].summary["pairing"] == "stem"


def test_body_states_split_images_into_three_wilson_rates(world):
    from humantune.eval.anatomy_judge import judge_images
    from humantune.eval.preference import wilson_interval

    m = world["result"].summary["metrics"]["body_states"]
    rows = world["result"].per_image
    p = judge_images(_batch(world["generated"]))
    detected = [d.num_people > 0 for d in world["calls"][:8]]
    states = ["no_person" if not d else "broken" if q > 0.5 else "whole" for d, q in zip(detected, p)]
    assert [r["body_state"] for r in rows] == states
    assert [r["judge_p_broken"] for r in rows] == pytest.approx(p.tolist(), abs=1e-12)
    for state in ("no_person", "broken", "whole"):
        k = states.count(state)
        assert m["rates"][state]["count"] == k and m["rates"][state]["rate"] == k / 8
        assert m["rates"][state]["ci95"] == pytest.approx(list(wilson_interval(k, 8)))
        assert m[f"{state}_rate"] == k / 8
    assert m["value"] == m["broken_rate"] and m["ci95"] == m["rates"]["broken"]["ci95"] and m["n"] == 8
    assert "anomaly_rate" in world["result"].summary["metrics"]  # the old key stays beside the new one


def test_per_image_oks_averages_to_the_metric(world):
    rows = world["result"].per_image
    assert len(rows) == 8 and {"oks", "anomaly_score", "detection", "target_keypoints"} <= set(rows[0])
    people = [len([p for p in r["target_keypoints"] if any(v > 0 for _, _, v in p)]) for r in rows]
    pooled = sum(r["oks"] * n for r, n in zip(rows, people)) / sum(people)
    assert pooled == pytest.approx(world["result"].summary["metrics"]["oks"]["value"])


def test_report_has_metric_table_and_images(world):
    html = (world["root"] / "out" / "report.html").read_text()
    assert "<table>" in html and "<td>ssim</td>" in html and "<td>oks</td>" in html
    assert html.count("data:image/png;base64,") >= 8 + 1  # grid tiles and the OKS histogram
    assert "Worst" in html


def test_mismatched_counts_name_both_counts_and_folders(world, tmp_path):
    short = tmp_path / "short"
    shutil.copytree(world["generated"], short)
    sorted(short.glob("*.png"))[-1].unlink()
    with pytest.raises(HumantuneError) as err:
        evaluate(short, world["reference"], out_dir=tmp_path / "out", metrics="ssim", progress=False)
    message = str(err.value)
    assert "7 generated" in message and "8 reference" in message and str(short.name) in message
    assert str(world["reference"]) in message and "\n" not in message


def test_unknown_metric_lists_the_known_ones(world, tmp_path):
    with pytest.raises(HumantuneError, match="unknown metric 'sharpness'; known: oks, ") as err:
        evaluate(world["generated"], world["reference"], out_dir=tmp_path / "out", metrics="ssim,sharpness")
    assert all(name in str(err.value) for name in METRICS)


def test_fid_without_weights_fails_in_one_line_before_scoring(world, tmp_path):
    with pytest.raises(HumantuneError) as err:
        evaluate(world["generated"], world["reference"], out_dir=tmp_path / "out", metrics=["fid"],
                 inception_weights=tmp_path / "missing.pth")
    assert "pt_inception-2015-12-05-6726825d.pth" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_metric_needing_missing_input_is_an_error(world, tmp_path):
    with pytest.raises(HumantuneError, match="metric 'ssim' needs a reference"):
        evaluate(world["generated"], None, out_dir=tmp_path / "out", metrics="ssim")


def test_metadata_targets_and_order_pairing(world, tmp_path):
    gen = tmp_path / "gen"
    gen.mkdir()
    rows = []
    for i, sample in enumerate(open_pose_dataset(world["reference"])[:3]):
        sample.image.save(gen / f"sample_{i}.png")
        rows.append({"file_name": f"sample_{i}.png", "text": sample.caption,
                     "keypoints": sample.keypoints.tolist()})
    (gen / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = read_generated_folder(gen)
    assert [i.file_name for i in items] == ["sample_0.png", "sample_1.png", "sample_2.png"]
    assert items[0].target.areas is None and items[0].prompt == rows[0]["text"]
    with pytest.raises(HumantuneError, match="use --area-convention bbox"):
        evaluate(gen, out_dir=tmp_path / "out", metrics="oks")
    assert pair_by(["a.png", "b.png"], ["images/x.png", "images/y.png"], "auto", "G", "R") == ([0, 1], "order")
    assert pair_by(["b.png", "a.png"], ["images/a.png", "images/b.png"], "auto", "G", "R") == ([1, 0], "stem")
    with pytest.raises(HumantuneError, match="'a' has no reference sample"):
        pair_by(["a.png"], ["images/x.png"], "stem", "G", "R")
