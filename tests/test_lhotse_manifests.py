"""lhotse manifests as a task's data: CutSets, SupervisionSets with their RecordingSets, stretches
of long multi-channel recordings, and their bad data as one line per utterance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from click.testing import CliRunner

from continual_asr.cli import main
from continual_asr.data.features import log_mel, read_audio
from continual_asr.data.manifest import read_manifest
from continual_asr.stream import load_stream
from test_manifests import load, write

lhotse = pytest.importorskip("lhotse")


def _recording(path: Path, recording_id: str):
    return lhotse.Recording.from_file(path, recording_id=recording_id)


def _corpus(tmp_path: Path):
    """Two recordings: a 2 s two-channel one at 8 kHz holding two utterances, a 0.5 s one holding one."""
    long = _recording(write(tmp_path / "audio" / "long.wav", seconds=2.0, rate=8000, channels=2, seed=1), "long")
    short = _recording(write(tmp_path / "audio" / "short.wav", seconds=0.5, seed=2), "short")
    supervisions = [
        lhotse.SupervisionSegment("long-0", "long", start=0.2, duration=0.6, text="One two three"),
        lhotse.SupervisionSegment("long-1", "long", start=1.0, duration=0.8, text="four five six"),
        lhotse.SupervisionSegment("short-0", "short", start=0.0, duration=0.5, text="seven eight"),
    ]
    return lhotse.RecordingSet.from_recordings([long, short]), lhotse.SupervisionSet.from_segments(supervisions)


def test_a_cutset_and_a_supervision_set_give_the_same_stretches(tmp_path):
    recordings, supervisions = _corpus(tmp_path)
    recordings.to_file(tmp_path / "corpus_recordings_train.jsonl.gz")
    supervisions.to_file(tmp_path / "corpus_supervisions_train.jsonl.gz")
    cuts = lhotse.CutSet.from_manifests(recordings=recordings, supervisions=supervisions).trim_to_supervisions()
    cuts.to_file(tmp_path / "cuts_train.jsonl.gz")
    cuts.to_file(tmp_path / "cuts_plain.jsonl")  # lhotse writes plain JSON Lines too

    by_cuts, problems = read_manifest(tmp_path / "cuts_train.jsonl.gz")
    assert problems == []
    by_supervisions, problems = read_manifest(tmp_path / "corpus_supervisions_train.jsonl.gz")
    assert problems == []
    plain, _ = read_manifest(tmp_path / "cuts_plain.jsonl")
    for rows in (by_cuts, by_supervisions, plain):
        assert [(r.text, r.offset, r.duration, r.audio.name) for r in rows] == [
            ("one two three", 0.2, 0.6, "long.wav"), ("four five six", 1.0, 0.8, "long.wav"),
            ("seven eight", 0.0, 0.5, "short.wav")]
    # A stretch is the recording's samples from its offset, channels mixed down, at 16 kHz.
    audio, seconds = read_audio(by_cuts[1].audio, offset=1.0, duration=0.8)
    whole, _ = read_audio(by_cuts[1].audio)
    assert seconds == pytest.approx(0.8) and len(audio) == 12800
    np.testing.assert_allclose(audio[2000:6000], whole[18000:22000], atol=0.02)  # resampled apart, same signal


def test_a_lhotse_task_loads_features_like_a_nemo_task(tmp_path):
    recordings, supervisions = _corpus(tmp_path)
    cuts = lhotse.CutSet.from_manifests(recordings=recordings, supervisions=supervisions).trim_to_supervisions()
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    split = load(tmp_path / "cuts.jsonl.gz", tmp_path / "cache")
    assert split.texts == ["one two three", "four five six", "seven eight"] and split.problems == []
    assert [f.shape[0] for f in split.features] == [58, 78, 48]  # 25 ms windows every 10 ms in 0.6, 0.8, 0.5 s
    audio, _ = read_audio(tmp_path / "audio" / "short.wav")
    torch.testing.assert_close(split.features[2], log_mel(audio, 80).to(torch.float16))


def test_bad_lhotse_data_is_one_line_per_utterance(tmp_path):
    recordings, supervisions = _corpus(tmp_path)
    remote = lhotse.Recording(id="remote", sources=[lhotse.AudioSource("url", [0], "https://example.org/a.wav")],
                              sampling_rate=16000, num_samples=16000, duration=1.0)
    bad = lhotse.SupervisionSet.from_segments([
        *supervisions,
        lhotse.SupervisionSegment("past-end", "short", start=0.2, duration=0.9, text="one"),
        lhotse.SupervisionSegment("no-text", "short", start=0.0, duration=0.5, text=""),
        lhotse.SupervisionSegment("remote-0", "remote", start=0.0, duration=1.0, text="two"),
        lhotse.SupervisionSegment("orphan", "gone", start=0.0, duration=1.0, text="three"),
    ])
    (recordings + lhotse.RecordingSet.from_recordings([remote])).to_file(tmp_path / "x_recordings_dev.jsonl.gz")
    bad.to_file(tmp_path / "x_supervisions_dev.jsonl.gz")
    split = load(tmp_path / "x_supervisions_dev.jsonl.gz", tmp_path / "cache")
    messages = {p.line: p.message for p in split.problems}
    assert len(split.texts) == 3 and sorted(messages) == [4, 5, 6, 7]
    assert "the stretch ends at 1.10 s, but the file lasts 0.50 s" in messages[4]
    assert messages[5] == "missing field 'text'" or "empty transcript" in messages[5]
    assert "not one audio file on disk (sources: url)" in messages[6]
    assert "recording 'gone' is not in x_recordings_dev.jsonl.gz" in messages[7]
    assert all("\n" not in str(p) for p in split.problems)

    alone = tmp_path / "alone" / "y_supervisions_dev.jsonl.gz"
    alone.parent.mkdir()
    supervisions.to_file(alone)
    rows, problems = read_manifest(alone)
    assert rows == [] and "needs its RecordingSet beside it (y_recordings_dev.jsonl.gz not found)" in problems[0].message
    recordings.to_file(tmp_path / "only_recordings.jsonl.gz")
    _, problems = read_manifest(tmp_path / "only_recordings.jsonl.gz")
    assert "a RecordingSet has no transcripts" in problems[0].message


def test_a_stream_may_name_lhotse_manifests(tmp_path):
    recordings, supervisions = _corpus(tmp_path)
    cuts = lhotse.CutSet.from_manifests(recordings=recordings, supervisions=supervisions).trim_to_supervisions()
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    (tmp_path / "stream.yaml").write_text(
        "name: mine\nbase: {name: b, voice: en-us, train: 4, test: 2}\n"
        "tasks:\n  - {name: corpus, train: cuts.jsonl.gz, test: cuts.jsonl.gz}\n"
        "zero_shot: {name: z, voice: en-us-nyc, test: 2}\n")
    stream = load_stream(str(tmp_path / "stream.yaml"))
    assert stream.tasks[0].train_manifest == str(tmp_path / "cuts.jsonl.gz")


# ---- casr data import ------------------------------------------------------------------------
def imported(corpus: str, root: Path, out: Path):
    """``casr data import CORPUS ROOT --out OUT``: its output and the stream it wrote."""
    result = CliRunner().invoke(main, ["data", "import", corpus, str(root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return result.output, load_stream(str(out / "stream.yaml"))


def tiny_run(stream_dir: Path, tmp_path: Path, strategy: str, *settings: str) -> str:
    """A tiny run of the imported stream (two pretraining epochs): its output."""
    sets = [arg for setting in ("pretrain_epochs=2", *settings) for arg in ("--set", setting)]
    run = CliRunner().invoke(main, ["run", "--stream", str(stream_dir / "stream.yaml"), "--preset", "tiny",
                                    "--strategy", strategy, "--out", str(tmp_path / "run"), "--quiet",
                                    "--cache-dir", str(tmp_path / "cache"), *sets])
    assert run.exit_code == 0, run.output
    return run.output


L2_SPEAKERS = {"arabic": ["ABA", "SKA", "YBAA"], "chinese": ["BWC", "LXC", "NCC"], "hindi": ["ASI", "RRBI", "SVBI"]}
WORDS = "one two three four five six seven eight nine".split()


def miniature_l2_arctic(root: Path, sentences: int = 24) -> Path:
    """L2-ARCTIC's folder layout (SPEAKER/wav/arctic_*.wav, SPEAKER/transcript/arctic_*.txt), every
    speaker reading the same prompts as in the real corpus; tones for audio."""
    prompts = [" ".join(WORDS[(i + k) % 9] for k in range(1 + i % 3)) + f" {WORDS[i // 9]}" for i in range(sentences)]
    for speakers in L2_SPEAKERS.values():
        for s, speaker in enumerate(speakers):
            for i, prompt in enumerate(prompts):
                write(root / speaker / "wav" / f"arctic_a{i:04d}.wav", seconds=0.5, seed=100 * s + i)
                transcript = root / speaker / "transcript" / f"arctic_a{i:04d}.txt"
                transcript.parent.mkdir(exist_ok=True)
                transcript.write_text(prompt.capitalize() + ".\n")
    return root


def test_import_keeps_voices_and_sentences_apart_and_the_stream_runs(tmp_path):
    corpus = miniature_l2_arctic(tmp_path / "L2-ARCTIC")
    _, stream = imported("l2-arctic", corpus, tmp_path / "l2")
    assert (stream.base.name, [t.name for t in stream.tasks], stream.zero_shot.name) == ("arabic", ["chinese"], "hindi")
    seen: dict[str, set] = {"voices": set(), "sentences": set()}
    held: dict[str, set] = {"voices": set(), "sentences": set()}
    for task in (stream.base, *stream.tasks, stream.zero_shot):
        split_voices, split_sentences = {}, {}
        for split in ("train", "dev", "test"):
            manifest = getattr(task, f"{split}_manifest")
            if not manifest:
                continue
            rows, problems = read_manifest(Path(manifest))
            assert rows and not problems
            split_voices[split] = {r.audio.parent.parent.name for r in rows}
            split_sentences[split] = {r.text for r in rows}
            into = seen if split == "train" else held
            into["voices"] |= split_voices[split]
            into["sentences"] |= split_sentences[split]
        # dev is drawn like test: the same two held-out voices (of three), other sentences
        assert split_voices["dev"] == split_voices["test"] and len(split_voices["test"]) == 2, task.name
        assert not split_sentences["dev"] & split_sentences["test"], task.name
    assert not seen["voices"] & held["voices"] and not seen["sentences"] & held["sentences"]
    assert not stream.zero_shot.train_manifest

    output = tiny_run(tmp_path / "l2", tmp_path, "adapter-fusion", "adapter_epochs=1", "fusion_epochs=1")
    assert "hindi" in output and "chinese" in output


def test_import_errors_are_one_line(tmp_path):
    corpus = miniature_l2_arctic(tmp_path / "L2-ARCTIC", sentences=12)
    for args, message in [(["nope", str(corpus)], "unknown corpus 'nope' (valid: l2-arctic, vctk, librispeech, cmu-arctic, commonvoice)"),
                          (["l2-arctic", str(tmp_path / "missing")], "corpus folder"),
                          (["l2-arctic", str(corpus), "--base", "welsh"], "--base welsh: no such task in l2-arctic")]:
        result = CliRunner().invoke(main, ["data", "import", *args, "--out", str(tmp_path / "out")])
        assert result.exit_code == 2 and message in result.output and result.output.count("\n") == 1, result.output


def test_vctk_import_makes_a_task_per_accent_and_leaves_out_small_ones(tmp_path):
    root = tmp_path / "VCTK-Corpus"
    speakers = {"225": "English", "226": "English", "227": "English", "228": "Scottish", "229": "Scottish",
                "230": "Scottish", "231": "American", "232": "American", "233": "American", "234": "Welsh"}
    lines = ["ID  AGE  GENDER  ACCENTS  REGION"]
    for number, (speaker, accent) in enumerate(speakers.items()):
        lines.append(f"{speaker}  23  F    {accent}    Somewhere")
        for i in range(20):
            write(root / "wav48" / f"p{speaker}" / f"p{speaker}_{i:03d}.wav", seconds=0.4, seed=number * 50 + i)
            text = root / "txt" / f"p{speaker}" / f"p{speaker}_{i:03d}.txt"
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text(f"{WORDS[i % 9]} {WORDS[(i * 4) % 9]} {WORDS[i // 9]}.\n")
    (root / "speaker-info.txt").write_text("\n".join(lines) + "\n")
    output, stream = imported("vctk", root, tmp_path / "vctk")
    assert "left out (fewer than 3 speakers): welsh (1)" in output
    assert (stream.base.name, [t.name for t in stream.tasks], stream.zero_shot.name) == \
        ("american", ["english"], "scottish")


def test_common_voice_import_makes_a_task_per_accent(tmp_path):
    language = tmp_path / "cv-corpus" / "en"
    header = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment"
    accents = {"United States English": "abc", "England English": "def", "Scottish English": "ghi", "": "jkl"}
    parts: dict[str, list[str]] = {"train": [header], "dev": [header], "test": [header]}
    for a, (accent, prefix) in enumerate(accents.items()):
        for speaker in range(3):
            client = f"{prefix}{speaker}"
            for i in range(12):
                clip = f"common_voice_en_{a}{speaker}{i:02d}.mp3"  # WAV inside: soundfile reads it by its header
                write(language / "clips" / clip, seconds=0.4, seed=a * 100 + speaker * 20 + i)
                sentence = f"{WORDS[i % 9].capitalize()} {WORDS[(i * 5) % 9]} {WORDS[i // 9]}."
                part = ("train", "dev", "test")[speaker]
                parts[part].append(f"{client}\t{clip}\t{sentence}\t2\t0\ttwenties\tfemale\t{accent}\t\ten\t")
    for part, lines in parts.items():
        (language / f"{part}.tsv").write_text("\n".join(lines) + "\n")
    _, stream = imported("commonvoice", tmp_path / "cv-corpus", tmp_path / "cv")
    assert (stream.base.name, [t.name for t in stream.tasks], stream.zero_shot.name) == \
        ("england-english", ["scottish-english"], "united-states-english")


def miniature_librispeech(root: Path, sentences: int = 20) -> Path:
    """LibriSpeech's layout (PART/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac and its .trans.txt) for
    mini LibriSpeech's clean part and a dev-other part, three speakers each reading the same lines."""
    prompts = [f"{WORDS[i % 9]} {WORDS[(i * 2) % 9]} {WORDS[(i * 7) % 9]} {WORDS[i // 9]}".upper()
               for i in range(sentences)]
    for part, speakers in (("train-clean-5", ("19", "26", "32")), ("dev-other", ("116", "1255", "1585"))):
        for s, speaker in enumerate(speakers):
            folder = root / part / speaker / "100"
            lines = []
            for i, prompt in enumerate(prompts):
                utterance = f"{speaker}-100-{i:04d}"
                write(folder / f"{utterance}.flac", seconds=0.5, seed=1000 * s + i + len(part))
                lines.append(f"{utterance} {prompt}")
            (folder / f"{speaker}-100.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def test_librispeech_import_makes_its_parts_and_conditions_tasks_and_the_stream_runs(tmp_path):
    corpus = miniature_librispeech(tmp_path / "LibriSpeech")
    _, stream = imported("librispeech", corpus, tmp_path / "ls")
    assert (stream.base.name, [t.name for t in stream.tasks], stream.zero_shot.name) == \
        ("clean", ["other", "clean-pink-10db", "clean-reverb-0.7s"], "clean-white-5db")
    assert stream.tasks[1].train_manifest == stream.base.train_manifest and stream.tasks[1].condition.noise == "pink"
    assert "clean-white-5db" in tiny_run(tmp_path / "ls", tmp_path, "finetune", "finetune_epochs=1")


def test_cmu_arctic_import_trains_on_us_voices_and_keeps_the_other_accents_for_zero_shot(tmp_path):
    root = tmp_path / "cmu_arctic"
    voices = ("bdl", "slt", "clb", "rms", "jmk", "awb", "ksp", "aew", "ahw", "aup")  # 4 US, 3 others, 3 unlabelled
    for v, voice in enumerate(voices):
        lines = []
        for i in range(20):
            write(root / f"cmu_us_{voice}_arctic" / "wav" / f"arctic_a{i:04d}.wav", seconds=0.4, seed=50 * v + i)
            lines.append(f'( arctic_a{i:04d} "{WORDS[i % 9].capitalize()} {WORDS[(i * 4) % 9]} {WORDS[i // 9]}." )')
        (root / f"cmu_us_{voice}_arctic" / "etc").mkdir()
        (root / f"cmu_us_{voice}_arctic" / "etc" / "txt.done.data").write_text("\n".join(lines) + "\n")
    _, stream = imported("cmu-arctic", root, tmp_path / "cmu")
    assert (stream.base.name, [t.name for t in stream.tasks], stream.zero_shot.name) == \
        ("us", ["unlabelled", "us-pink-10db", "us-reverb-0.7s"], "other-accents")
    test_voices = {r.audio.parent.parent.name for r in read_manifest(Path(stream.zero_shot.test_manifest))[0]}
    dev_voices = {r.audio.parent.parent.name for r in read_manifest(Path(stream.zero_shot.dev_manifest))[0]}
    assert len(test_voices) == 2 and test_voices == dev_voices < {f"cmu_us_{v}_arctic" for v in ("jmk", "awb", "ksp")}
