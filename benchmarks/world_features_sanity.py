"""Does the world Fréchet distance (humantune.eval.world_features) behave like an FD should?

Reference set R: samples 0..n−1 of the default world (seed ``--seed``). Each row is FD(R, X) on the shipped
WorldFeatureNet features, with X of the same size n:

- ``R itself``: 0 up to rounding;
- ``same world, disjoint``: samples n..2n−1 of the same world — the sampling floor every other row is read against;
- ``only lying`` / ``only sitting`` / ``no two-person images``: worlds with another action mix (the last a
  control that should stay near the floor);
- ``blur σ``: the disjoint sample, Gaussian-blurred (cv2.GaussianBlur, σ in pixels of the 128-px image);
- ``noise σ``: the disjoint sample plus Gaussian noise of standard deviation σ (uint8 levels), clipped.

Expected: the disjoint sample is small, the other mixes larger, and blur and noise grow monotonically with σ
(the weakest blur and noise are allowed to sit within the sampling floor: the net sees 64-px area-downsampled
images, which hide them).

    python benchmarks/world_features_sanity.py [--n 500] [--seed 100]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_io import print_table, write_result  # noqa: E402

from humantune.data.mannequin.world import MannequinConfig, render_sample  # noqa: E402
from humantune.eval.distribution import feature_statistics, frechet_distance  # noqa: E402
from humantune.eval.world_features import DEFAULT_WEIGHTS_DIR, WorldFeatureNet  # noqa: E402

BLURS = (0.5, 1.0, 2.0, 4.0)
NOISES = (4.0, 8.0, 16.0, 32.0)


def render(n: int, seed: int, start: int = 0, **overrides) -> list[np.ndarray]:
    cfg = MannequinConfig(n=start + n, seed=seed, **overrides)
    return [render_sample(cfg, i).image for i in range(start, start + n)]


def blur(images: list[np.ndarray], sigma: float) -> list[np.ndarray]:
    return [cv2.GaussianBlur(im, (0, 0), sigma) for im in images]


def add_noise(images: list[np.ndarray], sigma: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(im + rng.normal(0, sigma, im.shape), 0, 255).astype(np.uint8) for im in images]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="images per set")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR)
    ap.add_argument("--out", type=Path, help="result JSON (default: benchmarks/results/world_features_sanity.json)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    net = WorldFeatureNet.load(args.weights)
    reference = render(args.n, args.seed)
    disjoint = render(args.n, args.seed, start=args.n)
    sets = {
        "R itself": reference,
        "same world, disjoint": disjoint,
        "no two-person images": render(args.n, args.seed + 1, second_person_prob=0.0),
        "only sitting": render(args.n, args.seed + 2, action_mix={"sitting": 1.0}),
        "only lying": render(args.n, args.seed + 3, action_mix={"lying_back": 1.0, "lying_side": 1.0}),
        **{f"blur sigma={s:g}": blur(disjoint, s) for s in BLURS},
        **{f"noise sigma={s:g}": add_noise(disjoint, s, args.seed) for s in NOISES},
    }
    ref_stats = feature_statistics(net.extract(reference))
    rows = []
    for name, images in sets.items():
        fd = frechet_distance(*ref_stats, *feature_statistics(net.extract(images)))
        rows.append({"set": name, "n": len(images), "fd": fd})
    fd = {r["set"]: r["fd"] for r in rows}
    floor = fd["same world, disjoint"]
    for r in rows:
        r["ratio_to_floor"] = r["fd"] / floor
    blur_fd = [fd[f"blur sigma={s:g}"] for s in BLURS]
    noise_fd = [fd[f"noise sigma={s:g}"] for s in NOISES]
    checks = {
        "self_is_zero": abs(fd["R itself"]) < 1e-6 * max(1.0, floor),
        "other_mix_larger": min(fd["only lying"], fd["only sitting"]) > 2 * floor,
        "blur_monotone": bool(np.all(np.diff(blur_fd) > 0)),
        "noise_monotone": bool(np.all(np.diff(noise_fd) > 0)),
        "strong_blur_and_noise_above_floor": min(blur_fd[-1], noise_fd[-1]) > 2 * floor,
    }
    summary = {"n_per_set": args.n, "seed": args.seed, "weights": str(args.weights),
               "seconds": time.perf_counter() - t0, "checks": checks, "all_checks_pass": all(checks.values())}
    path = write_result("world_features_sanity", {"summary": summary, "rows": rows}, args.out)
    print_table(rows, ["set", "n", "fd", "ratio_to_floor"])
    print(f"\nchecks: {checks} -> {path}")


if __name__ == "__main__":
    main()
