"""A pretrained Hugging Face CTC model as the frozen base (``base_model: hf:PATH``).

Tiny random-weight wav2vec 2.0, HuBERT and WavLM models, saved to a folder like a user's
checkpoint: without adapters casr's wrapper transcribes exactly as the Hugging Face model and
its own processor do; every family runs adapter-fusion, finetune and adapter-oracle end to
end on a corpus on disk; a run stopped after its first task resumes to the uninterrupted
run's weights.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from click.testing import CliRunner

from continual_asr.cli import main
from continual_asr.model.hf_encoder import load_hf_model, load_hf_tokenizer
from corpus import make_corpus
from hf_models import FAMILIES, save_tiny_model

FAST = {"adapter-fusion": ["adapter_epochs=1", "fusion_epochs=1"], "adapter-oracle": ["adapter_epochs=1"],
        "finetune": ["finetune_epochs=1"]}
SMALL = ["max_train_utterances=6", "max_test_utterances=2"]  # the code paths, not the numbers


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for the module: the audio is the same for every family (base models and adapters
    are keyed by the base's weights)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {family: save_tiny_model(root / family, family) for family in FAMILIES}


def _run(corpus, models, family, strategy, out, cache, *extra):
    return CliRunner().invoke(main, ["run", "--stream", str(corpus), "--strategy", strategy, "--out", str(out),
                                     "--cache-dir", str(cache), "--quiet", "--preset", "tiny",
                                     *(arg for setting in [*FAST[strategy], *SMALL] for arg in ("--set", setting)),
                                     "--set", f"base_model=hf:{models[family]}", *extra])


@pytest.mark.parametrize("family", FAMILIES)
def test_without_adapters_the_wrapper_transcribes_as_the_hugging_face_model(models, family):
    folder = models[family]
    model, tokenizer = load_hf_model(folder).eval(), load_hf_tokenizer(folder)
    generator = np.random.default_rng(1)
    audio = [(0.1 * generator.standard_normal(n)).astype(np.float32) for n in (16000, 9000, 12345)]
    lengths = torch.tensor([len(a) for a in audio])
    padded = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(a) for a in audio], batch_first=True)
    with torch.no_grad():
        encoded, frames = model(padded, lengths)
        ours = [tokenizer.decode(ids) for ids in model.head.decode(encoded, frames)]
        log_probs = model.head.log_probs(encoded)

        # The extractor on each utterance alone, then zero padding: what casr feeds. (Its batched call
        # without an attention mask would normalise over the padding too.)
        extractor = transformers.AutoFeatureExtractor.from_pretrained(folder)
        values = [torch.from_numpy(extractor(a, sampling_rate=16000).input_values[0]) for a in audio]
        mask = (torch.arange(padded.shape[1])[None, :] < lengths[:, None]).long()
        reference = transformers.AutoModelForCTC.from_pretrained(folder).eval()
        logits = reference(torch.nn.utils.rnn.pad_sequence(values, batch_first=True),
                           attention_mask=mask if extractor.return_attention_mask else None).logits
    hf_tokenizer = transformers.Wav2Vec2CTCTokenizer.from_pretrained(folder)
    theirs = [hf_tokenizer.decode(logits[i, :n].argmax(-1)).lower() for i, n in enumerate(frames.tolist())]
    assert ours == [" ".join(t.split()) for t in theirs]
    assert sum(len(t) for t in ours) > 20  # random weights still spell something to compare
    classes = tokenizer.classes  # blank (pad) first, then the model's order
    torch.testing.assert_close(log_probs, logits.log_softmax(-1)[..., classes], atol=1e-5, rtol=1e-5)


def test_the_character_tokenizer_maps_lower_case_transcripts_to_the_models_upper_case_vocabulary(models):
    tokenizer = load_hf_tokenizer(models["wav2vec2"])
    ids = tokenizer.encode("it's a test")
    assert tokenizer.decode(ids) == "it's a test" and len(ids) == len("it's a test")
    assert min(ids) >= 0 and max(ids) < len(tokenizer) == 31  # every class but blank
    assert tokenizer.unknown_characters("route 66") == {"6"}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_runs_fusion_finetune_and_oracle_end_to_end(corpus, models, cache, family, tmp_path):
    for strategy in ("adapter-fusion", "finetune", "adapter-oracle"):
        out = tmp_path / strategy
        result = _run(corpus, models, family, strategy, out, cache)
        assert result.exit_code == 0, result.output
        results = json.loads((out / "results.json").read_text())
        assert results["complete"] and results["config"]["base_model"] == f"hf:{models[family]}"
        assert results["base_model"]["source"] == f"hf:{models[family]}" and results["base_model"]["seconds"] == 0
        assert len(results["wer_matrix"]) == 2 and all(0 <= w for row in results["wer_matrix"] for w in row)
        counts = results["steps"][-1]["parameters"]
        trained = {"adapter-fusion": "combiners", "adapter-oracle": "adapters", "finetune": "base"}[strategy]
        assert counts[trained] > 0, counts
        assert (out / "report.html").exists()


def test_a_stopped_run_resumes_to_the_uninterrupted_runs_weights(corpus, models, cache, tmp_path):
    def run(out):  # every adapter trained here, none from the cache
        return _run(corpus, models, "wavlm", "adapter-fusion", out, cache, "--set", "share_adapters=false")

    assert run(tmp_path / "reference").exit_code == 0
    manifest = corpus.parent / "data" / "b.train.jsonl"
    good = manifest.read_text()
    try:
        manifest.write_text('{"audio_filepath": "audio/b/missing.wav", "text": "one"}\n' + good)
        stopped = run(tmp_path / "run")
        assert stopped.exit_code == 2 and "stopped before task 2" in stopped.output, stopped.output
    finally:
        manifest.write_text(good)
    assert run(tmp_path / "run").exit_code == 0
    resumed, reference = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["state_dict"]
                          for name in ("run", "reference"))
    assert resumed.keys() == reference.keys() and any(k.startswith("hf.") for k in resumed)
    for name in resumed:
        assert torch.equal(resumed[name], reference[name]), name


def test_a_missing_model_folder_is_one_line_before_any_work(corpus, tmp_path):
    result = CliRunner().invoke(main, ["run", "--stream", str(corpus), "--out", str(tmp_path / "out"), "--quiet",
                                       "--cache-dir", str(tmp_path / "cache"), "--set", "base_model=hf:/no/such/model"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "casr: error: base_model hf:/no/such/model: no such folder (casr downloads nothing: save the model there first)"]
    assert not (tmp_path / "cache").exists()


def test_a_checkpoint_without_a_ctc_head_or_with_pickled_weights_is_refused(tmp_path):
    from continual_asr.errors import ConfigError
    from hf_models import TINY

    folder = save_tiny_model(tmp_path / "ssl", "wav2vec2")
    transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**TINY)).save_pretrained(folder)  # encoder only
    with pytest.raises(ConfigError, match=r"has no CTC head \(lm_head\): fine-tune it for CTC first$"):
        load_hf_model(folder)
    pickled = save_tiny_model(tmp_path / "pickled", "wav2vec2")
    model = transformers.AutoModelForCTC.from_pretrained(pickled)
    for weights in pickled.glob("*.safetensors"):
        weights.unlink()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ConfigError, match=r"no safetensors weights \(model.safetensors\); casr loads no pickled"):
        load_hf_model(pickled)
