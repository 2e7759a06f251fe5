import json

import pytest

from humantune.cli import main

from .conftest import make_generated


def test_create_links_results_backup(tmp_path, capsys):
    a = make_generated(tmp_path / "a", (10, 10, 10))
    b = make_generated(tmp_path / "b", (20, 20, 20))
    study = tmp_path / "study"
    assert main(["study", "create", "--system", f"base={a}", "--system", f"tuned={b}", "--participants", "2",
                 "--repeats", "1", "--question", "Which looks better?", "--out", str(study)]) == 0
    out = capsys.readouterr().out
    assert "6 prompts × seeds, 6 comparison pairs, 0 attention-check pairs; 2 participant slots with 7 pairs each" \
        in out
    assert main(["study", "links", str(study), "--base-url", "http://127.0.0.1:9"]) == 0
    links = capsys.readouterr().out.splitlines()
    assert links[0].startswith("admin  http://127.0.0.1:9/admin/") and links[2].startswith("P1     http://127.0.0.1:9/s/")
    assert main(["study", "results", str(study), "--bootstrap", "10"]) == 0
    assert json.loads((study / "results" / "results.json").read_text())["study"]["question"] == "Which looks better?"
    assert main(["study", "backup", str(study), "--out", str(tmp_path / "copy")]) == 0
    assert (tmp_path / "copy" / "study.db").is_file() and (tmp_path / "copy" / "images" / "base").is_dir()


@pytest.mark.parametrize("argv, message", [
    (["--system", "x=A"], "a study needs at least two systems"),
    (["--system", "x", "--system", "y=B"], "--system takes KEY=VALUE, got 'x'"),
    (["--system", "x=A", "--system", "x=B"], "system 'x' is given twice"),
    (["--system", "x=A", "--system", "y=B", "--attention-good", "G"], "give both --attention-good"),
    (["--system", "x=A", "--system", "y=MISSING"], "MISSING: not a folder of generated images"),
])
def test_create_errors_are_one_line(tmp_path, capsys, argv, message):
    make_generated(tmp_path / "A", (1, 1, 1))
    make_generated(tmp_path / "B", (2, 2, 2))
    argv = [arg.replace("=A", f"={tmp_path / 'A'}").replace("=B", f"={tmp_path / 'B'}")
            .replace("=MISSING", f"={tmp_path / 'MISSING'}") for arg in argv]
    assert main(["study", "create", *argv, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("humantune: error: ") and message in err and err.count("\n") == 1


def test_commands_on_a_folder_that_is_not_a_study(tmp_path, capsys):
    for argv in (["results", str(tmp_path)], ["judge", str(tmp_path), "--judge", "pose"],
                 ["backup", str(tmp_path), "--out", str(tmp_path / "c")]):
        assert main(["study", *argv]) == 2
        assert "not a study folder (no study.db)" in capsys.readouterr().err
    assert main(["study", "judge", str(tmp_path), "--judge", "vlm"]) == 2
    assert "needs --vlm-url URL and --vlm-model NAME" in capsys.readouterr().err
