"""The one training engine every recipe runs on (accelerate-based).

A recipe describes *what* is special about its method as a :class:`TrainingTask` — the trainable modules, the
dataset, how a batch becomes a loss, what to validate — and :class:`Trainer` does the rest, the same way for every
recipe: device placement and multi-process (``accelerate launch``: DDP, DeepSpeed, FSDP), mixed precision,
gradient accumulation, gradient clipping, the learning-rate schedule, EMA, TensorBoard logging plus a
``metrics.jsonl`` of every step, a progress bar, periodic validation and atomic checkpoints with exact resume.

Exact resume, and the same run on any number of processes. Nothing random is drawn from global state: the data
order of epoch ``e`` is the permutation ``default_rng([seed, e])``, and every sample draws its noise, timestep, crop
and condition dropout from its own generator seeded by ``(seed, its position in the run's sample stream)``
(:mod:`humantune.train.sampling`). A checkpoint holds the models, optimizer, schedule, EMA and step; a run resumed
from step ``s`` therefore sees the same batches and the same noise as the uninterrupted run and continues its loss
trajectory exactly, and P processes with micro-batch b follow the trajectory of one process with micro-batch P·b
(tested with 1 and 2 processes, and across a resume that changes the process count).

Never losing work. A step whose loss or gradient norm is not finite is not taken: the run stops with a one-line
error naming the step (or skips up to ``skip_nonfinite_steps`` such steps), so no checkpoint or final model ever
holds non-finite weights. A resume checks the newest checkpoint and falls back to the newest intact one
(:mod:`humantune.train.checkpoints`); a torn last line of ``metrics.jsonl`` is dropped; temporary folders a kill
left behind are removed; SIGTERM (what schedulers send before a kill) stops the run like Ctrl-C.

Layout of a stage directory (a recipe with several stages gives each its own)::

    STAGE_DIR/
      metrics.jsonl            {"step", "loss", "lr", ...} per optimizer step (rows past a resume point are dropped;
                               a skipped non-finite step has "skipped": 1 and loss null)
      validation/metrics.jsonl {"step", ...} the task's validation scalars (likewise truncated on resume)
      logs/                    TensorBoard event files
      checkpoints/step_000500  accelerate ``save_state`` + trainer_state.json; written atomically, last N kept
      validation/              whatever the task's ``validate`` writes (image grids, metrics)
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Protocol, Sequence

import torch
from tqdm import tqdm

from humantune.config import option
from humantune.errors import ConfigError, HumantuneError
from humantune.io import json_safe, move_into_place, remove_stale_temporaries, write_json_atomic
from humantune.train.checkpoints import (
    checkpoint_problem, find_checkpoints, numbered_file, read_jsonl_rows, repair_jsonl,
)
from humantune.train.processes import destroy_process_group, use_cpu
from humantune.train.run_folder import sigterm_as_interrupt
from humantune.train.sampling import BatchRandom, StepBatches


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings shared by every recipe (a recipe's config nests one per stage)."""

    max_steps: int = option(1000, "optimizer steps to train (each = batch_size × accumulation × processes samples)")
    batch_size: int = option(16, "samples per micro-batch per process")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step")
    learning_rate: float = option(1e-4, "peak learning rate")
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = option(
        "constant_with_warmup", "learning-rate schedule after warm-up")
    lr_warmup_steps: int = option(0, "linear warm-up steps")
    adam_beta1: float = option(0.9, "AdamW β1")
    adam_beta2: float = option(0.999, "AdamW β2")
    adam_epsilon: float = option(1e-8, "AdamW ε")
    weight_decay: float = option(1e-2, "AdamW decoupled weight decay")
    use_8bit_adam: bool = option(False, "bitsandbytes AdamW8bit (GPU only; needs bitsandbytes installed)")
    max_grad_norm: float | None = option(1.0, "clip the gradient norm to this (null: no clipping)")
    mixed_precision: Literal["no", "fp16", "bf16"] = option("no", "autocast precision (fp16 needs a GPU)")
    gradient_checkpointing: bool = option(False, "recompute activations in backward (less memory, more time)")
    ema_decay: float | None = option(None, "keep an exponential moving average of the weights (e.g. 0.999)")
    seed: int = option(0, "seed of data order, noise and initialisation")
    num_workers: int = option(0, "DataLoader worker processes")
    log_every: int = option(10, "write TensorBoard scalars every N steps (metrics.jsonl gets every step)")
    checkpoint_every: int = option(500, "save a resumable checkpoint every N steps (0: only at the end)")
    checkpoints_total_limit: int = option(2, "keep this many most recent checkpoints")
    validate_every: int = option(0, "run the task's validation every N steps (0: only at the end)")
    skip_nonfinite_steps: int = option(0, "skip up to N optimizer steps whose loss or gradient norm is NaN/inf "
                                          "(gradients dropped, no update, logged) before stopping with an error")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value}")
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "checkpoints_total_limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.skip_nonfinite_steps < 0:
            raise ValueError(f"skip_nonfinite_steps must be at least 0, got {self.skip_nonfinite_steps}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be within (0, 1), got {self.ema_decay}")


