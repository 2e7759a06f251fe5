"""Recipe: Ent-Prog — entropy-guided prioritized progressive fine-tuning (``shared/papers.md`` §3).

``humantune train ent-prog --config configs/ent_prog/quick.yaml --output-dir DIR`` fine-tunes a denoiser on a new
task faster and with less memory by training only its most important residual blocks:

1. **CEI ranking** — π(b) = log(σ_skip(b)(ε̂)/σ(ε̂)) of every eligible block over ``cei.samples`` random
   (x_t, t, c) of the training data (:mod:`humantune.studies.entprog_cei`, cached in ``OUT/cei``); blocks ranked by
   π (``ordering: random`` ranks them by a seeded permutation instead: the ablation);
2. **stages** — stage k trains only the top-m_k blocks (:class:`~humantune.train.progressive.ProgressiveBlocks`:
   the others have ``requires_grad`` False and no optimizer state; everything before the first trainable block
   runs under ``no_grad`` when ``frozen_prefix``). With ``schedule: adaptive`` each stage starts with one epoch of
   the nested supernet in ``OUT/<stage>/search`` (every step trains the top-m for an m drawn from the stage's
   ``candidates`` M_k, then the held-out loss is measured on fixed timesteps and noises, and the step timed), picks
   m_k* = argmax CE(m) (read as ``trace`` says) into ``OUT/<stage>/choice.json``, and continues from the supernet
   weights with the top-m_k* blocks in ``OUT/<stage>/train``. ``schedule: fixed`` trains the top ``fixed_m``
   blocks (AutoProg-Zero style); ``schedule: full`` trains every parameter (plain full fine-tuning, the
   reference). Every stage saves ``OUT/<stage>/denoiser`` (diffusers format);
3. **evaluation** — the held-out loss (fixed timesteps and noises) of the base and of the result with a 95 %
   interval over held-out batches, the training-state memory per stage (parameters + gradients + AdamW state +
   saved activations, counted by ``saved_tensors_hooks``), sample images (base vs tuned, same seeds), and
   ``compare_with`` arms (e.g. ``full``) trained on the same data and budget in ``OUT/arms/<arm>`` for the
   loss-vs-wall-clock plot; ``OUT/results.json`` and ``OUT/report.html`` (CEI bar plot, CE(m) per stage,
   loss vs wall-clock, samples).

Tasks: ``text_image`` fine-tunes a StableDiffusion3Pipeline's transformer (or a StableDiffusionPipeline's UNet) on
images + captions (default: tiny-sd3 adapted to 64² mannequin images). The pose-guided tasks of
:mod:`humantune.recipes.pose_video` plug in through :mod:`humantune.recipes.ent_prog_tasks`.

Wall clock: every row of a stage's ``metrics.jsonl`` has ``step_seconds`` (forward, backward and optimizer step),
``overhead_seconds`` (the supernet's per-step held-out evaluation, part of the method's cost) and, every
``eval_every`` steps, ``heldout_loss``; the curve's time axis is CEI time + Σ step and overhead seconds (periodic
evaluations outside the supernet are measurement only and not counted).

Assumes: one process (the supernet's per-step choice of trained blocks is not synchronised for DDP). The engine
builds a new AdamW per phase (a stage's supernet epoch, its continuation, each stage); with ``carry_optimizer`` the
state of every parameter trained before is handed on (:class:`~humantune.train.progressive.OptimizerCarry`: newly
trained blocks start fresh, the others keep their moments), in memory. Resume: run the same command again (a stage
with its ``denoiser`` saved is skipped; a search or training phase continues from its last checkpoint,
bit-identically; with ``carry_optimizer``, a process resumed at a phase boundary starts that phase's AdamW fresh).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from humantune.config import option
from humantune.data.mannequin.world import MannequinConfig
from humantune.data.sources import DataSource
from humantune.errors import HumantuneError
from humantune.io import json_safe, write_json_atomic
from humantune.recipes import ent_prog_tasks as tasks
from humantune.studies.entprog_cei import CeiConfig, cached_cei
from humantune.train import stages as staging
from humantune.train.engine import Trainer, TrainConfig, read_metrics
from humantune.train.progressive import (
    OptimizerCarry, ProgressiveBlocks, SavedTensorBytes, best_candidate, candidate_efficiencies, supernet_choice,
    training_state_bytes,
)
from humantune.train.run_folder import RecipeRun, sigterm_as_interrupt

ARMS = {"ent-prog": ("adaptive", "cei"), "cei-fixed": ("fixed", "cei"), "random-adaptive": ("adaptive", "random"),
        "full": ("full", "cei")}
"""Benchmark arms: name → (schedule, ordering)."""


@dataclass
class EntProgStage(staging.StageConfig):
    """One progressive stage."""

    candidates: list[int] = option([2, 4, 6], "M_k: numbers of top blocks the supernet tries (schedule adaptive)")
    fixed_m: int | None = option(None, "m_k of schedule fixed (null: the largest candidate)")
    supernet_steps: int | None = option(None, "steps of the supernet epoch (null: one epoch of the training set)")
    train: TrainConfig = option(TrainConfig(max_steps=60, batch_size=8, learning_rate=1e-4, lr_scheduler="constant",
                                            weight_decay=0.0, max_grad_norm=1.0, checkpoint_every=50),
                                "optimisation of the stage (its supernet epoch included)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.candidates or min(self.candidates) < 1 or len(set(self.candidates)) != len(self.candidates):
            raise ValueError(f"candidates must be distinct numbers of blocks ≥ 1, got {self.candidates}")
        if self.fixed_m is not None and self.fixed_m < 1:
            raise ValueError(f"fixed_m must be at least 1, got {self.fixed_m}")
        if self.supernet_steps is not None and self.supernet_steps < 2:
            raise ValueError(f"supernet_steps must be at least 2 (CE needs two points), got {self.supernet_steps}")


@dataclass
class SampleConfig:
    """Sample images of the report (base vs tuned, same seeds)."""

    prompts: int = option(4, "held-out captions generated (0: none)")
    num_inference_steps: int = option(20, "sampling steps (the paper: 100)")
    guidance_scale: float = option(4.0, "classifier-free guidance (the paper: 4.0)")

    def __post_init__(self) -> None:
        if self.prompts < 0 or self.num_inference_steps < 1:
            raise ValueError(f"prompts must be at least 0 and num_inference_steps at least 1, got {self.prompts}, "
                             f"{self.num_inference_steps}")


@dataclass
class EntProgConfig:
    """``humantune train ent-prog``: CEI-prioritized progressive fine-tuning (papers.md §3)."""

    task: Literal["text_image", "pose_image", "pose_video"] = option(
        "text_image", "text_image: a text-to-image pipeline's denoiser on images + captions; pose_image / "
                      "pose_video: the pose-guided video model's pose phase / temporal phase (recipes/pose_video.py)")
    base_model: str = option("tiny-sd3", "text_image: pipeline (shipped name, directory or hub id); pose tasks: a "
                                         "PoseVideoPipeline folder, or 'new' for a freshly initialised denoiser")
    resolution: int = option(64, "training image size")
    train_data: DataSource = option(DataSource(world=MannequinConfig(n=256, seed=3, size=64)), "training samples")
    heldout_data: DataSource = option(DataSource(world=MannequinConfig(n=32, seed=4, size=64)),
                                      "held-out samples (fixed timesteps and noises)")
    heldout_batch_size: int = option(8, "held-out samples per evaluation batch (intervals are over these batches)")
    heldout_seed: int = option(1234, "seed of the held-out evaluation's latents, noises and timesteps")
    search_heldout_batches: int = option(1, "held-out batches the supernet evaluates after every step (the paper's "
                                            "'fixed small held-out set'; its time counts as the method's overhead)")
    cei: CeiConfig = option(CeiConfig(), "CEI measurement")
    cei_dir: Path | None = option(None, "where CEI is cached (cei.json, cei.png; reused when its digest of weights + "
                                        "data + settings matches); null: OUT/cei")
    ordering: Literal["cei", "random"] = option("cei", "block priority: CEI, or a seeded random order (ablation)")
    schedule: Literal["adaptive", "fixed", "full"] = option(
        "adaptive", "adaptive: supernet + CE(m) per stage (Ent-Prog); fixed: top fixed_m blocks per stage; full: "
                    "plain full fine-tuning")
    trace: Literal["credited", "sampled"] = option(
        "credited", "how the supernet's held-out losses give CE(m): credited: each step's own loss drop credited to "
                    "the m it trained; sampled: ℓ_m = losses after the steps that trained m (humantune.train."
                    "progressive)")
    always_train: list[str] = option([], "top-level denoiser modules trained in every stage besides the top-m blocks "
                                         "(e.g. [norm_out, proj_out]: the output layers, after every block, so the "
                                         "frozen prefix is unaffected); [] trains blocks only")
    carry_optimizer: bool = option(True, "carry AdamW state across a stage's phases and stages (every arm, full "
                                         "fine-tuning included); false: each phase starts a new AdamW")
    frozen_prefix: bool = option(True, "run the blocks before the first trainable one under no_grad (stores no "
                                       "activations for them)")
    stages: list[EntProgStage] = option(
        [EntProgStage(name="stage1", candidates=[1, 2, 3], supernet_steps=12),
         EntProgStage(name="stage2", candidates=[3, 4, 6], supernet_steps=12)], "progressive stages")
    eval_every: int = option(10, "held-out loss every N steps outside the supernet (for the wall-clock curve)")
    compare_with: list[Literal["ent-prog", "cei-fixed", "random-adaptive", "full"]] = option(
        [], "arms also trained (same data and budget) in OUT/arms/<arm> for the report's loss-vs-wall-clock plot")
    samples: SampleConfig = option(SampleConfig(), "report samples")
    pose_video: str | None = option(None, "pose tasks: a pose-video config YAML for data and model sizes "
                                          "(configs/pose_video/*.yaml); null: its defaults")

    def __post_init__(self) -> None:
        staging.check_stages(self.stages)
        if self.train_data.identity() == self.heldout_data.identity():
            raise ValueError("heldout_data must differ from train_data")
        if any("." in name for name in self.always_train):
            raise ValueError(f"always_train names top-level modules (no dots), got {self.always_train}")
        if min(self.eval_every, self.heldout_batch_size, self.search_heldout_batches) < 1:
            raise ValueError("eval_every, heldout_batch_size and search_heldout_batches must be at least 1")


# ---------------------------------------------------------------------------------------------------------- the task


class EntProgTask:
    """Wraps a stage's :class:`~humantune.train.engine.TrainingTask` (``inner``: its trainable module is the whole
    denoiser) with Ent-Prog's step: which blocks train (the top ``fixed`` m, or per step the top m drawn from
    ``candidates``), the frozen prefix around the forward pass, the step time, the training-state bytes of each m
    and the held-out loss (every step in the supernet, else every ``eval_every`` steps)."""

    def __init__(self, inner, blocks: ProgressiveBlocks, heldout, samples_per_step: int, seed: int, stage: int,
                 candidates: list[int] | None, fixed: list[str] | None, frozen_prefix: bool, eval_every: int,
                 max_steps: int, search_batches: int = 1, always_train: list[str] = (),
                 full_trainable: list[str] | None = None) -> None:
        self.inner, self.blocks, self.heldout, self.search_batches = inner, blocks, heldout, search_batches
        self.samples_per_step, self.seed, self.stage = samples_per_step, seed, stage
        self.candidates, self.fixed, self.prefix = candidates, fixed, frozen_prefix
        self.eval_every, self.max_steps = eval_every, max_steps
        self._step, self._t0, self.m = -1, 0.0, None
        self.state_bytes: dict[int, dict] = {}
        self.denoiser = next(iter(inner.trainable_modules().values()))
        progressive = candidates is not None or fixed is not None
        for name, p in self.denoiser.named_parameters():
            # full fine-tuning: every parameter the task trains (all, or the phase's modules); Ent-Prog: only blocks
            p.requires_grad_(not progressive and (full_trainable is None or _under(name, full_trainable)))
        if progressive:
            blocks.train_only(fixed if fixed is not None else blocks.top(max(candidates)))
            for name, p in self.denoiser.named_parameters():
                if name.split(".")[0] in always_train:
                    p.requires_grad_(True)
        self.always_train = list(always_train) if progressive else []

    def trainable_modules(self):
        return self.inner.trainable_modules()

    def frozen_modules(self):
        return self.inner.frozen_modules()

    def attach(self, modules):
        self.inner.attach(modules)

    def dataset(self):
        return self.inner.dataset()

    def collate(self, items):
        return self.inner.collate(items)

    def validate(self, step, out_dir):
        return {}

    def loss(self, batch, generator):
        step = generator.positions[0] // self.samples_per_step
        if step != self._step:   # the step's first micro-batch
            self._step = step
            if self.candidates is not None:
                self.m = supernet_choice(self.seed, self.stage, step, self.candidates)
                self.blocks.train_top(self.m)
            self._t0 = time.perf_counter()
        key = self.m if self.m is not None else -1
        probe = SavedTensorBytes(exclude=list(self.denoiser.parameters())) if key not in self.state_bytes else None
        prefix = self.prefix and (self.fixed is not None or self.candidates is not None)
        with self.blocks.frozen_prefix(prefix), _grad_checked(self.denoiser, self.always_train if prefix else []):
            if probe is None:
                return self.inner.loss(batch, generator)
            with probe:
                loss, logs = self.inner.loss(batch, generator)
        trained = [p for p in self.denoiser.parameters() if p.requires_grad]
        self.state_bytes[key] = training_state_bytes(list(self.denoiser.parameters()), trained, probe.bytes)
        return loss, logs

    def on_step_end(self, step, row):
        row = {"step_seconds": time.perf_counter() - self._t0, "trained_params":
               sum(p.numel() for p in self.denoiser.parameters() if p.requires_grad)}
        key = self.m if self.m is not None else -1
        if key in self.state_bytes:
            row["state_bytes"] = self.state_bytes[key]["total"]
            row["activation_bytes"] = self.state_bytes[key]["activations"]
        if self.candidates is not None:
            t = time.perf_counter()
            row.update(m=self.m, search_loss=float(self.heldout(self.search_batches).mean()))
            row["overhead_seconds"] = time.perf_counter() - t
        if step % self.eval_every == 0 or step == self.max_steps:   # measurement only: not on the clock
            row["heldout_loss"] = float(self.heldout().mean())
        return row


def _under(name: str, modules: list[str]) -> bool:
    """Whether parameter ``name`` lies in one of ``modules`` (whole name components: 'blocks.1' is not 'blocks.10')."""
    return any(name == m or name.startswith(m + ".") for m in modules)


@contextlib.contextmanager
def _grad_checked(denoiser, names: list[str]):
    """Raise a one-line HumantuneError when a top-level module of ``names`` (``always_train``) runs with grad off,
    i.e. inside the frozen prefix, where it would silently get no gradient."""
    late = []
    handles = [getattr(denoiser, n).register_forward_pre_hook(
        lambda module, args, n=n: None if torch.is_grad_enabled() else late.append(n))
        for n in names if isinstance(getattr(denoiser, n, None), torch.nn.Module)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
    if late:
        raise HumantuneError(f"always_train: {late[0]} runs before the first trained block, inside the frozen prefix "
                             "(no_grad), so it would get no gradient; set frozen_prefix: false")


# ---------------------------------------------------------------------------------------------------------- recipe


class EntProgRecipe(RecipeRun):
    """``run()``: open the run folder and set up the task, rank the blocks (CEI or random), measure the base's
    held-out loss and samples, run the stages (:meth:`_train_stage`), the ``compare_with`` arms, and write
    results.json and report.html."""

    cfg: EntProgConfig

    def run(self) -> Path:
        with sigterm_as_interrupt():
            with self.open_folder() as folder:
                self.trainer = Trainer(self.out, self.cfg.stages[0].train.mixed_precision, log_with=None)
                self.setup = tasks.setup_task(self.cfg, self.out, self.trainer.device)
                folder.commit()
            self.blocks = self._rank()
            self.carry = OptimizerCarry()
            self.base_heldout()   # before any stage changes the weights (cached in OUT/eval)
            sc = self.cfg.samples
            self.base_samples = self.setup.samples(sc.prompts, sc.num_inference_steps, sc.guidance_scale) \
                if self.trainer.is_main else []
            summaries = staging.StageRunner(self.trainer, self.out, "denoiser/config.json", self.resume).run(
                self.cfg.stages, self._train_stage)
            arms = self._arms()
            return self._finish(summaries, arms)

    # -- ranking

    def _rank(self) -> ProgressiveBlocks:
        cfg, s = self.cfg, self.setup
        names = [b.name for b in s.blocks]
        self.cei, self.cei_seconds = None, 0.0
        if cfg.schedule == "full":
            ranking = names
        elif cfg.ordering == "random":
            ranking = [names[i] for i in np.random.default_rng(cfg.cei.seed).permutation(len(names))]
        else:
            self.cei = cached_cei(cfg.cei_dir or self.out / "cei", s.denoiser, s.predict, s.cei_batches(cfg.cei),
                                  cfg.cei, s.data_key, s.blocks, progress=self.trainer.is_main)
            ranking, self.cei_seconds = self.cei["ranking"], float(self.cei["seconds"])
        return ProgressiveBlocks(names, [b.module for b in s.blocks], ranking)

    # -- stages

    def _stage_plan(self, stage: EntProgStage) -> list[tuple[str, list[int] | None, list[str] | None, int]]:
        """(phase folder, candidates, fixed block names, steps) of a stage's engine runs."""
        cfg = self.cfg
        total = staging.stage_train_config(stage, len(self.setup.train_task.dataset()), 1).max_steps
        usable = [m for m in stage.candidates if m <= len(self.blocks.names)]
        if not usable:
            raise HumantuneError(f"stage {stage.name}: no candidate m ≤ the {len(self.blocks.names)} blocks")
        if cfg.schedule == "full":
            return [("train", None, None, total)]
        if cfg.schedule == "fixed":
            return [("train", None, self.blocks.top(min(stage.fixed_m or max(usable), len(self.blocks.names))), total)]
        per_epoch = staging.steps_for_epochs(1.0, len(self.setup.train_task.dataset()), stage.train.batch_size,
                                             stage.train.gradient_accumulation_steps, 1)
        search = min(total, stage.supernet_steps or per_epoch)
        return [("search", usable, None, search), ("train", None, None, total - search)]

    def _train_stage(self, k: int, stage: EntProgStage, source: str | None) -> dict:
        s = self.setup
        if source is not None:
            s.load_denoiser(self.out / source / "denoiser")
        summary: dict = {"phases": {}}
        for phase, candidates, fixed, steps in self._stage_plan(stage):
            if steps < 1:
                continue
            if phase == "search":
                self._search_start(stage)
            if phase == "train" and self.cfg.schedule == "adaptive":
                choice = self._choose(k, stage)
                fixed = self.blocks.top(choice["m"])
                summary["choice"] = choice
            train_cfg = dataclasses.replace(staging.stage_train_config(stage, len(s.train_task.dataset()), 1),
                                            max_steps=steps)
            task = EntProgTask(s.train_task, self.blocks, s.heldout_loss, train_cfg.batch_size *
                               train_cfg.gradient_accumulation_steps, train_cfg.seed, k, candidates, fixed,
                               self.cfg.frozen_prefix, self.cfg.eval_every, steps, self.cfg.search_heldout_batches,
                               self.cfg.always_train, s.full_trainable)
            seeded = self.carry.seeded
            with self.carry.phase(self.cfg.carry_optimizer):
                result = self.trainer.fit(task, train_cfg, self.out / stage.name / phase, resume=self.resume,
                                          desc=f"ent-prog {stage.name}/{phase}")
            summary["phases"][phase] = {**result, "trained": fixed if fixed is not None else
                                        ("supernet" if candidates else "all"),
                                        "optimizer_state_carried": self.carry.seeded - seeded}
        if self.cfg.schedule == "adaptive" and "choice" not in summary:
            summary["choice"] = self._choose(k, stage)   # the whole stage was the supernet epoch
        if self.trainer.is_main:
            s.save_denoiser(self.out / stage.name / "denoiser")
        return summary

    def _choose(self, k: int, stage: EntProgStage) -> dict:
        """CE(m) of the stage's supernet epoch and m_k* = argmax; written to OUT/<stage>/choice.json."""
        path = self.out / stage.name / "choice.json"
        rows = [r for r in read_metrics(self.out / stage.name / "search") if "m" in r]
        start = json.loads((self.out / stage.name / "search_start.json").read_text())["search_loss"]
        ce = candidate_efficiencies(rows, [m for m in stage.candidates if m <= len(self.blocks.names)],
                                    self.cfg.trace, start, key="search_loss")
        choice = {"m": best_candidate(ce), "ce": {str(m): v for m, v in ce.items()}, "trace": self.cfg.trace,
                  "start_loss": start, "steps": len(rows)}
        if self.trainer.is_main:
            write_json_atomic(path, json_safe(choice))
        return choice

    def _search_start(self, stage: EntProgStage) -> None:
        """The supernet's held-out loss before its first step (its subset of batches), once: a resumed search reads
        it back (the weights are the stage's starting weights until the engine loads a checkpoint)."""
        path = self.out / stage.name / "search_start.json"
        if not path.is_file() and self.trainer.is_main:
            loss = float(self.setup.heldout_loss(self.cfg.search_heldout_batches).mean())
            write_json_atomic(path, {"search_loss": loss})

    def base_heldout(self) -> float:
        path = self.out / "eval" / "base_heldout.json"
        if path.is_file():
            return json.loads(path.read_text())["heldout_loss"]
        value = float(self.setup.heldout_loss().mean())
        if self.trainer.is_main:
            write_json_atomic(path, {"heldout_loss": value})
        return value

    # -- arms and results

    def _arms(self) -> dict[str, Path]:
        done = {}
        for arm in self.cfg.compare_with:
            schedule, ordering = ARMS[arm]
            if (schedule, ordering) == (self.cfg.schedule, self.cfg.ordering):
                continue
            sub = dataclasses.replace(self.cfg, schedule=schedule, ordering=ordering, compare_with=[],
                                      samples=dataclasses.replace(self.cfg.samples, prompts=0))
            EntProgRecipe(sub, self.out / "arms" / arm, self.resume, self.allow_config_change).run()
            done[arm] = self.out / "arms" / arm
        return done

    def _finish(self, summaries: dict, arms: dict[str, Path]) -> Path:
        from humantune.recipes.ent_prog_report import write_results

        if not self.trainer.is_main:
            return self.out
        self.setup.load_denoiser(self.out / self.cfg.stages[-1].name / "denoiser")
        sc = self.cfg.samples
        self.tuned_samples = self.setup.samples(sc.prompts, sc.num_inference_steps, sc.guidance_scale)
        per_batch = self.setup.heldout_loss()
        results = {
            "schedule": self.cfg.schedule, "ordering": self.cfg.ordering, "task": self.cfg.task,
            "base_heldout_loss": self.base_heldout(), "heldout_loss": _interval(per_batch),
            "cei_seconds": self.cei_seconds, "ranking": self.blocks.ranking, "stages": summaries,
            "curve": wall_clock_curve(self.out, self.cfg, self.cei_seconds, self.base_heldout()),
            "peak_state_bytes": peak_state(self.out, self.cfg),
        }
        if torch.cuda.is_available():
            results["cuda_max_memory_allocated"] = torch.cuda.max_memory_allocated()
        write_json_atomic(self.out / "results.json", json_safe(results))
        write_results(self, results, arms)
        return self.out


