"""The shared training engine: data order, schedules, checkpoints and exact resume."""

import json
import math

import numpy as np
import pytest
import torch

from humantune.errors import ConfigError, HumantuneError
from humantune.train.engine import StepBatches, Trainer, TrainConfig, find_checkpoints, lr_lambda, read_metrics


class Regression:
    """y = w·x + noise with the noise drawn from each sample's generator: any change in data order, noise or
    optimizer state shows up in the loss trajectory."""

    def __init__(self, n: int = 37):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 5, generator=g)
        self.y = self.x @ (0.2 * torch.arange(1.0, 6.0)) + 0.5
        torch.manual_seed(1)
        self.model = torch.nn.Linear(5, 1)
        self.validated = []

    def trainable_modules(self):
        return {"model": self.model}

    def frozen_modules(self):
        return {}

    def attach(self, modules):
        self.wrapped = modules["model"]

    def dataset(self):
        return range(len(self.x))

    def collate(self, idx):
        return torch.tensor(idx)

    interrupt_at = None

    def loss(self, batch, generator):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        noise = 0.1 * generator.randn(len(batch))
        pred = self.wrapped(self.x[batch]).squeeze(-1)
        err = ((pred - self.y[batch] - noise) ** 2).mean()
        return err, {"abs_w0": float(self.model.weight[0, 0].detach().abs())}

    def validate(self, step, out_dir):
        self.validated.append(step)
        return {"w_norm": float(self.model.weight.detach().norm())}


def _cfg(**kw):
    base = dict(max_steps=8, batch_size=4, gradient_accumulation_steps=2, learning_rate=0.1, lr_scheduler="cosine",
                lr_warmup_steps=2, checkpoint_every=3, checkpoints_total_limit=2, validate_every=4, seed=7)
    base.update(kw)
    return TrainConfig(**base)


def test_step_batches_cover_each_epoch_once_and_split_processes():
    n = 10
    a = StepBatches(n, 2, 1, 2, 0, seed=3, start_step=0, max_steps=5)
    b = StepBatches(n, 2, 1, 2, 1, seed=3, start_step=0, max_steps=5)
    first_epoch = [i for step in range(5)[:3] for batches in (a, b) for i in batches.indices(step, 0)][:n]
    assert sorted(first_epoch) == list(range(n))                  # every sample once per epoch
    assert set(a.indices(0, 0)).isdisjoint(b.indices(0, 0))       # processes read different samples
    resumed = StepBatches(n, 2, 1, 2, 0, seed=3, start_step=2, max_steps=5)
    assert list(resumed) == list(a)[2:]


def test_lr_lambda_warmup_and_decay():
    f = lr_lambda("cosine", warmup=4, total=14)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and f(9) == pytest.approx(0.5) and f(14) == pytest.approx(0.0, abs=1e-12)
    assert lr_lambda("linear", 0, 10)(5) == 0.5
    assert lr_lambda("constant", 5, 10)(0) == 1.0


def test_config_errors():
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig(max_steps=0)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.5)


def test_fp16_on_cpu_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    with pytest.raises(ConfigError, match="fp16"):
        Trainer(tmp_path, mixed_precision="fp16")


@pytest.mark.parametrize("ema", [None, 0.9])
def test_resume_continues_the_loss_trajectory_exactly(tmp_path, ema):
    straight = Regression()
    Trainer(tmp_path / "a", log_with=None).fit(straight, _cfg(ema_decay=ema), tmp_path / "a")
    rows_a = read_metrics(tmp_path / "a")
    assert [r["step"] for r in rows_a] == list(range(1, 9))
    assert not torch.equal(straight.model.weight, Regression().model.weight)      # it trained

    # Interrupted (Ctrl-C) during step 5: the last complete checkpoint is step 3.
    part = Regression()
    part.interrupt_at = 9                        # the 9th micro-batch = step 5 (2 micro-batches per step)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tmp_path / "b", log_with=None).fit(part, _cfg(ema_decay=ema), tmp_path / "b")
    assert [s for s, _ in find_checkpoints(tmp_path / "b")] == [3]
    assert len(read_metrics(tmp_path / "b")) == 4
    resumed = Regression()
    summary = Trainer(tmp_path / "b", log_with=None).fit(resumed, _cfg(ema_decay=ema), tmp_path / "b")
    assert summary["start_step"] == 3 and summary["steps_run"] == 5
    rows_b = read_metrics(tmp_path / "b")
    assert [r["step"] for r in rows_b] == list(range(1, 9))
    # Validation at step 4 ran before the interruption and again after the resume from step 3: one row each.
    validation = [json.loads(x)["step"] for x in (tmp_path / "b/validation/metrics.jsonl").read_text().splitlines()]
    assert validation == [4, 8]
    for ra, rb in zip(rows_a, rows_b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-6, abs=1e-9), ra["step"]
    torch.testing.assert_close(straight.model.weight, resumed.model.weight)


