"""Write a TIMIT-layout corpus: ``TRAIN|TEST/DR<n>/<SPK>/<UTT>.WAV|.PHN|.WRD|.TXT``.

``generate_corpus`` plans speakers and sentences (deterministic in the seed), synthesises
each speaker as one job through ``asr.jobs.map_jobs`` and writes into ``OUT.tmp`` which is
renamed over ``OUT`` at the end. ``DOC/SPEAKERS.TSV`` records every speaker's configuration.
"""
from __future__ import annotations

import hashlib
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from asr.corpus.synth import degrade
from asr.corpus.synth.config import N_SI, N_SX, SX_READERS, SynthConfig
from asr.corpus.synth.engines import Synthesis, espeak_batch, festival_batch, flite_synth
from asr.corpus.synth.phonemap import pad_edges, rescale, to_timit
from asr.corpus.synth.text import SA_SENTENCES, load_lexicon, load_sentences, split_words
from asr.corpus.synth.voices import Speaker, make_speakers
from asr.corpus.synth.words import word_segments
from asr.lang.phones import load_phone_map

SAMPLE_RATE = 16000
SX_BASE, SI_BASE, SX_MAX = 3, 453, 450  # TIMIT numbering: SX3..SX452, SI453..
EDGE_SILENCE = (1600, 4000)  # samples of leading/trailing silence (0.1-0.25 s), like TIMIT h#


@dataclass(frozen=True)
class UttPlan:
    name: str  # SA1, SX17, SI1234
    sentence: str


@dataclass(frozen=True)
class SpeakerJob:
    root: str
    speaker: Speaker
    utts: tuple[UttPlan, ...]
    seed: int


def plan_sentences(cfg: SynthConfig, speakers: dict[str, list[Speaker]],
                   sentences: list[str]) -> dict[str, tuple[UttPlan, ...]]:
    """2 SA + 3 SI + 5 SX per speaker. SX sentences are shared by ~7 speakers (train and
    eval SX pools disjoint, as in TIMIT's core test); SI sentences are read once."""
    n_train = len(speakers["train"])
    n_eval = len(speakers["dev"]) + len(speakers["test"])
    n_sx_train = max(N_SX, math.ceil(n_train * N_SX / SX_READERS))
    n_sx_eval = max(N_SX, math.ceil(n_eval * N_SX / SX_READERS))
    if n_sx_train + n_sx_eval > SX_MAX or len(sentences) < SX_MAX + N_SI:
        raise ValueError(f"{len(sentences)} sentences are too few for size {cfg.size!r}")
    pools = {"train": list(range(n_sx_train)),
             "eval": list(range(n_sx_train, n_sx_train + n_sx_eval))}
    si_pool = list(range(SX_MAX, len(sentences)))
    plan: dict[str, tuple[UttPlan, ...]] = {}
    si_next = 0
    for split in ("train", "dev", "test"):
        pool = pools["train" if split == "train" else "eval"]
        for k, spk in enumerate(speakers[split]):
            if split == "test":
                k += len(speakers["dev"])
            utts = [UttPlan(f"SA{i + 1}", s) for i, s in enumerate(SA_SENTENCES)]
            for j in range(N_SI):
                idx = si_pool[(si_next + j) % len(si_pool)]
                utts.append(UttPlan(f"SI{SI_BASE + idx - SX_MAX}", sentences[idx]))
            si_next += N_SI
            for j in range(N_SX):
                idx = pool[(k * N_SX + j) % len(pool)]
                utts.append(UttPlan(f"SX{SX_BASE + idx}", sentences[idx]))
            plan[spk.spk_id] = tuple(utts)
    return plan


