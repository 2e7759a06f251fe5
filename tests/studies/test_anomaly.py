"""The anomaly workflow (scan → collect → compare) on a tiny random pipeline, with a scripted pose estimator so the
expected rates are known exactly."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from humantune.data.mannequin.world import MannequinConfig, render_sample
from humantune.errors import DataError, HumantuneError
from humantune.data.mannequin.prompted import collect
from humantune.eval.anatomy import score_anatomy
from humantune.eval.anatomy_judge import AnatomyJudgeConfig
from humantune.eval.pose_estimators import PoseEstimate, PoseEstimator
from humantune.eval.preference import wilson_interval
from humantune.eval.statistics import proportion_difference_interval
from humantune.models import lora
from humantune.models.generation import generate_images, load_pipeline
from humantune.studies.anomaly.compare import _set_distances, compare
from humantune.studies.anomaly.pairs import preference_pairs, score_preferences
from humantune.studies.anomaly.scan import rank_prompts, scan
from tests.tiny_pipelines import save_pipeline

TARGETS = ["a man in a red shirt and blue jeans lying on the grass", "a woman in a blue dress lying on the street"]
CONTROLS = ["a man in a red shirt and blue jeans standing on the grass"]


def _good_skeleton() -> np.ndarray:
    """Ground-truth keypoints of a standing mannequin at 32² (passes every anatomy check), as a detection."""
    cfg = MannequinConfig(n=1, seed=0, size=32, action_mix={"standing": 1.0}, second_person_prob=0.0,
                          truncate_prob=0.0)
    kp = render_sample(cfg, 0).keypoints[0].astype(np.float32)
    kp[:, 2] = (kp[:, 2] > 0).astype(np.float32)
    return kp


class ScriptedEstimator(PoseEstimator):
    """Finds a correct person in the calls listed in ``detect`` (0-based call order) and nobody otherwise."""

    def __init__(self, detect):
        self.detect, self.calls, self.kp = set(detect), 0, _good_skeleton()

    def estimate(self, image):
        hit = self.calls in self.detect
        self.calls += 1
        if not hit:
            return PoseEstimate(np.zeros((0, 17, 3), np.float32), np.zeros(0, np.float32))
        return PoseEstimate(self.kp[None], np.ones(1, np.float32))


class ScriptedJudge:
    """An anatomy judge returning the given P(broken) arrays, one per call."""

    def __init__(self, *calls):
        self.calls, self.config = [np.asarray(c, np.float64) for c in calls], AnatomyJudgeConfig()

    def judge(self, images):
        p = self.calls.pop(0)
        assert len(p) == len(images)
        return p


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_pipeline("sd3", tmp_path_factory.mktemp("base") / "sd3")


@pytest.fixture(scope="module")
def lora_dir(base, tmp_path_factory):
    pipe = load_pipeline(base)
    lora.add_lora(pipe.transformer, rank=4)
    g = torch.Generator().manual_seed(0)
    for name, p in pipe.transformer.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=g)
    out = tmp_path_factory.mktemp("lora") / "lora"
    lora.save_lora(pipe, out, {"transformer": pipe.transformer})
    return out


# ---------------------------------------------------------------------------------------------------- statistics


def test_prompts_rank_worst_first_with_wilson_intervals():
    flags = [[True, False, False, False], [True] * 4, [False, True, False, False]]
    ranking = rank_prompts(["a", "b", "c"], flags)
    assert [r["prompt"] for r in ranking] == ["b", "a", "c"]                     # a and c tie: input order kept
    assert [r["rank"] for r in ranking] == [1, 2, 3] and ranking[1]["rate"] == 0.25
    assert ranking[1]["ci95"] == pytest.approx(list(wilson_interval(1, 4)))


def test_missed_person_is_anomalous_and_a_correct_one_is_not():
    image = np.zeros((32, 32, 3), np.uint8)
    missed, found = score_anatomy([image, image], ScriptedEstimator({1}))
    assert missed.anomalous and missed.violations == ["not_detected"] and missed.keypoints is None
    assert not found.anomalous and found.score < 1.0


# ---------------------------------------------------------------------------------------------------- scan


def test_scan_ranks_prompts_and_reports_the_worst_cases(base, tmp_path):
    # prompt 0: images 0-3 → detected in 0 and 1 (rate 0.5); prompt 1: images 4-7 → none detected (rate 1.0)
    result = scan(base, TARGETS, 4, 10, tmp_path / "scan", estimator=ScriptedEstimator({0, 1}), worst=3,
                        progress=False)
    assert [(r["prompt"], r["rate"], r["anomalous"], r["n"]) for r in result["prompts"]] == \
        [(TARGETS[1], 1.0, 4, 4), (TARGETS[0], 0.5, 2, 4)]
    assert result["overall"]["rate"] == 0.75 and result["overall"]["ci95"] == pytest.approx(list(wilson_interval(6, 8)))
    saved = json.loads((tmp_path / "scan" / "scan.json").read_text())
    assert saved["prompts"] == result["prompts"] and saved["generation"]["num_inference_steps"] == 2
    rows = [json.loads(x) for x in (tmp_path / "scan" / "images" / "metadata.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in rows] == list(range(10, 18))                     # prompt p image j: seed + p·n + j
    assert [r["anomalous"] for r in rows] == [False, False] + [True] * 6
    # the same seed gives the same image as plain generation
    pipe = load_pipeline(base)
    again = generate_images(pipe, [TARGETS[1]], per_image_seeds=[15], progress=False, num_inference_steps=2,
                            guidance_scale=2.0, height=32, width=32, max_sequence_length=4)[0]
    assert np.array_equal(np.asarray(again), np.asarray(Image.open(tmp_path / "scan" / "images" / "00005.png")))
    html = (tmp_path / "scan" / "report.html").read_text()
    assert html.count("<img") == 3 and "not_detected" in html                   # worst=3 cases shown


def test_scan_reports_no_person_broken_and_whole_rates(base, tmp_path):
    # prompt 0: images 0-2 detected, judged broken / whole / broken, image 3 missed; prompt 1: nobody detected
    judge = ScriptedJudge([0.9, 0.1, 0.7, 0.9, 0.1, 0.1, 0.9, 0.9])
    result = scan(base, TARGETS, 4, 10, tmp_path / "scan", estimator=ScriptedEstimator({0, 1, 2}),
                  anatomy_judge=judge, progress=False)
    overall = result["body_rates"]
    assert [overall[s]["count"] for s in ("no_person", "broken", "whole")] == [5, 2, 1]
    assert overall["broken"]["rate"] == 0.25 and overall["broken"]["ci95"] == pytest.approx(
        list(wilson_interval(2, 8)))
    by_prompt = {r["prompt"]: r["body_rates"] for r in result["prompts"]}
    assert [by_prompt[TARGETS[0]][s]["count"] for s in ("no_person", "broken", "whole")] == [1, 2, 1]
    assert by_prompt[TARGETS[1]]["no_person"]["rate"] == 1.0
    assert result["overall"]["rate"] == 0.625  # the anomaly rate stays: 5 missed, no check fires on the others
    rows = [json.loads(x) for x in (tmp_path / "scan" / "images" / "metadata.jsonl").read_text().splitlines()]
    assert [r["body_state"] for r in rows[:4]] == ["broken", "whole", "broken", "no_person"]
    assert rows[0]["judge_p_broken"] == 0.9
    assert "found, judged broken" in (tmp_path / "scan" / "report.html").read_text()


def test_missing_judge_fails_before_generating(base, tmp_path):
    with pytest.raises(HumantuneError, match="anatomy judge: .*config.json does not exist"):
        scan(base, TARGETS, 1, 0, tmp_path / "scan", estimator=ScriptedEstimator(()),
             anatomy_judge=tmp_path / "no-judge", progress=False)
    assert not (tmp_path / "scan").exists()


def test_scan_refuses_a_non_empty_output_and_bad_counts(base, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(HumantuneError, match="exists and is not empty"):
        scan(base, TARGETS, 1, 0, tmp_path / "full", estimator=ScriptedEstimator(()), progress=False)
    with pytest.raises(HumantuneError, match="--n must be at least 1"):
        scan(base, TARGETS, 0, 0, tmp_path / "zero", estimator=ScriptedEstimator(()), progress=False)
    with pytest.raises(HumantuneError, match="no prompts given"):
        scan(base, ["  "], 2, 0, tmp_path / "none", estimator=ScriptedEstimator(()), progress=False)


# ---------------------------------------------------------------------------------------------------- compare


def test_compare_uses_the_same_seeds_and_measures_the_change(base, lora_dir, tmp_path):
    reference = collect(TARGETS, tmp_path / "correct", n=2, seed=0, size=32, progress=False)
    n = 3
    # call order: base images (2 targets × 3, then 1 control × 3), then the tuned ones in the same order.
    # base: nothing detected; tuned: targets detected except one image, controls as before.
    detect = {9 + i for i in range(6)} - {9 + 4}
    result = compare(base, lora_dir, TARGETS, CONTROLS, n=n, seed=100, out=tmp_path / "cmp",
                           reference_dir=reference, estimator=ScriptedEstimator(detect), progress=False)
    target, control = result["anomaly_rate"]["target"], result["anomaly_rate"]["control"]
    assert (target["base"]["rate"], target["tuned"]["anomalous"], target["tuned"]["n"]) == (1.0, 1, 6)
    assert target["relative_reduction"] == pytest.approx(1 - 1 / 6)
    assert target["difference"]["ci95"] == pytest.approx(list(proportion_difference_interval(1, 6, 6, 6)))
    assert control["difference"]["value"] == 0.0
    assert [p["prompt"] for p in result["per_prompt"]] == TARGETS + CONTROLS

    base_rows = [json.loads(x) for x in (tmp_path / "cmp/base/metadata.jsonl").read_text().splitlines()]
    tuned_rows = [json.loads(x) for x in (tmp_path / "cmp/tuned/metadata.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in base_rows] == [r["seed"] for r in tuned_rows] == list(range(100, 109))
    b0 = np.asarray(Image.open(tmp_path / "cmp/base/00000.png"))
    t0 = np.asarray(Image.open(tmp_path / "cmp/tuned/00000.png"))
    assert not np.array_equal(b0, t0)                                           # the LoRA changed the image
    pipe = load_pipeline(base)
    plain = generate_images(pipe, [TARGETS[0]], per_image_seeds=[100], progress=False, num_inference_steps=2,
                            guidance_scale=2.0, height=32, width=32, max_sequence_length=4)[0]
    assert np.array_equal(np.asarray(plain), b0)

    attributes = result["attribute_accuracy"]["target"]
    assert attributes["tuned"]["counted"] == sum(r["attributes_counted"] for r in tuned_rows if r["set"] == "target")

    ref = result["reference"]
    assert ref["n_images"] == 4 and ref["tuned"]["pairs"] == 6 * 2              # each image vs its prompt's 2
    assert "skipped" in ref["fid"] and ref["base"]["world_fd"] > 0
    from humantune.eval.image_metrics import psnr_per_image, ssim_per_image

    refs = [np.asarray(Image.open(reference / f"images/{i:06d}.png")) for i in range(4)]
    ssim, psnr = [], []
    for row in tuned_rows[:6]:
        image = np.asarray(Image.open(tmp_path / "cmp/tuned" / row["file_name"]))
        own = np.stack(refs[:2] if row["text"] == TARGETS[0] else refs[2:])
        ssim.append(ssim_per_image(np.stack([image] * 2), own, 255.0).mean())
        psnr.append(psnr_per_image(np.stack([image] * 2), own, 255.0, max_db=100.0).mean())
    assert ref["tuned"]["ssim"]["value"] == pytest.approx(np.mean(ssim))
    assert ref["tuned"]["psnr"]["value"] == pytest.approx(np.mean(psnr))

    # the preference pair set: sides random, the key consistent with the pictures, kept out of the pair folder
    key = json.loads((tmp_path / "cmp/key.json").read_text())
    assert len(key["pairs"]) == 6 and not (tmp_path / "cmp/pairs/key.json").exists()
    assert {e["left"] for e in key["pairs"]} == {"base", "tuned"}
    for e in key["pairs"]:
        pair = np.asarray(Image.open(tmp_path / "cmp" / e["file"]))
        left = np.asarray(Image.open(tmp_path / "cmp" / e[f"{e['left']}_image"]))
        right = np.asarray(Image.open(tmp_path / "cmp" / e[f"{e['right']}_image"]))
        assert np.array_equal(pair[:, :32], left) and np.array_equal(pair[:, -32:], right)
    page = (tmp_path / "cmp/pairs/index.html").read_text()
    assert page.count("<img") == 6 and "tuned" not in page.lower()
    assert (tmp_path / "cmp/pairs/responses.csv").read_text().splitlines()[0] == "pair,choice"
    assert "Anomaly rate" in (tmp_path / "cmp/report.html").read_text()


def test_compare_reports_the_change_of_each_body_state(base, lora_dir, tmp_path):
    n = 3
    # base: nothing detected (9 images); tuned: targets 9-14 detected; the judge calls target 0's tuned images broken
    detect = {9 + i for i in range(6)}
    judge = ScriptedJudge([0.9] * 9, [0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9])
    result = compare(base, lora_dir, TARGETS, CONTROLS, n=n, seed=100, out=tmp_path / "cmp",
                     estimator=ScriptedEstimator(detect), anatomy_judge=judge, progress=False)
    target = result["body_rates"]["target"]
    assert target["no_person"]["base"]["rate"] == 1.0 and target["no_person"]["tuned"]["rate"] == 0.0
    assert (target["broken"]["tuned"]["count"], target["whole"]["tuned"]["count"]) == (3, 3)
    assert target["broken"]["difference"]["value"] == 0.5
    assert target["broken"]["difference"]["ci95"] == pytest.approx(list(proportion_difference_interval(3, 6, 0, 6)))
    assert result["body_rates"]["control"]["no_person"]["difference"]["value"] == 0.0
    assert result["anomaly_rate"]["target"]["tuned"]["rate"] == 0.0  # the old key beside the new ones
    first = result["per_prompt"][0]["body_rates"]
    assert first["tuned"]["broken"]["rate"] == 1.0 and first["base"]["no_person"]["rate"] == 1.0
    tuned_rows = [json.loads(x) for x in (tmp_path / "cmp/tuned/metadata.jsonl").read_text().splitlines()]
    assert [r["body_state"] for r in tuned_rows] == ["broken"] * 3 + ["whole"] * 3 + ["no_person"] * 3
    assert "Body states" in (tmp_path / "cmp/report.html").read_text()


def test_pair_sides_follow_the_pair_seed(tmp_path):
    images = [Image.new("RGB", (8, 8), (i, i, i)) for i in range(40)]
    key_a = preference_pairs(images[:20], images[20:], ["p"] * 20, list(range(20)), tmp_path / "a",
                                   tmp_path / "a.json", seed=5)
    key_b = preference_pairs(images[:20], images[20:], ["p"] * 20, list(range(20)), tmp_path / "b",
                                   tmp_path / "b.json", seed=5)
    key_c = preference_pairs(images[:20], images[20:], ["p"] * 20, list(range(20)), tmp_path / "c",
                                   tmp_path / "c.json", seed=6)
    sides = [e["left"] for e in key_a["pairs"]]
    assert sides == [e["left"] for e in key_b["pairs"]] != [e["left"] for e in key_c["pairs"]]
    rng = np.random.default_rng(5)
    assert sides == ["tuned" if rng.random() < 0.5 else "base" for _ in range(20)]


def test_preference_responses_score_as_a_win_rate(tmp_path):
    images = [Image.new("RGB", (4, 4))] * 4
    key = preference_pairs(images, images, ["p"] * 4, [0, 1, 2, 3], tmp_path / "pairs", tmp_path / "key.json", 0)
    tuned_side = ["left" if e["left"] == "tuned" else "right" for e in key["pairs"]]
    other = {"left": "right", "right": "left"}
    lines = ["pair,choice", f"0000,{tuned_side[0]}", f"0001,{tuned_side[1]}", f"0002,{other[tuned_side[2]]}",
             "0003,tie"]
    (tmp_path / "answers.csv").write_text("\n".join(lines) + "\n")
    result = score_preferences(tmp_path / "key.json", tmp_path / "answers.csv")
    assert (result["tuned_wins"], result["base_wins"], result["ties"]) == (2, 1, 1)
    assert result["win_rate"] == 2.5 / 4 and result["ci95"] == pytest.approx(list(wilson_interval(2.5, 4)))
    (tmp_path / "bad.csv").write_text("pair,choice\n0000,middle\n")
    with pytest.raises(DataError, match="line 2: choice must be left, right or tie"):
        score_preferences(tmp_path / "key.json", tmp_path / "bad.csv")


def test_compare_fails_fast_on_missing_inputs(base, lora_dir, tmp_path):
    with pytest.raises(HumantuneError, match="FID needs the Inception weights"):
        compare(base, lora_dir, TARGETS, [], 1, 0, tmp_path / "a", inception_weights=tmp_path / "none.pth",
                      estimator=ScriptedEstimator(()), progress=False)
    with pytest.raises(HumantuneError, match="no LoRA weights at"):
        compare(base, tmp_path / "nothing", TARGETS, [], 1, 0, tmp_path / "b", estimator=ScriptedEstimator(()),
                      progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_set_distances_are_frechet_distances_of_the_feature_sets():
    from humantune.eval.distribution import feature_statistics, frechet_distance

    class Features:  # a stand-in feature net: per-channel means and stds
        def extract(self, images):
            return np.stack([np.concatenate([im.mean((0, 1)), im.std((0, 1))]) for im in images]).astype(np.float64)

        def __call__(self, batch):                 # the InceptionFeatures interface: (N, 3, H, W) floats in [0, 1]
            return np.concatenate([batch.mean((2, 3)), batch.std((2, 3))], 1).astype(np.float64)

    rng = np.random.default_rng(0)
    gen = [rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(5)]
    ref = [rng.integers(0, 128, (8, 8, 3), dtype=np.uint8) for _ in range(4)]
    net = Features()
    out = _set_distances(gen, ref, net, net)
    assert out["world_fd"] == pytest.approx(frechet_distance(*feature_statistics(net.extract(gen)),
                                                             *feature_statistics(net.extract(ref))))
    scaled = [np.asarray(im, np.float32).transpose(2, 0, 1)[None] / 255.0 for im in gen + ref]
    fg, fr = np.concatenate([net(x) for x in scaled[:5]]), np.concatenate([net(x) for x in scaled[5:]])
    assert out["fid"] == pytest.approx(frechet_distance(*feature_statistics(fg), *feature_statistics(fr)))
    assert _set_distances(gen[:1], ref, net, None) == {"world_fd": None}