def test_resume_with_a_longer_budget_follows_the_new_schedule(tmp_path):
    task = Regression()
    Trainer(tmp_path, log_with=None).fit(task, _cfg(max_steps=4, lr_scheduler="linear"), tmp_path)
    Trainer(tmp_path, log_with=None).fit(Regression(), _cfg(max_steps=8, lr_scheduler="linear"), tmp_path)
    rows = read_metrics(tmp_path)
    f = lr_lambda("linear", 2, 8)
    assert [r["lr"] for r in rows[4:]] == pytest.approx([0.1 * f(s) for s in range(4, 8)])


def test_checkpoints_are_kept_to_the_limit_and_validation_runs(tmp_path):
    task = Regression()
    Trainer(tmp_path, log_with=None).fit(task, _cfg(), tmp_path)
    assert [s for s, _ in find_checkpoints(tmp_path)] == [6, 8]
    assert json.loads((tmp_path / "checkpoints/step_000008/trainer_state.json").read_text()) == \
        {"step": 8, "threads": torch.get_num_threads()}
    assert task.validated == [4, 8]
    rows = [json.loads(x) for x in (tmp_path / "validation/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 8] and rows[0]["w_norm"] > 0
    # A finished stage resumes to a no-op that leaves the trained weights in place.
    again = Regression()
    summary = Trainer(tmp_path, log_with=None).fit(again, _cfg(), tmp_path)
    assert summary["steps_run"] == 0
    torch.testing.assert_close(again.model.weight, task.model.weight)


def test_gradient_accumulation_matches_a_larger_batch(tmp_path):
    a, b = Regression(n=16), Regression(n=16)
    kw = dict(max_steps=4, lr_scheduler="constant", lr_warmup_steps=0, checkpoint_every=0, validate_every=0,
              max_grad_norm=None)
    Trainer(tmp_path / "a", log_with=None).fit(a, _cfg(batch_size=8, gradient_accumulation_steps=1, **kw), tmp_path / "a")
    Trainer(tmp_path / "b", log_with=None).fit(b, _cfg(batch_size=4, gradient_accumulation_steps=2, **kw), tmp_path / "b")
    # Same samples per step; the noise differs per micro-batch, so weights agree closely but not exactly.
    assert np.allclose(a.model.weight.detach(), b.model.weight.detach(), atol=0.05)


class PartlyFrozen(Regression):
    """A frozen 'base' layer plus two trainable heads with different learning-rate scales (a LoRA-like setup)."""

    def __init__(self, scale: float = 0.1):
        super().__init__()
        torch.manual_seed(2)
        self.model = torch.nn.ModuleDict({"base": torch.nn.Linear(5, 5), "head": torch.nn.Linear(5, 1),
                                          "text": torch.nn.Linear(5, 1)})
        self.model["base"].requires_grad_(False)
        self.scale = scale

    def param_groups(self):
        return [{"params": list(self.model["head"].parameters())},
                {"params": list(self.model["text"].parameters()), "lr_scale": self.scale}]

    def loss(self, batch, generator):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        m = self.wrapped
        h = m["base"](self.x[batch])
        pred = (m["head"](h) + m["text"](h)).squeeze(-1)
        noise = 0.1 * generator.randn(len(batch))
        return ((pred - self.y[batch] - noise) ** 2).mean(), {}

    def validate(self, step, out_dir):
        return {}


def test_parameter_groups_scale_the_learning_rate_through_the_schedule_and_a_resume(tmp_path):
    from safetensors import safe_open

    cfg = _cfg(lr_scheduler="linear", checkpoint_every=3)
    straight = PartlyFrozen()
    trainer = Trainer(tmp_path / "a", log_with=None)
    lrs = []
    original = trainer._optimizer

    def spy(groups, c):
        opt = original(groups, c)
        opt.register_step_post_hook(lambda o, *_: lrs.append([g["lr"] for g in o.param_groups]))
        return opt

    trainer._optimizer = spy
    trainer.fit(straight, cfg, tmp_path / "a")
    f = lr_lambda("linear", 2, 8)
    per_step = lrs                                # the wrapped optimizer steps once per step, not per micro-batch
    assert len(per_step) == 8
    assert [g[0] for g in per_step] == pytest.approx([0.1 * f(s) for s in range(8)])
    assert [g[1] for g in per_step] == pytest.approx([0.01 * f(s) for s in range(8)])
    assert torch.equal(straight.model["base"].weight, PartlyFrozen().model["base"].weight)   # frozen stayed put

    # The checkpoint holds only what trains: no 'base.*' weights.
    with safe_open(str(tmp_path / "a/checkpoints/step_000008/model.safetensors"), "pt") as f_:
        assert sorted(f_.keys()) == ["head.bias", "head.weight", "text.bias", "text.weight"]

    part = PartlyFrozen()
    part.interrupt_at = 9
    with pytest.raises(KeyboardInterrupt):
        Trainer(tmp_path / "b", log_with=None).fit(part, cfg, tmp_path / "b")
    resumed = PartlyFrozen()
    Trainer(tmp_path / "b", log_with=None).fit(resumed, cfg, tmp_path / "b")
    for ra, rb in zip(read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-6, abs=1e-9) and ra["lr"] == pytest.approx(rb["lr"])
    torch.testing.assert_close(straight.model["text"].weight, resumed.model["text"].weight)


def test_a_checkpoint_of_other_trainable_parameters_is_refused(tmp_path):
    Trainer(tmp_path, log_with=None).fit(PartlyFrozen(), _cfg(max_steps=3, checkpoint_every=3), tmp_path)
    other = PartlyFrozen()
    other.model["text"].requires_grad_(False)
    other.param_groups = lambda: [{"params": list(other.model["head"].parameters())}]
    with pytest.raises(HumantuneError, match="does not match this run's trainable parameters"):
        Trainer(tmp_path, log_with=None).fit(other, _cfg(max_steps=5, checkpoint_every=3), tmp_path)


def test_param_groups_must_cover_every_trainable_parameter_once(tmp_path):
    task = PartlyFrozen()
    task.param_groups = lambda: [{"params": list(task.model["head"].parameters())}]
    with pytest.raises(HumantuneError, match="exactly once"):
        Trainer(tmp_path, log_with=None).fit(task, _cfg(), tmp_path)


def test_on_step_end_sees_every_optimizer_step_and_its_scalars_are_logged(tmp_path):
    class Hooked(Regression):
        def on_step_end(self, step, row):
            self.seen = getattr(self, "seen", []) + [(step, row["loss"])]
            # the weights it sees are those after the step's update
            return {"w0_after": float(self.model.weight[0, 0].detach())}

    task = Hooked()
    Trainer(tmp_path, log_with=None).fit(task, _cfg(max_steps=5, validate_every=0), tmp_path)
    rows = read_metrics(tmp_path)
    assert [s for s, _ in task.seen] == [1, 2, 3, 4, 5]
    assert [r["loss"] for r in rows] == [loss for _, loss in task.seen]
    assert rows[-1]["w0_after"] == float(task.model.weight[0, 0].detach())
    assert rows[0]["w0_after"] != rows[-1]["w0_after"]


def test_one_micro_batch_of_2b_and_two_of_b_follow_the_same_trajectory(tmp_path):
    # Every sample draws its noise from its own generator (seed, stream position), so splitting a step's samples
    # into micro-batches (or processes) changes nothing but float rounding.
    kw = dict(max_steps=6, lr_scheduler="constant", lr_warmup_steps=0, checkpoint_every=0, validate_every=0)
    a, b = Regression(n=16), Regression(n=16)
    Trainer(tmp_path / "a", log_with=None).fit(a, _cfg(batch_size=8, gradient_accumulation_steps=1, **kw), tmp_path / "a")
    Trainer(tmp_path / "b", log_with=None).fit(b, _cfg(batch_size=4, gradient_accumulation_steps=2, **kw), tmp_path / "b")
    assert [r["loss"] for r in read_metrics(tmp_path / "a")] == pytest.approx(
        [r["loss"] for r in read_metrics(tmp_path / "b")], rel=1e-6)
    torch.testing.assert_close(a.model.weight, b.model.weight, rtol=1e-6, atol=1e-7)


class Diverging(Regression):
    """Regression whose loss is NaN at the given micro-batch calls (a diverging run)."""

    def __init__(self, nan_calls=(), **kw):
        super().__init__(**kw)
        self.nan_calls = set(nan_calls)

    def loss(self, batch, generator):
        err, logs = super().loss(batch, generator)
        return (err * float("nan") if self.calls in self.nan_calls else err), logs


def test_a_nonfinite_loss_stops_with_one_line_and_saves_nothing_non_finite(tmp_path):
    task = Diverging(nan_calls={9})                 # micro-batch 9 = step 5 (2 micro-batches per step)
    with pytest.raises(HumantuneError, match=r"training diverged at step 5 \(loss nan.*step_000003, holds finite"):
        Trainer(tmp_path, log_with=None).fit(task, _cfg(), tmp_path, desc="toy")
    assert [s for s, _ in find_checkpoints(tmp_path)] == [3]
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
    assert torch.isfinite(task.model.weight).all()               # the bad step was not taken
    # The run resumes from the last finite checkpoint (and, the fault gone, finishes like a clean run).
    resumed = Regression()
    assert Trainer(tmp_path, log_with=None).fit(resumed, _cfg(), tmp_path)["start_step"] == 3
    clean = Regression()
    Trainer(tmp_path / "clean", log_with=None).fit(clean, _cfg(), tmp_path / "clean")
    torch.testing.assert_close(resumed.model.weight, clean.model.weight)


def test_skip_nonfinite_steps_drops_up_to_n_bad_steps(tmp_path):
    task = Diverging(nan_calls={3, 9})               # steps 2 and 5
    cfg = _cfg(skip_nonfinite_steps=2, ema_decay=0.9)
    summary = Trainer(tmp_path, log_with=None).fit(task, cfg, tmp_path)
    rows = read_metrics(tmp_path)
    assert summary["skipped_nonfinite_steps"] == 2 and [r["step"] for r in rows] == list(range(1, 9))
    assert [r.get("skipped", 0) for r in rows] == [0, 1, 0, 0, 1, 0, 0, 0]
    assert rows[1]["loss"] is None and all(math.isfinite(r["loss"]) for r in rows if not r.get("skipped"))
    assert torch.isfinite(task.model.weight).all()
    with pytest.raises(HumantuneError, match="diverged at step 5"):   # one more bad step than allowed
        Trainer(tmp_path / "b", log_with=None).fit(Diverging(nan_calls={3, 9}), _cfg(skip_nonfinite_steps=1),
                                                   tmp_path / "b")


def test_weights_that_become_non_finite_are_never_saved(tmp_path):
    class Overflowing(Regression):
        def on_step_end(self, step, row):        # an update that overflowed although its loss was finite
            if step == 2:
                with torch.no_grad():
                    self.model.weight[0, 0] = float("inf")

    with pytest.raises(HumantuneError, match="step 2: the weights became non-finite"):
        Trainer(tmp_path, log_with=None).fit(Overflowing(), _cfg(checkpoint_every=1), tmp_path)
    assert [s for s, _ in find_checkpoints(tmp_path)] == [1]


@pytest.mark.parametrize("field", ["learning_rate", "adam_epsilon", "max_grad_norm"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_float_options_are_config_errors(field, value):
    with pytest.raises(ValueError, match=f"{field} must be a finite number"):
        TrainConfig(**{field: value})


def test_a_nan_learning_rate_in_a_yaml_config_names_the_key(tmp_path):
    from dataclasses import dataclass

    from humantune.config import load_config, option

    @dataclass
    class Recipe:
        train: TrainConfig = option(TrainConfig(), "optimisation")

    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: .nan\n")
    with pytest.raises(ConfigError, match=r"'train\.learning_rate' .*NaN") as e:   # the loader refuses NaN
        load_config(Recipe, path)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="learning_rate must be a finite number"):  # and so does the dataclass
        TrainConfig(learning_rate=float("nan"))


def _damage(checkpoint, how):
    if how == "truncated model":
        data = (checkpoint / "model.safetensors").read_bytes()
        (checkpoint / "model.safetensors").write_bytes(data[:len(data) // 2])
    elif how == "missing optimizer":
        (checkpoint / "optimizer.bin").unlink()
    elif how == "truncated schedule":
        data = (checkpoint / "custom_checkpoint_0.pkl").read_bytes()
        (checkpoint / "custom_checkpoint_0.pkl").write_bytes(data[:-30])
    else:
        (checkpoint / "trainer_state.json").write_text('{"step": ')


@pytest.mark.parametrize("how", ["truncated model", "missing optimizer", "truncated schedule", "torn trainer_state"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, capsys, how):
    straight = Regression()
    Trainer(tmp_path / "a", log_with=None).fit(straight, _cfg(), tmp_path / "a")
    cfg = _cfg(checkpoints_total_limit=3)
    part = Regression()
    part.interrupt_at = 15                                          # during step 8: checkpoints 3 and 6 exist
    with pytest.raises(KeyboardInterrupt):
        Trainer(tmp_path / "b", log_with=None).fit(part, cfg, tmp_path / "b")
    stage = tmp_path / "b"
    _damage(stage / "checkpoints/step_000006", how)
    with open(stage / "metrics.jsonl", "a") as f:                   # and a torn last metrics line
        f.write('{"step": 8, "lo')
    resumed = Regression()
    summary = Trainer(stage, log_with=None).fit(resumed, cfg, stage)
    out = capsys.readouterr().out
    assert "checkpoint step_000006 is damaged" in out and "dropped an unreadable (torn) line of metrics.jsonl" in out
    assert summary["start_step"] == 3 and (stage / "checkpoints/damaged_step_000006").is_dir()
    assert [s for s, _ in find_checkpoints(stage)] == [3, 6, 8]
    for ra, rb in zip(read_metrics(tmp_path / "a"), read_metrics(stage), strict=True):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-6, abs=1e-9)
    torch.testing.assert_close(straight.model.weight, resumed.model.weight)


def test_a_kills_temporaries_are_removed_and_no_resume_starts_over(tmp_path):
    Trainer(tmp_path, log_with=None).fit(Regression(), _cfg(max_steps=3), tmp_path)
    left = [tmp_path / "checkpoints/.step_000006.saving.tmp", tmp_path / "checkpoints/.step_000009.k2j4_x.tmp",
            tmp_path / ".controlnet.a8dk2l.tmp"]
    for p in left:
        (p / "inner").mkdir(parents=True)
    Trainer(tmp_path, log_with=None).fit(Regression(), _cfg(max_steps=3), tmp_path)
    assert not any(p.exists() for p in left)
    summary = Trainer(tmp_path, log_with=None).fit(Regression(), _cfg(max_steps=2), tmp_path, resume=False)
    assert summary["start_step"] == 0 and [s for s, _ in find_checkpoints(tmp_path)] == [2]


def test_a_resume_runs_on_the_thread_count_the_checkpointed_run_used(tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        Trainer(tmp_path, log_with=None).fit(Regression(), _cfg(max_steps=3, checkpoint_every=3), tmp_path)
        torch.set_num_threads(1)   # e.g. the default chose fewer threads under load
        Trainer(tmp_path, log_with=None).fit(Regression(), _cfg(max_steps=5, checkpoint_every=3), tmp_path)
        assert torch.get_num_threads() == 2
        captured = capsys.readouterr()
        assert "using 2 torch threads as the checkpointed run did (was 1)" in captured.out + captured.err
    finally:
        torch.set_num_threads(before)
