import json
import math
from pathlib import Path

import numpy as np

from humantune.io import json_safe


def test_json_safe_makes_strict_json():
    obj = {1: (np.float32(0.5), np.int64(3), np.bool_(True)), "nan": math.nan, "inf": np.float64(np.inf),
           "arr": np.array([[1.0, np.nan]]), "path": Path("a/b")}
    out = json_safe(obj)
    assert out == {"1": [0.5, 3, True], "nan": None, "inf": None, "arr": [[1.0, None]], "path": "a/b"}
    json.dumps(out, allow_nan=False)  # raises on any NaN left
    assert type(out["1"][1]) is int and type(out["1"][2]) is bool