class TrainingTask(Protocol):
    """What a recipe gives the engine for one stage."""

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        """Modules with trainable parameters (moved, wrapped and checkpointed by the engine)."""

    def frozen_modules(self) -> dict[str, torch.nn.Module]:
        """Modules used without training (moved to the device and cast for mixed precision)."""

    def dataset(self) -> Sequence[Any]:
        """The training samples; indexed by position."""

    def collate(self, samples: list[Any]) -> Any:
        """Stack samples into a batch."""

    def loss(self, batch: Any, generator: BatchRandom) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss of a batch (the mean over its samples) and extra scalars to log; all randomness from
        ``generator``, whose ``randn``/``rand``/``randint`` draw row i from sample i's own generator."""

    def attach(self, modules: dict[str, torch.nn.Module]) -> None:
        """Receive the engine-wrapped trainable modules (same keys); ``loss`` must run these."""

    def validate(self, step: int, out_dir: Path) -> dict[str, float]:
        """Evaluate the current weights (main process only); return scalars to log."""

    # Optional: ``param_groups() -> list[dict]``, each ``{"params": [...], "lr_scale": s}``, splits the trainable
    # parameters into optimizer groups whose learning rate is ``s × learning_rate`` at every step of the schedule
    # (e.g. a text-encoder LoRA with its own rate). Without it, every trainable parameter is one group (s = 1).
    #
    # Optional: ``on_step_end(step: int, row: dict) -> dict | None`` runs on every process after each optimizer
    # step (``step`` = steps completed, ``row`` = that step's logged scalars, averaged over processes); scalars it
    # returns are added to the row before it is logged (e.g. Ent-Prog's per-step evaluation of candidate schedules).


