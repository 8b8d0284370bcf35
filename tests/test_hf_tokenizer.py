"""A pretrained model's own tokenizer.json (`data.tokenizer`, jtrain/data/tokenize.py HFTokenizer): its ids, its
end-of-text token, picked up from an HF checkpoint by `jtrain finetune`, used by SFT data and `jtrain sample`."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from jtrain.data import tokenize
from jtrain.errors import DataError

from _cli import run_jtrain

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "hf_llm")
TEXT = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind to suffer",
        "The slings and arrows of outrageous fortune,", "Or to take arms against a sea of troubles"] * 20


def make_tokenizer(directory, vocab_size: int = 90, eos: str = "</s>", config: bool = True) -> str:
    """A small BPE tokenizer.json (its own alphabet; `eos` is id 1) in `directory`."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")  # sentencepiece's spaces, as Llama 2's
    tok.decoder = decoders.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", eos], show_progress=False)
    tok.train_from_iterator(TEXT, trainer=trainer)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "tokenizer.json")
    tok.save(path)
    if config:
        with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
            json.dump({"eos_token": {"content": eos}}, f)
    return path


def test_ids_round_trip_and_the_end_token_comes_from_tokenizer_config(tmp_path):
    path = make_tokenizer(tmp_path, eos="<|im_end|>x")  # a name no fallback knows: only the file can say it
    tok = tokenize.from_file(str(tmp_path))  # the directory finds its tokenizer.json
    assert tok.eos_id == 1 and tok.vocab_size <= 90
    ids = tok.encode(TEXT[0])
    assert ids.dtype == np.int32 and tok.decode(ids) == TEXT[0]
    stream = tok.encode_documents(TEXT[:2])
    assert stream[len(ids)] == tok.eos_id and stream[-1] == tok.eos_id and (stream == tok.eos_id).sum() == 2
    # Characters per token add up to the text's, plus the space the first word's mark stands for.
    assert tok.token_chars[ids].sum() == len(TEXT[0]) + 1
    assert os.path.samefile(tok.path, path)


def test_the_end_token_from_config_json_or_a_known_name_else_one_line(tmp_path):
    make_tokenizer(tmp_path / "a", eos="<eos>", config=False)  # a known name
    assert tokenize.from_file(str(tmp_path / "a")).eos_id == 1
    make_tokenizer(tmp_path / "b", eos="[END]", config=False)
    (tmp_path / "b" / "config.json").write_text(json.dumps({"eos_token_id": [1, 0]}))
    assert tokenize.from_file(str(tmp_path / "b")).eos_id == 1
    make_tokenizer(tmp_path / "c", eos="[END]", config=False)
    with pytest.raises(DataError, match=r"tokenizer.json: no end-of-text token"):
        tokenize.from_file(str(tmp_path / "c"))
    with pytest.raises(DataError, match=r"config key 'data.tokenizer': .*missing.json does not exist"):
        tokenize.from_file(str(tmp_path / "missing.json"))
    (tmp_path / "d.json").write_text("{not json")
    with pytest.raises(DataError, match=r"d.json: not a tokenizer.json"):
        tokenize.from_file(str(tmp_path / "d.json"))


def checkpoint_with_tokenizer(tmp_path, vocab_size: int) -> str:
    directory = tmp_path / "llama"
    shutil.copytree(os.path.join(FIXTURES, "llama"), directory)  # a 96-token model
    make_tokenizer(directory, vocab_size=vocab_size)
    return str(directory)


def write_jsonl(path, n: int) -> str:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": TEXT[i % 4] + " ", "response": TEXT[(i + 1) % 4]}) + "\n")
    return str(path)


FINETUNE = ["--config.train.steps=4", "--config.train.log_every_steps=2", "--config.eval.every_steps=4",
            "--config.checkpoint.every_steps=4", "--config.data.batch_size=4", "--config.data.seq_len=48",
            "--config.data.eval_batch_size=8", "--config.schedule.warmup_steps=0", "--config.data.eval_examples=0"]


@pytest.mark.slow
def test_finetune_reads_sft_pairs_with_the_checkpoints_tokenizer_and_sample_decodes_with_it(tmp_path):
    ckpt = checkpoint_with_tokenizer(tmp_path, vocab_size=90)
    train, val = write_jsonl(tmp_path / "train.jsonl", 40), write_jsonl(tmp_path / "val.jsonl", 8)
    work = tmp_path / "run"
    result = run_jtrain(["finetune", "--config", "experiments/shakespeare_char_sft.py", "--pretrained", ckpt,
                         "--workdir", str(work), f"--config.data.jsonl.train={train}",
                         f"--config.data.jsonl.val={val}", *FINETUNE], str(tmp_path / "data"), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"data.tokenizer='{ckpt}/tokenizer.json'" in result.stderr
    config = json.loads((work / "config.json").read_text())
    assert config["data"]["tokenizer"] == f"{ckpt}/tokenizer.json" and config["model"]["vocab_size"] == 96
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())  # no builtin was prepared
    summary = json.loads((work / "summary.json").read_text())
    assert np.isfinite(summary["val"]["loss"])
    prompt = TEXT[0] + " "
    result = run_jtrain(["sample", "--workdir", str(work), "--prompt", prompt, "--max_tokens", "8",
                         "--temperature", "0"], str(tmp_path / "data"), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout.rstrip("\n")
    tok = tokenize.from_file(ckpt)
    continuation = text[len(prompt):]
    assert text.startswith(prompt) and continuation
    # Decoded by the checkpoint's tokenizer: its pieces' characters only, spaces from its word marks.
    assert set(continuation) <= set("".join(TEXT) + " ") and "\u2581" not in continuation


def test_a_tokenizer_larger_than_the_models_vocabulary_is_one_line_exit_2(tmp_path):
    ckpt = checkpoint_with_tokenizer(tmp_path, vocab_size=120)  # more ids than the model's 96 rows
    train = write_jsonl(tmp_path / "train.jsonl", 40)
    result = run_jtrain(["finetune", "--config", "experiments/shakespeare_char_sft.py", "--pretrained", ckpt,
                         "--workdir", str(tmp_path / "run"), f"--config.data.jsonl.train={train}", *FINETUNE],
                        str(tmp_path / "data"), timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [l for l in result.stderr.strip().splitlines() if not l.startswith("jtrain: from")]
    assert len(lines) == 1 and "model.vocab_size" in lines[0] and "96" in lines[0], result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
