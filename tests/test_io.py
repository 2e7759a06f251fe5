import json
import math
from pathlib import Path

import numpy as np

from humantune.io import json_safe

ROOT = Path(__file__).resolve().parents[1]


def test_json_safe_makes_strict_json():
    obj = {1: (np.float32(0.5), np.int64(3), np.bool_(True)), "nan": math.nan, "inf": np.float64(np.inf),
           "arr": np.array([[1.0, np.nan]]), "path": Path("a/b")}
    out = json_safe(obj)
    assert out == {"1": [0.5, 3, True], "nan": None, "inf": None, "arr": [[1.0, None]], "path": "a/b"}
    json.dumps(out, allow_nan=False)  # raises on any NaN left
    assert type(out["1"][1]) is int and type(out["1"][2]) is bool


def test_remove_stale_temporaries_deletes_kill_leftovers_and_restores_a_lone_backup(tmp_path):
    from humantune.io import remove_stale_temporaries

    (tmp_path / "checkpoints/.step_000004.saving.tmp/x").mkdir(parents=True)
    (tmp_path / "s1/.controlnet.ab3_9k.tmp/controlnet").mkdir(parents=True)
    (tmp_path / "data/.train.q8w2z1.tmp").mkdir(parents=True)
    (tmp_path / ".config.yaml.5hq2.tmp").mkdir()
    (tmp_path / "lora").mkdir()
    (tmp_path / ".lora.old").mkdir()                            # its swap finished: the backup is stale
    (tmp_path / ".model.old").mkdir()                           # killed between the two renames: the only copy
    (tmp_path / ".model.old/weights").write_text("trained")
    (tmp_path / "keep.tmp").write_text("not ours")
    (tmp_path / ".hidden").mkdir()
    done = remove_stale_temporaries(tmp_path)
    assert len(done) == 6
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == [".hidden", "checkpoints", "data", "keep.tmp", "lora", "model", "model/weights", "s1"]
    assert (tmp_path / "model/weights").read_text() == "trained"


def test_atomic_path_swaps_a_directory_and_leaves_no_temporary(tmp_path):
    from humantune.io import atomic_path

    (tmp_path / "out").mkdir()
    (tmp_path / "out/old.txt").write_text("old")
    with atomic_path(tmp_path / "out") as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (tmp_path / "out/new.txt").is_file()


def test_file_writers_never_replace_a_directory(tmp_path):
    import pytest

    from humantune.errors import HumantuneError
    from humantune.io import atomic_path, write_bytes_atomic, write_json_atomic, write_text_atomic

    (tmp_path / "keep").mkdir()
    (tmp_path / "keep/thesis.tex").write_text("years of work")
    for write in (lambda p: write_bytes_atomic(p, b"x"), lambda p: write_text_atomic(p, "x"),
                  lambda p: write_json_atomic(p, {"a": 1})):
        with pytest.raises(HumantuneError, match=r"'.*keep' is a directory; refusing to replace it with a file"):
            write(tmp_path / "keep")
    with pytest.raises(HumantuneError, match="is a directory"):   # any file made through atomic_path
        with atomic_path(tmp_path / "keep") as tmp:
            tmp.write_text("html")
    assert (tmp_path / "keep/thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]   # no temporary left
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(HumantuneError, match=r"cannot write '.*notes.txt/x.json': a part of .* is a file"):
        write_json_atomic(tmp_path / "notes.txt/x.json", {})
    assert (tmp_path / "notes.txt").read_text() == "mine"


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not strict JSON")

    return json.loads(text, parse_constant=refuse)


def test_benchmark_results_are_strict_json(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from benchmark_io import write_result

    path = write_result("t", {"ci95": [math.nan, np.float64(2.0)], "n": np.int64(1)}, tmp_path / "t.json")
    assert _strict(path.read_text())["ci95"] == [None, 2.0]
    for committed in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        _strict(committed.read_text())   # raises on NaN / Infinity, naming the constant