def lr_lambda(name: str, warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at a step: linear warm-up, then constant / linear / cosine decay."""

    def f(step: int) -> float:
        if name != "constant" and warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if name in ("constant", "constant_with_warmup"):
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if name == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


class Trainer:
    """Runs :class:`TrainingTask` stages on one ``accelerate.Accelerator``."""

    def __init__(self, project_dir: str | os.PathLike, mixed_precision: str = "no", log_with: str | None = "tensorboard"):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        if mixed_precision == "fp16" and not torch.cuda.is_available():
            raise ConfigError("mixed_precision 'fp16' needs a CUDA GPU; use 'no' or 'bf16' on a CPU")
        self.project_dir = Path(project_dir)
        self.log_with = log_with
        self.accelerator = Accelerator(
            cpu=use_cpu(), mixed_precision=mixed_precision,
            project_config=ProjectConfiguration(project_dir=str(self.project_dir), automatic_checkpoint_naming=False),
        )
        self._checkpoint_keys: list[set[str] | None] = []
        self.accelerator.register_save_state_pre_hook(self._keep_trainable)
        if self.accelerator.num_processes > 1:
            atexit.register(destroy_process_group)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype frozen modules are cast to under mixed precision."""
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.accelerator.mixed_precision, torch.float32)

    def unwrap(self, module: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.unwrap_model(module)

    # ------------------------------------------------------------------------------------------------ the loop

    def fit(self, task: TrainingTask, cfg: TrainConfig, stage_dir: str | os.PathLike, resume: bool = True,
            desc: str = "training") -> dict[str, Any]:
        """Train ``task`` for ``cfg.max_steps`` optimizer steps, resuming from the stage's newest intact checkpoint
        when ``resume`` and one exists (without ``resume``, earlier checkpoints are removed: the stage starts
        over). Returns a summary (steps run, final loss, wall time, non-finite steps skipped)."""
        acc = self.accelerator
        stage_dir = Path(stage_dir)
        if self.is_main:
            stage_dir.mkdir(parents=True, exist_ok=True)
            for path in remove_stale_temporaries(stage_dir, depth=2):
                tqdm.write(f"{desc}: removed {path.relative_to(stage_dir)} (left by an interrupted write)")
            if not resume and (stage_dir / "checkpoints").is_dir():
                shutil.rmtree(stage_dir / "checkpoints")
        acc.wait_for_everyone()
        acc.gradient_accumulation_steps = cfg.gradient_accumulation_steps
        acc.step = 0  # accelerate counts micro-batches to know when to synchronise; a stage starts at zero
        acc._custom_objects.clear()  # a stage's checkpoint holds only its own schedule/EMA, not earlier stages'
        torch.manual_seed(cfg.seed)

        trainable = task.trainable_modules()
        for module in task.frozen_modules().values():
            module.requires_grad_(False)
            module.to(acc.device, dtype=self.weight_dtype)
        names = list(trainable)
        if cfg.gradient_checkpointing:
            for module in trainable.values():
                if hasattr(module, "enable_gradient_checkpointing"):
                    module.enable_gradient_checkpointing()
        params = [p for m in trainable.values() for p in m.parameters() if p.requires_grad]
        if not params:
            raise HumantuneError(f"{desc}: nothing to train (no parameter requires grad)")
        groups = param_groups(task, params)
        lr_scales = [g["lr_scale"] for g in groups]
        optimizer = self._optimizer([{"params": g["params"], "lr": cfg.learning_rate * g["lr_scale"],
                                      "lr_scale": g["lr_scale"]} for g in groups], cfg)
        lr_fn = lr_lambda(cfg.lr_scheduler, cfg.lr_warmup_steps, cfg.max_steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_fn)
        prepared = acc.prepare(*trainable.values(), optimizer)
        modules = dict(zip(names, prepared[:-1]))
        optimizer = prepared[-1]
        acc.register_for_checkpointing(schedule)
        ema = None
        if cfg.ema_decay is not None:
            from diffusers.training_utils import EMAModel

            ema = EMAModel(params, decay=cfg.ema_decay)
            acc.register_for_checkpointing(ema)
        task.attach(modules)
        self._checkpoint_keys = self._trainable_state_keys(list(modules.values()))

        start, path = self._resume_point(stage_dir, len(modules), desc) if resume else (0, None)
        if path is not None:
            self._load_checkpoint(path, list(modules.values()))
            self._use_recorded_threads(path, desc)
            if ema is not None:
                ema.to(acc.device)
            # The schedule comes from this run's config, so a resumed run may change max_steps or the
            # learning rate; the checkpoint's optimizer and schedule otherwise carry the old values.
            schedule.base_lrs = [cfg.learning_rate * scale for scale in lr_scales]
            for group, scale in zip(optimizer.param_groups, lr_scales):
                group["lr"], group["lr_scale"] = cfg.learning_rate * scale * lr_fn(start), scale
            schedule._last_lr = [group["lr"] for group in optimizer.param_groups]
            if self.is_main:
                tqdm.write(f"{desc}: resumed from {path} (step {start})")
        metrics_path = stage_dir / "metrics.jsonl"
        if self.is_main:  # rows past the resume point are redone by this run; a torn last line is dropped
            for file in (metrics_path, stage_dir / "validation" / "metrics.jsonl"):
                if repair_jsonl(file, keep_until_step=start):
                    tqdm.write(f"{desc}: dropped an unreadable (torn) line of {file.relative_to(stage_dir)}")
        acc.wait_for_everyone()
        summary: dict[str, Any] = {"start_step": start, "max_steps": cfg.max_steps}
        if start >= cfg.max_steps:
            self._finish(ema, params, desc)
            return {**summary, "steps_run": 0}

        writer = self._tensorboard(stage_dir) if self.is_main and self.log_with == "tensorboard" else None
        dataset = task.dataset()
        batches = StepBatches(len(dataset), cfg.batch_size, cfg.gradient_accumulation_steps, acc.num_processes,
                              acc.process_index, cfg.seed, start, cfg.max_steps)
        loader = torch.utils.data.DataLoader(
            _Indexed(dataset), batch_sampler=batches, collate_fn=task.collate, num_workers=cfg.num_workers)
        t0 = time.perf_counter()
        bar = tqdm(total=cfg.max_steps, initial=start, desc=desc, unit="step", disable=not self.is_main,
                   dynamic_ncols=True)
        step, micro, accum_loss, accum_logs, skipped, row = start, 0, 0.0, {}, 0, {}
        for module in modules.values():
            module.train()
        from accelerate.utils import send_to_device

        try:
            with sigterm_as_interrupt(), open(metrics_path, "a") if self.is_main else contextlib.nullcontext() \
                    as log_file:
                for batch in loader:
                    batch = send_to_device(batch, acc.device)
                    rng = BatchRandom(cfg.seed, batches.positions(step, micro))
                    with acc.accumulate(*modules.values()):
                        with acc.autocast():
                            loss, logs = task.loss(batch, rng)
                        acc.backward(loss)
                        accum_loss += loss.detach().float().item() / cfg.gradient_accumulation_steps
                        for k, v in logs.items():
                            accum_logs[k] = accum_logs.get(k, 0.0) + float(v) / cfg.gradient_accumulation_steps
                        micro += 1
                        if micro < cfg.gradient_accumulation_steps:
                            continue
                        # The step's last micro-batch: gradients are synchronised; take the step only if finite.
                        norm = self._gradient_norm(params, cfg)
                        bad_norm = norm is not None and not math.isfinite(norm)
                        mean = acc.gather(torch.tensor([accum_loss, float(bad_norm)] + list(accum_logs.values()),
                                                       device=acc.device, dtype=torch.float64))
                        mean = mean.view(acc.num_processes, -1).mean(0).tolist()
                        finite = math.isfinite(mean[0]) and mean[1] == 0
                        if finite:
                            optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                    lr = schedule.get_last_lr()[0]
                    row = {"step": step + 1, "loss": mean[0], "lr": lr, **dict(zip(accum_logs, mean[2:]))}
                    if not finite:
                        skipped += 1
                        self._nonfinite_step(step + 1, mean[0], norm, skipped, cfg, stage_dir, desc)
                        row["skipped"] = 1
                    schedule.step()
                    if ema is not None and finite:
                        ema.step(params)
                    step, micro, accum_loss, accum_logs = step + 1, 0, 0.0, {}
                    if hasattr(task, "on_step_end"):
                        row.update(task.on_step_end(step, row) or {})
                    if self.is_main:
                        log_file.write(json.dumps(row if finite else json_safe(row)) + "\n")
                        log_file.flush()
                        bar.update()
                        bar.set_postfix(loss=f"{row['loss']:.4f}" if finite else "skipped")
                        if writer is not None and (step % cfg.log_every == 0 or step == cfg.max_steps):
                            for k, v in row.items():
                                if k != "step":
                                    writer.add_scalar(f"train/{k}", v, step)
                    done = step == cfg.max_steps
                    if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or done:
                        self._check_finite(params, f"{desc}: step {step}")
                        self.save_checkpoint(stage_dir, step, cfg.checkpoints_total_limit)
                    if (cfg.validate_every and step % cfg.validate_every == 0) or done:
                        self._validate(task, step, stage_dir, writer, ema, params)
        except KeyboardInterrupt:
            if self.is_main:
                found = find_checkpoints(stage_dir)
                bar.close()
                tqdm.write(f"{desc}: interrupted during step {step + 1}; "
                           + (f"run it again to resume from {found[-1][1]}" if found else "no checkpoint yet"))
            raise
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        summary.update(steps_run=step - start, final_loss=row["loss"], seconds=time.perf_counter() - t0,
                       skipped_nonfinite_steps=skipped)
        self._finish(ema, params, desc)
        return summary

    def _gradient_norm(self, params: list[torch.nn.Parameter], cfg: TrainConfig) -> float | None:
        """Clip (when ``max_grad_norm``) and return the total gradient norm of this step; None where it cannot be
        read (DeepSpeed clips inside its engine) or must not be judged (fp16: the loss scaler skips overflowing
        steps itself)."""
        acc = self.accelerator
        if cfg.max_grad_norm is not None:
            norm = acc.clip_grad_norm_(params, cfg.max_grad_norm)
        else:
            grads = [p.grad for p in params if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads) if grads else None
        if norm is None or acc.mixed_precision == "fp16":
            return None
        return float(norm)

    def _nonfinite_step(self, step: int, loss: float, norm: float | None, skipped: int, cfg: TrainConfig,
                        stage_dir: Path, desc: str) -> None:
        """A step whose loss or gradient norm is not finite was not taken: note it, or stop once more than
        ``skip_nonfinite_steps`` were skipped."""
        what = f"loss {loss:.4g}" + ("" if norm is None else f", gradient norm {norm:.4g}")
        if skipped > cfg.skip_nonfinite_steps:
            found = find_checkpoints(stage_dir)
            where = f"the last checkpoint, {found[-1][1]}, holds finite weights" if found else "no checkpoint saved"
            raise HumantuneError(
                f"{desc}: training diverged at step {step} ({what}); stopped without saving it ({where}). Lower "
                f"the learning rate, or let train.skip_nonfinite_steps skip such steps "
                f"({cfg.skip_nonfinite_steps} allowed, {skipped} met)")
        if self.is_main:
            tqdm.write(f"{desc}: step {step} skipped ({what}; {skipped} of {cfg.skip_nonfinite_steps} allowed)")

    def _finish(self, ema, params, desc: str) -> None:
        # With EMA, the stage's result is the averaged weights: the task saves what its modules now hold.
        if ema is not None:
            ema.copy_to(params)
        self._check_finite(params, desc)
        self.accelerator.free_memory()
        self.accelerator._custom_objects.clear()

    # ------------------------------------------------------------------------------------------------ helpers

    def _optimizer(self, params: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
        kwargs = dict(lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon,
                      weight_decay=cfg.weight_decay)
        if cfg.use_8bit_adam:
            try:
                import bitsandbytes as bnb
            except ImportError as e:
                raise ConfigError("use_8bit_adam needs bitsandbytes: pip install bitsandbytes (GPU only)") from e
            return bnb.optim.AdamW8bit(params, **kwargs)
        return torch.optim.AdamW(params, **kwargs)

    def _tensorboard(self, stage_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(stage_dir / "logs"))

    def _validate(self, task: TrainingTask, step: int, stage_dir: Path, writer, ema, params) -> None:
        self.accelerator.wait_for_everyone()
        if self.is_main:
            if ema is not None:  # validate the averaged weights, then put the trained ones back
                ema.store(params)
                ema.copy_to(params)
            try:
                scalars = task.validate(step, stage_dir / "validation") or {}
            finally:
                if ema is not None:
                    ema.restore(params)
            if writer is not None:
                for k, v in scalars.items():
                    writer.add_scalar(f"validation/{k}", v, step)
            if scalars:
                (stage_dir / "validation").mkdir(parents=True, exist_ok=True)
                with open(stage_dir / "validation" / "metrics.jsonl", "a") as f:
                    f.write(json.dumps({"step": step, **scalars}) + "\n")
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------------------------------------ checkpoints

    def _own_checkpoint_layout(self) -> bool:
        """True unless DeepSpeed or FSDP save the models and optimizer their own way."""
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type not in (DistributedType.DEEPSPEED, DistributedType.FSDP)

    def _trainable_state_keys(self, models: list[torch.nn.Module]) -> list[set[str] | None]:
        """Per prepared model, the state-dict keys (of the unwrapped model) a checkpoint keeps: its trainable
        parameters when some of its parameters are frozen (a LoRA on a large denoiser: the checkpoint holds the
        adapter, not the base), None (everything) otherwise. DeepSpeed and FSDP save their own way and always keep
        everything."""
        if not self._own_checkpoint_layout():
            return [None] * len(models)
        keys: list[set[str] | None] = []
        for model in models:
            named = list(self.unwrap(model).named_parameters())
            keys.append(None if all(p.requires_grad for _, p in named) else {n for n, p in named if p.requires_grad})
        return keys

    def _keep_trainable(self, models, weights, output_dir) -> None:
        """accelerate save-state hook: write the state dicts with the unwrapped models' keys (a DDP-wrapped model's
        ``module.`` prefix dropped, so that a checkpoint resumes under any number of processes) and without frozen
        weights."""
        from torch.nn.parallel import DistributedDataParallel

        for model, state, keep in zip(models, weights, getattr(self, "_checkpoint_keys", [])):
            items = list(state.items())
            state.clear()
            for key, value in items:
                if isinstance(model, DistributedDataParallel) and key.startswith("module."):
                    key = key[len("module."):]
                if keep is None or key in keep:
                    state[key] = value

    def _resume_point(self, stage_dir: Path, models: int, desc: str) -> tuple[int, Path | None]:
        """The newest intact checkpoint (step, path), or (0, None). Damaged newer ones are moved aside to
        ``checkpoints/damaged_step_XXXXXX`` with a notice. Decided on the main process, followed by all."""
        from accelerate.utils import broadcast_object_list

        choice: list[Any] = [0, None]
        if self.is_main:
            for step, path in reversed(find_checkpoints(stage_dir)):
                problem = checkpoint_problem(path, models if self._own_checkpoint_layout() else 0, 1,
                                             len(self.accelerator._custom_objects))
                if problem is None:
                    choice = [step, str(path)]
                    break
                aside = path.with_name(f"damaged_{path.name}")
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(path, aside)
                tqdm.write(f"{desc}: checkpoint {path.name} is damaged ({problem}); moved it to {aside.name} and "
                           "fell back to the newest intact one")
        broadcast_object_list(choice)
        return choice[0], None if choice[1] is None else Path(choice[1])

    def _use_recorded_threads(self, path: Path, desc: str) -> None:
        """Run on as many threads as the checkpointed run did: float sums, and so the loss trajectory, depend on
        the thread count, and humantune's default follows the machine's load (humantune.threads)."""
        recorded = json.loads((Path(path) / "trainer_state.json").read_text()).get("threads")
        if recorded and recorded != torch.get_num_threads():
            if self.is_main:
                tqdm.write(f"{desc}: using {recorded} torch threads as the checkpointed run did (was "
                           f"{torch.get_num_threads()}), so it continues bit-identically")
            torch.set_num_threads(recorded)

    def _load_checkpoint(self, path: Path, models: list[torch.nn.Module]) -> None:
        """Load a checkpoint this engine wrote. The models' weights must hold exactly the keys this run keeps
        (else a one-line error, not a silent partial load): they are loaded into the unwrapped models, the
        optimizer, schedule, EMA and random states by ``accelerate load_state``."""
        from safetensors.torch import load_file

        acc = self.accelerator
        if not self._own_checkpoint_layout():
            acc.load_state(str(path))
            acc.step = 0
            return
        for i, (model, keep) in enumerate(zip(models, self._checkpoint_keys)):
            state = load_file(str(Path(path) / numbered_file("model.safetensors", i)))
            target = self.unwrap(model)
            expected = keep if keep is not None else set(target.state_dict())
            if set(state) != expected:
                stored = set(state)
                raise HumantuneError(
                    f"checkpoint {path} does not match this run's trainable parameters ({len(stored)} stored, "
                    f"{len(expected)} trained; e.g. {sorted(stored ^ expected)[:2]}): was the config changed? "
                    "Use --no-resume to start over")
            target.load_state_dict(state, strict=keep is None)
        prepared, acc._models = acc._models, []
        try:
            acc.load_state(str(path))
        finally:
            acc._models = prepared
        acc.step = 0  # micro-batches are counted from the resumed step's first one

    def _check_finite(self, params: list[torch.nn.Parameter], what: str) -> None:
        """Refuse to hand on (to a checkpoint or the recipe's saved model) weights that are not all finite, on
        every process alike."""
        acc = self.accelerator
        local = float(all(bool(torch.isfinite(p.detach()).all()) for p in params))
        if acc.gather(torch.tensor([local], device=acc.device)).min().item() < 1:
            raise HumantuneError(f"{what}: the weights became non-finite (NaN/inf) although every loss and gradient "
                                 "norm was finite (learning rate too high?); not saved")

    def save_checkpoint(self, stage_dir: Path, step: int, keep: int) -> Path:
        """``accelerate save_state`` (on every process, as DeepSpeed and FSDP need) into
        ``checkpoints/.step_XXXXXX.saving.tmp``, then renamed to ``checkpoints/step_XXXXXX`` once complete; the
        last ``keep`` are kept. Models with frozen parameters are saved without them (:meth:`_trainable_state_keys`).
        """
        acc = self.accelerator
        final = Path(stage_dir) / "checkpoints" / f"step_{step:06d}"
        tmp = final.with_name(f".{final.name}.saving.tmp")
        acc.wait_for_everyone()
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        try:
            acc.save_state(str(tmp))
            acc.wait_for_everyone()
            if self.is_main:
                write_json_atomic(tmp / "trainer_state.json", {"step": step, "threads": torch.get_num_threads()})
                move_into_place(tmp, final)
                for _, old in find_checkpoints(stage_dir)[:-keep]:
                    shutil.rmtree(old, ignore_errors=True)
        finally:
            if self.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        return final


def param_groups(task: TrainingTask, params: list[torch.nn.Parameter]) -> list[dict]:
    """The optimizer groups of a stage: the task's ``param_groups()`` when it has one (checked to cover every
    trainable parameter exactly once), else one group; each ``{"params": [...], "lr_scale": float}``."""
    if not hasattr(task, "param_groups"):
        return [{"params": params, "lr_scale": 1.0}]
    groups = [{"params": list(g["params"]), "lr_scale": float(g.get("lr_scale", 1.0))} for g in task.param_groups()]
    grouped = [id(p) for g in groups for p in g["params"]]
    if len(grouped) != len(set(grouped)) or set(grouped) != {id(p) for p in params}:
        raise HumantuneError("the task's param_groups must list every trainable parameter exactly once")
    if any(g["lr_scale"] <= 0 for g in groups):
        raise HumantuneError("lr_scale of every parameter group must be positive")
    return [g for g in groups if g["params"]]


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, data: Sequence[Any]) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Any:
        return self.data[i]


def read_metrics(stage_dir: str | os.PathLike) -> list[dict]:
    """The rows of a stage's ``metrics.jsonl`` (a torn last line is skipped)."""
    return read_jsonl_rows(Path(stage_dir) / "metrics.jsonl")


def read_validation(stage_dir: str | os.PathLike) -> list[dict]:
    """Validation scalars of a stage by step (the last row of a step wins: a resumed run may repeat one; NaN, e.g.
    OKS with no target person, becomes None; a torn last line is skipped)."""
    by_step = {}
    for row in read_jsonl_rows(Path(stage_dir) / "validation" / "metrics.jsonl"):
        by_step[row["step"]] = {k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in row.items()}
    return [by_step[s] for s in sorted(by_step)]
