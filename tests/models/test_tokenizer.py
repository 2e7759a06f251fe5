from transformers import CLIPTokenizer

from humantune.models.tokenizer import build_clip_tokenizer, bytes_to_unicode, caption_words


def test_caption_words_follow_clips_split():
    assert caption_words(["A man in a T-shirt", "a man, lying"]) == ["a", "man", "in", "t", "-", "shirt", ",", "lying"]


def test_every_listed_word_is_one_token_and_stock_tokenizer_loads_it(tmp_path):
    words = caption_words(["a woman in a red t-shirt and blue jeans lying on the grass"])
    build_clip_tokenizer(words, tmp_path, model_max_length=16)
    tok = CLIPTokenizer.from_pretrained(tmp_path)
    assert tok.model_max_length == 16
    ids = tok("a woman in a red t-shirt lying on the grass").input_ids
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens == ["<|startoftext|>", "a</w>", "woman</w>", "in</w>", "a</w>", "red</w>", "t</w>", "-</w>",
                      "shirt</w>", "lying</w>", "on</w>", "the</w>", "grass</w>", "<|endoftext|>"]
    padded = tok("a woman", padding="max_length", max_length=16).input_ids
    assert len(padded) == 16 and padded[-1] == tok.pad_token_id == tok.eos_token_id


def test_unknown_words_fall_back_to_pieces(tmp_path):
    tok = build_clip_tokenizer(["grass"], tmp_path)
    tokens = tok.convert_ids_to_tokens(tok("grassy zebra").input_ids)[1:-1]
    assert "".join(tokens).replace("</w>", " ").split() == ["grassy", "zebra"]
    # "grassy" is not in the list: the merges learned for "grass" ((a, s), (g, r), ...) apply as far as they can
    assert tokens[:4] == ["gr", "as", "s", "y</w>"]
    assert len(bytes_to_unicode()) == 256 and len(set(bytes_to_unicode().values())) == 256


def test_the_whole_caption_grammar_is_one_token_per_word(tmp_path):
    # Captions of a rendered world in first-seen order: a word list where left-to-right merges used to split words
    # ("green" -> g re e n, "woman" -> wo man) once other words had claimed their pairs.
    from humantune.data.mannequin.world import MannequinConfig, render_sample

    cfg = MannequinConfig(n=300, seed=0, second_person_prob=0.3)
    captions = [render_sample(cfg, i).caption for i in range(300)]
    words = caption_words(captions)
    tok = build_clip_tokenizer(words, tmp_path)
    split = [w for w in words if len(tok.tokenize(w)) != 1]
    assert split == [] and len(words) > 40
