import pytest

from humantune.models.tokenizer import build_clip_tokenizer


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    return build_clip_tokenizer(["a", "man", "in", "red", "shirt", "lying"], tmp_path_factory.mktemp("tok"), 16)
