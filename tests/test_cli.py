import json
import subprocess
import sys

import pytest

from humantune.cli import main


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "humantune", *argv], capture_output=True, text=True, timeout=300)


def test_help_on_every_command():
    for argv in ([], ["data"], ["data", "mannequin"], ["data", "mannequin-video"], ["data", "sheet"], ["demo"],
                 ["train"], ["pretrain"], ["models"], ["models", "ship"], ["generate"], ["eval"]):
        proc = run(*argv, "--help")
        assert proc.returncode == 0, (argv, proc.stderr)
        assert "usage: humantune" in proc.stdout
    assert "action_mix" in run("data", "mannequin", "--help").stdout   # config keys are documented


def test_data_mannequin_writes_a_world(tmp_path, capsys):
    assert main(["data", "mannequin", "--out", str(tmp_path / "w"), "--n", "3", "--seed", "1", "--workers", "1",
                 "--quiet", "--set", "size=64", "--set", "action_mix={walking: 1.0}"]) == 0
    world = json.loads((tmp_path / "w/world.json").read_text())
    assert world["config"]["n"] == 3 and world["config"]["size"] == 64 and world["config"]["seed"] == 1
    assert world["config"]["action_mix"] == {"walking": 1.0}
    rows = (tmp_path / "w/metadata.jsonl").read_text().splitlines()
    assert len(rows) == 3 and all(json.loads(r)["action"] == "walking" for r in rows)
    assert "wrote 3 images" in capsys.readouterr().out


def test_config_file_and_set_override(tmp_path):
    cfg = tmp_path / "world.yaml"
    cfg.write_text("n: 2\nsize: 48\nsecond_person_prob: 0.0\n")
    assert main(["data", "mannequin", "--out", str(tmp_path / "w"), "--config", str(cfg), "--set", "size=32",
                 "--workers", "1", "--quiet"]) == 0
    world = json.loads((tmp_path / "w/world.json").read_text())["config"]
    assert (world["n"], world["size"], world["second_person_prob"]) == (2, 32, 0.0)


@pytest.mark.parametrize("argv, needle", [
    (["--set", "colour=red"], "colour"),
    (["--set", "n=many"], "n"),
    (["--set", "size=8"], "size"),
    (["--config", "/nonexistent/world.yaml"], "/nonexistent/world.yaml"),
])
def test_user_mistakes_are_one_line_errors(tmp_path, argv, needle):
    proc = run("data", "mannequin", "--out", str(tmp_path / "w"), "--quiet", *argv)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("humantune: error:"), proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "w").exists()


def test_bad_key_in_config_file_names_key_and_file(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("n: 2\nsupersampel: 2\n")
    proc = run("data", "mannequin", "--out", str(tmp_path / "w"), "--config", str(cfg))
    assert proc.returncode == 2 and "supersampel" in proc.stderr and str(cfg) in proc.stderr


def test_non_empty_output_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    proc = run("data", "mannequin", "--out", str(tmp_path), "--n", "1", "--quiet")
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert (tmp_path / "keep.txt").read_text() == "x"


def test_video_and_sheet(tmp_path):
    assert main(["data", "mannequin-video", "--out", str(tmp_path / "v"), "--n", "1", "--frames", "3",
                 "--workers", "1", "--quiet"]) == 0
    manifest = json.loads((tmp_path / "v/manifest.json").read_text())
    assert len(manifest["clips"][0]["frames"]) == 3
    main(["data", "mannequin", "--out", str(tmp_path / "w"), "--n", "2", "--workers", "1", "--quiet"])
    assert main(["data", "sheet", str(tmp_path / "w"), "--out", str(tmp_path / "sheet.html")]) == 0
    html = (tmp_path / "sheet.html").read_text()
    assert html.count("data:image/png;base64,") >= 2


def test_demo_runs_and_reruns_but_never_replaces_a_foreign_folder(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), "--n", "4", "--quiet"]) == 0
    assert (out / "contact_sheet.html").is_file() and (out / "world/metadata.jsonl").is_file()
    assert main(["demo", "--output-dir", str(out), "--n", "4", "--quiet"]) == 0   # re-run replaces its own world
    foreign = tmp_path / "other"
    (foreign / "world").mkdir(parents=True)
    (foreign / "world/thesis.tex").write_text("years of work")
    proc = run("demo", "--output-dir", str(foreign), "--n", "2", "--quiet")
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert (foreign / "world/thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize("argv, expected", [
    (["train", "nope", "--output-dir", "x"], "unknown recipe 'nope'; known: pretrain"),
    (["models", "path", "nope"], "no shipped model 'nope'"),
    (["generate", "--model", "m", "--out", "o"], "give at least one --prompt"),
    (["generate", "--model", "m", "--prompts", "missing.txt", "--out", "o"], "cannot read prompts file 'missing.txt'"),
    (["pretrain", "--output-dir", "x", "--set", "world.size=36"], "world.size (36) must be a multiple"),
    (["pretrain", "--output-dir", "x", "--set", "trian.max_steps=3"], "trian"),
])
def test_training_and_generation_mistakes_are_one_line_errors(tmp_path, monkeypatch, capsys, argv, expected):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("humantune: error:") and expected in err and "\n" not in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "x" / "model").exists()


def test_generate_pose_needs_a_controlnet(tmp_path, capsys):
    from humantune.models.generation import generate

    with pytest.raises(Exception, match="--pose needs --controlnet"):
        generate("anything", ["a man"], tmp_path / "o", pose="pose.json")
