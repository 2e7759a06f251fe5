"""`humantune anomaly scan | collect | compare` and `humantune train dreambooth-lora` from the command line, on a tiny
random pipeline with the real MediaPipe estimator; user mistakes are one-line errors with exit status 2."""

import json

import pytest
import torch
import yaml

from humantune.cli import main
from humantune.models import lora
from humantune.models.generation import load_pipeline
from tests.tiny_pipelines import save_pipeline

PROMPT = "a man in a red shirt and blue jeans lying on the grass"
CONTROL = "a man in a red shirt and blue jeans standing on the grass"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_pipeline("sd", tmp_path_factory.mktemp("cli") / "sd")


def _one_line_error(capsys, pattern: str) -> None:
    # Library progress bars may precede it when other tests imported transformers first; the error is one line.
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert last.startswith("humantune: error:") and "Traceback" not in err
    assert pattern in last, err


def test_scan_collect_train_compare_from_the_command_line(base, tmp_path, capsys):
    prompts = tmp_path / "targets.txt"
    prompts.write_text(f"# lying\n{PROMPT}\n")
    controls = tmp_path / "controls.txt"
    controls.write_text(CONTROL + "\n")
    assert main(["anomaly", "scan", "--model", str(base), "--prompts", str(prompts), "--n", "2",
                 "--out", str(tmp_path / "scan"), "--quiet"]) == 0
    scan = json.loads((tmp_path / "scan" / "scan.json").read_text())
    assert scan["prompts"][0]["prompt"] == PROMPT and scan["prompts"][0]["n"] == 2
    assert "MediaPipe Pose" in scan["estimator"] and (tmp_path / "scan" / "report.html").is_file()
    assert PROMPT in capsys.readouterr().out

    assert main(["anomaly", "collect", "--prompts", str(prompts), "--n", "2", "--size", "32",
                 "--out", str(tmp_path / "correct"), "--quiet"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "correct" / "metadata.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == [PROMPT, PROMPT]

    config = tmp_path / "db.yaml"
    config.write_text(yaml.safe_dump({
        "base_model": str(base), "instance": {"dir": str(tmp_path / "correct"), "prompts": [PROMPT]},
        "train": {"max_steps": 2, "batch_size": 2, "checkpoint_every": 2}, "validation_prompts": [PROMPT]}))
    assert main(["train", "dreambooth-lora", "--config", str(config), "--output-dir", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "lora" / "pytorch_lora_weights.safetensors").is_file()

    assert main(["anomaly", "compare", "--base", str(base), "--tuned", str(tmp_path / "run"), "--prompts",
                 str(prompts), "--control-prompts", str(controls), "--reference", str(tmp_path / "correct"),
                 "--n", "2", "--out", str(tmp_path / "cmp"), "--quiet"]) == 0
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert set(result["anomaly_rate"]) == {"target", "control"} and result["tuned_kind"] == "lora"
    assert result["reference"]["tuned"]["pairs"] == 2 * 2
    out = capsys.readouterr().out
    assert "anomaly rate (target )" in out and "key.json" in out


def test_user_mistakes_are_one_line_errors(base, tmp_path, capsys):
    assert main(["anomaly", "scan", "--model", str(base), "--out", str(tmp_path / "s")]) == 2
    _one_line_error(capsys, "give --prompts FILE or at least one --prompt TEXT")
    assert main(["anomaly", "scan", "--model", str(tmp_path / "missing"), "--prompt", PROMPT,
                 "--out", str(tmp_path / "s")]) == 2
    _one_line_error(capsys, "not found")
    assert main(["anomaly", "collect", "--prompt", "a person lying on the grass", "--out", str(tmp_path / "c")]) == 2
    _one_line_error(capsys, "cannot render prompt 'a person lying on the grass'")
    assert main(["anomaly", "compare", "--base", str(base), "--tuned", str(tmp_path / "nothing"), "--prompt", PROMPT,
                 "--out", str(tmp_path / "x")]) == 2
    _one_line_error(capsys, "no LoRA weights at")
    assert main(["anomaly", "compare", "--base", str(base), "--tuned", str(tmp_path), "--prompts",
                 str(tmp_path / "none.txt"), "--out", str(tmp_path / "x")]) == 2
    _one_line_error(capsys, "cannot read prompts file")

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "f").write_text("x")
    assert main(["anomaly", "collect", "--prompt", PROMPT, "--out", str(tmp_path / "taken"), "--quiet"]) == 2
    _one_line_error(capsys, "exists and is not empty")

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"lora": {"denoiser": {"rank": "four"}}}))
    assert main(["train", "dreambooth-lora", "--config", str(bad), "--output-dir", str(tmp_path / "r")]) == 2
    _one_line_error(capsys, "lora.denoiser.rank")

    # a LoRA for another family does not load onto this base
    other = load_pipeline(save_pipeline("sd3", tmp_path / "sd3"))
    lora.add_lora(other.transformer, 2)
    for name, p in other.transformer.named_parameters():
        if "lora_B" in name:
            p.data = torch.ones_like(p)
    lora.save_lora(other, tmp_path / "sd3_lora", {"transformer": other.transformer})
    assert main(["anomaly", "scan", "--model", str(base), "--lora", str(tmp_path / "sd3_lora"), "--prompt", PROMPT,
                 "--n", "1", "--out", str(tmp_path / "s2"), "--quiet"]) == 2
    _one_line_error(capsys, "LoRA")