def _utt_seed(seed: int, spk: str, utt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{spk}/{utt}".encode()).digest()[:8], "little") >> 1


def engine_synthesize(spk: Speaker, sentences: list[str]) -> list[Synthesis]:
    """Raw engine output for ``sentences`` in ``spk``'s voice (espeak: one fresh worker
    process for the whole list, so the result depends only on the list)."""
    v = spk.voice
    if v.engine == "espeak":
        req = (v.name, int(round(spk.rate)), int(round(spk.pitch or 50)), int(round(spk.pitch_range)))
        return espeak_batch([(s, *req) for s in sentences])
    if v.engine == "flite":
        return [flite_synth(s, v.name, spk.rate, spk.pitch) for s in sentences]
    if v.engine == "festival":
        return festival_batch(sentences, v.name, spk.rate, spk.pitch)
    raise ValueError(f"unknown engine {v.engine!r} for speaker {spk.spk_id}")


def render_utterance(spk: Speaker, syn: Synthesis, sentence: str, seed: int,
                     lexicon: dict[str, list[str]]
                     ) -> tuple[torch.Tensor, list[tuple[int, int, str]], list[tuple[int, int, str]]]:
    """Engine output -> int16 audio ``(N,)`` at 16 kHz (vocal-tract warp, edge silence,
    channel condition of ``spk``), TIMIT phone segments ``(start, end, label61)`` and word
    segments ``(start, end, word)`` in samples. Deterministic in ``seed``."""
    segs = to_timit(syn.phones, spk.voice.engine, len(syn.audio))
    target = int(round(SAMPLE_RATE / spk.vtl_warp / 100.0)) * 100  # warp + resample in one
    x = degrade.resample(torch.from_numpy(syn.audio), syn.sample_rate, target)
    segs = rescale(segs, len(syn.audio), x.numel())
    gen = torch.Generator().manual_seed(seed)
    lead, trail = (int(v) for v in torch.randint(*EDGE_SILENCE, (2,), generator=gen))
    x = torch.cat([torch.zeros(lead), x, torch.zeros(trail)])
    segs = pad_edges(segs, lead, trail)
    y = degrade.to_int16(degrade.apply_condition(x, spk.condition, SAMPLE_RATE, gen))
    words = word_segments(split_words(sentence), segs, lexicon, load_phone_map())
    return y, [(s, e, lab) for lab, s, e, _ in segs], words


def synthesize_utterance(spk: Speaker, sentence: str, seed: int, lexicon: dict[str, list[str]]
                         ) -> tuple[torch.Tensor, list[tuple[int, int, str]], list[tuple[int, int, str]]]:
    """One utterance of ``spk``: ``render_utterance(engine_synthesize(...))``."""
    return render_utterance(spk, engine_synthesize(spk, [sentence])[0], sentence, seed, lexicon)


def write_sphere(path: Path, audio: torch.Tensor) -> None:
    """16 kHz 16-bit NIST SPHERE (``NIST_1A`` header) via soundfile."""
    sf.write(str(path), audio.numpy().astype(np.int16), SAMPLE_RATE, format="NIST",
             subtype="PCM_16")


def _run_speaker(job: SpeakerJob) -> dict[str, float]:
    spk = job.speaker
    lexicon = load_lexicon()
    d = Path(job.root) / spk.split / f"DR{spk.dr}" / spk.spk_id
    d.mkdir(parents=True, exist_ok=True)
    total = 0
    try:
        raw = engine_synthesize(spk, [u.sentence for u in job.utts])
    except Exception as e:
        raise RuntimeError(f"speaker {spk.spk_id}: {e}") from e
    for u, syn in zip(job.utts, raw):
        try:
            audio, phones, words = render_utterance(
                spk, syn, u.sentence, _utt_seed(job.seed, spk.spk_id, u.name), lexicon)
        except Exception as e:
            raise RuntimeError(f"speaker {spk.spk_id} utterance {u.name}: {e}") from e
        write_sphere(d / f"{u.name}.WAV", audio)
        (d / f"{u.name}.PHN").write_text("".join(f"{s} {e} {lab}\n" for s, e, lab in phones))
        (d / f"{u.name}.WRD").write_text("".join(f"{s} {e} {w}\n" for s, e, w in words))
        (d / f"{u.name}.TXT").write_text(f"0 {audio.numel()} {u.sentence}\n")
        total += audio.numel()
    return {"seconds": total / SAMPLE_RATE, "utts": len(job.utts)}


def generate_corpus(out_dir: str | Path, cfg: SynthConfig, nj: int = 1,
                    progress: bool = True) -> dict[str, object]:
    """Generate the corpus of ``cfg`` into ``out_dir`` (replaced atomically). Returns facts:
    speakers per split, utterances, seconds of audio, voices, conditions."""
    from asr.jobs import map_jobs

    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    speakers = make_speakers(cfg)
    plan = plan_sentences(cfg, speakers, load_sentences())
    all_spk = speakers["train"] + speakers["dev"] + speakers["test"]
    jobs = [SpeakerJob(str(tmp), s, plan[s.spk_id], cfg.seed) for s in all_spk]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in map_jobs workers: same float results for any nj
    try:
        stats = map_jobs(_run_speaker, jobs, nj=nj, desc="synth speakers" if progress else None,
                         progress=progress)
    finally:
        torch.set_num_threads(threads)
    doc = tmp / "DOC"
    doc.mkdir(parents=True, exist_ok=True)
    rows = []
    for part, spks in speakers.items():
        for s in spks:
            r = s.as_row()
            r["set"] = part
            rows.append(r)
    cols = list(rows[0])
    (doc / "SPEAKERS.TSV").write_text(
        "\t".join(cols) + "\n" + "".join("\t".join(str(r[c]) for c in cols) + "\n" for r in rows))
    if out.exists():
        old = out.with_name(out.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)
    facts: dict[str, object] = {
        "speakers": {k: len(v) for k, v in speakers.items()},
        "utterances": sum(int(s["utts"]) for s in stats),
        "seconds": sum(s["seconds"] for s in stats),
        "seconds_train": sum(s["seconds"] for s, j in zip(stats, jobs)
                             if j.speaker in speakers["train"]),
        "voices": sorted({f"{s.voice.engine}:{s.voice.name}" for s in all_spk}),
        "test_only_voices": sorted({f"{s.voice.engine}:{s.voice.name}" for s in speakers["test"]
                                    if s.voice.use == "test"}),
        "conditions": sorted({s.condition.describe().split("@")[0].split("+")[0]
                              for s in all_spk}),
    }
    return facts