def _interval(values: torch.Tensor) -> dict:
    """Mean and a normal-approximation 95 % interval over held-out batch means."""
    v = values.double()
    half = 1.96 * float(v.std()) / len(v) ** 0.5 if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "low": float(v.mean()) - half, "high": float(v.mean()) + half, "n": len(v)}


def wall_clock_curve(out: Path, cfg: EntProgConfig, start_seconds: float, start_loss: float) -> list[list[float]]:
    """[(seconds, held-out loss)] over a run's stages in order: the clock is ``start_seconds`` (CEI) plus every
    step's step and overhead seconds."""
    clock, curve = start_seconds, [[start_seconds, start_loss]]
    for stage in cfg.stages:
        for phase in ("search", "train"):
            for row in read_metrics(out / stage.name / phase):
                clock += row.get("step_seconds", 0.0) + row.get("overhead_seconds", 0.0)
                if "heldout_loss" in row:
                    curve.append([clock, row["heldout_loss"]])
    return curve


def peak_state(out: Path, cfg: EntProgConfig) -> dict:
    """The largest training state (bytes) any step of the run held, its activation part, the largest per stage
    phase, and the run's step / overhead seconds (sums) and mean step time."""
    by_phase = {f"{s.name}/{p}": read_metrics(out / s.name / p) for s in cfg.stages for p in ("search", "train")}
    rows = [r for phase in by_phase.values() for r in phase if "state_bytes" in r]
    if not rows:
        return {}
    top = max(rows, key=lambda r: r["state_bytes"])
    steps = [r for phase in by_phase.values() for r in phase]
    return {"total": top["state_bytes"], "activations": top["activation_bytes"],
            "max_activations": max(r["activation_bytes"] for r in rows),
            "by_phase": {k: max(r["state_bytes"] for r in v if "state_bytes" in r) for k, v in by_phase.items()
                         if any("state_bytes" in r for r in v)},
            "step_seconds": sum(r.get("step_seconds", 0.0) for r in steps),
            "overhead_seconds": sum(r.get("overhead_seconds", 0.0) for r in steps),
            "mean_step_seconds": sum(r.get("step_seconds", 0.0) for r in steps) / len(steps)}


def train_ent_prog(cfg: EntProgConfig, output_dir: str | Path, resume: bool = True,
                   allow_config_change: bool = False) -> Path:
    """Run the recipe; return the output folder."""
    return EntProgRecipe(cfg, output_dir, resume, allow_config_change).run()
