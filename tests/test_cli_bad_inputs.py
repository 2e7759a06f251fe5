"""A fast subset of the bad-input corpus (benchmarks/bad_inputs.py, FAST) through the real command line, and how
errors meet progress bars and argparse: every mistake is exit status 2 and one stderr line
``humantune: error: ...`` naming the offending file, key or value, with no data lost."""

import importlib.util
import sys
from pathlib import Path

import pytest
from tqdm import tqdm

from humantune import cli
from humantune.errors import HumantuneError

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bad_inputs", ROOT / "benchmarks" / "bad_inputs.py")
bad_inputs = sys.modules.setdefault("bad_inputs", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(bad_inputs)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rows = bad_inputs.run_corpus(bad_inputs.selected(bad_inputs.FAST), tmp_path_factory.mktemp("bad_inputs"))
    return {row["case"]: row for row in rows}


@pytest.mark.parametrize("name", bad_inputs.FAST)
def test_bad_input_is_one_clean_line(corpus, name):
    row = corpus[name]
    if "skipped" in row:
        pytest.skip(row["skipped"])
    assert row["clean"], f"{name}: {row['problems']}\n{row['stderr_tail']}"
    assert row["exit_status"] == 2 and row["error"].startswith("humantune: error:")


def test_the_corpus_is_well_past_80_cases_with_unique_names():
    names = [c.name for c in bad_inputs.CASES]
    assert len(names) >= 100 and len(set(names)) == len(names)
    assert set(bad_inputs.FAST) <= set(names) and 15 <= len(bad_inputs.FAST) <= 25


def test_a_case_as_a_real_process(tmp_path):
    """The in-process runner is faithful: `python -m humantune` gives the same single line."""
    fx = bad_inputs.Fixtures(tmp_path / "fx")
    fx.root.mkdir()
    fx.make(need_loras=False)
    case = bad_inputs.selected(["sheet_out_is_directory"])[0]
    row = bad_inputs.run_case(case, fx, tmp_path / "cases", subprocess_mode=True)
    assert row["clean"], row
    assert row["error"] == "humantune: error: --out 'keep' is a folder; give a file name (e.g. keep/sheet.html)"


def _failing_command(leave: bool):
    def command(args):
        bar = tqdm(total=3, desc="working", leave=leave)
        bar.update(1)
        if not leave:
            bar.close()   # cleared with a carriage return, no newline: what a `with tqdm(leave=False)` block leaves
        raise HumantuneError("images/000001.png: cannot read image")
    return command


@pytest.mark.parametrize("leave", [True, False])
def test_an_error_after_a_progress_bar_starts_on_a_fresh_line(tmp_path, monkeypatch, capsys, leave):
    monkeypatch.setattr(cli, "cmd_data_sheet", _failing_command(leave))
    assert cli.main(["data", "sheet", str(tmp_path), "--out", str(tmp_path / "s.html")]) == 2
    err = capsys.readouterr().err
    lines = err.split("\n")
    assert "working" in err and "\r" in err   # a bar was drawn
    assert lines[-2] == "humantune: error: images/000001.png: cannot read image" and lines[-1] == ""
    assert all("humantune" not in line for line in lines[:-2])
    if leave:
        assert "1/3" in lines[-3]   # the open bar stays where it stopped, on its own line


def test_a_multi_line_message_is_printed_as_one_line(monkeypatch, capsys, tmp_path):
    def command(args):
        raise HumantuneError("weights could not be read:\n  Weights only load failed.\n\nPlease file an issue")
    monkeypatch.setattr(cli, "cmd_data_sheet", command)
    assert cli.main(["data", "sheet", str(tmp_path), "--out", str(tmp_path / "s.html")]) == 2
    assert capsys.readouterr().err == ("humantune: error: weights could not be read: Weights only load failed. "
                                       "Please file an issue\n")


@pytest.mark.parametrize("argv, expected", [
    (["data", "mannequin", "--out", "w", "--n", "0"], "argument --n: must be at least 1, got 0"),
    (["generate", "--model", "m", "--out", "o", "--size", "abc"], "argument --size: expected a whole number, got 'abc'"),
    (["generate", "--model", "m", "--out", "o", "--guidance-scale", "inf"],
     "argument --guidance-scale: must be a finite number, got inf"),
    (["data", "sheet", "w"], "the following arguments are required: --out"),
    (["nope"], "argument COMMAND: invalid choice: 'nope'"),
])
def test_argparse_mistakes_are_one_line_too(capsys, argv, expected):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"humantune: error: {expected}"), err


def test_sys_stderr_is_restored_after_main(tmp_path):
    before = sys.stderr
    cli.main(["data", "sheet", str(tmp_path / "missing"), "--out", str(tmp_path / "s.html")])
    assert sys.stderr is before
