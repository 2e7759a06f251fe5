"""``humantune entprog cei``: the command line of :mod:`humantune.studies.entprog_cei` (torch and diffusers are
imported inside the handler, so ``humantune --help`` stays fast)."""

from __future__ import annotations

import argparse
from pathlib import Path

from humantune.errors import HumantuneError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value}")
    return value


def add_entprog_parser(sub, formatter=argparse.HelpFormatter) -> None:
    """Register ``humantune entprog cei`` on the CLI's subparsers."""
    ep = sub.add_parser("entprog", formatter_class=formatter, help="Ent-Prog tools: CEI block priorities")
    ep_sub = ep.add_subparsers(dest="entprog_command", metavar="ENTPROG_COMMAND", required=True)
    c = ep_sub.add_parser(
        "cei", formatter_class=formatter, help="CEI priority of every residual block (JSON + bar plot)",
        description="π(b) = log(σ_skip(b)(ε̂) / σ(ε̂)) of every residual block of the model's denoiser over random "
                    "(x_t, t, c) samples (papers.md §3). Writes OUT/cei.json (scores in block order, per reading, "
                    "and the ranking) and OUT/cei.png; cached by a digest of weights + data + settings.")
    c.add_argument("--model", required=True, help="pipeline: shipped name (tiny-sd3, tiny-sd), directory or hub id")
    c.add_argument("--data", default=None, help="pose folder of images + captions (default: 64 images of a "
                                                "mannequin world)")
    c.add_argument("--samples", type=positive_int, default=1000, help="random (x_t, t, c) samples (default: 1000)")
    c.add_argument("--batch-size", type=positive_int, default=50, help="samples per forward pass (default: 50)")
    c.add_argument("--sigma", choices=["sample", "pooled"], default="sample", help="σ per sample or pooled")
    c.add_argument("--average", choices=["log_ratio", "ratio"], default="log_ratio",
                   help="mean of log-ratios or log of the mean ratio")
    c.add_argument("--resolution", type=positive_int, default=None, help="image size (default: the model's)")
    c.add_argument("--seed", type=int, default=0, help="seed of the samples (default: 0)")
    c.add_argument("--out", required=True, type=Path, help="output folder (cei.json, cei.png)")
    c.set_defaults(func=cmd_cei)


def cmd_cei(args: argparse.Namespace) -> int:
    from humantune.studies.entprog_cei import CeiConfig, cei_study

    try:
        cfg = CeiConfig(samples=args.samples, batch_size=args.batch_size, sigma=args.sigma, average=args.average,
                        seed=args.seed)
    except ValueError as e:
        raise HumantuneError(f"entprog cei: {e}") from None
    result = cei_study(args.model, args.out, args.data, cfg, args.resolution)
    print(f"ranking ({result['reading']}): " + ", ".join(result["ranking"]))
    print(f"wrote {args.out / 'cei.json'} and {args.out / 'cei.png'}")
    return 0
