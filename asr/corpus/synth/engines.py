"""Offline TTS engines with their own phone timing: espeak-ng (C library via ctypes), flite
(``-psdur``) and festival (``utt.save.segs``).

Each engine returns a ``Synthesis``: mono float32 audio, its sample rate, and the engine's
phone segments as ``(symbol, start_sample, end_sample, word_index)`` where ``word_index`` is
the 0-based word of the input text the phone belongs to (-1 for pauses, None when the engine
does not say; flite and festival do not).
"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
import soundfile as sf


@dataclass
class Synthesis:
    audio: np.ndarray  # (N,) float32 in [-1, 1]
    sample_rate: int
    phones: list[tuple[str, int, int, int | None]]


# ---------------------------------------------------------------------------------- espeak-ng
_ESPEAK_SYNCHRONOUS = 2
_ESPEAK_INIT_PHONEME_EVENTS = 0x1
_EV_WORD, _EV_PHONEME = 1, 7
_RATE, _PITCH, _RANGE = 1, 3, 4


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int), ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p), ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


class _Espeak:
    """Process-wide espeak-ng library handle (the library keeps global state)."""

    def __init__(self) -> None:
        try:
            self.lib = ctypes.CDLL("libespeak-ng.so.1")
        except OSError as e:
            raise RuntimeError("espeak-ng library not found: install the Debian package "
                               "'espeak-ng' (libespeak-ng1)") from e
        self.sample_rate = self.lib.espeak_Initialize(
            _ESPEAK_SYNCHRONOUS, 0, None, _ESPEAK_INIT_PHONEME_EVENTS)
        if self.sample_rate <= 0:
            raise RuntimeError("espeak_Initialize failed")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, str, int]] = []
        self._cb = _CALLBACK(self._callback)  # keep a reference: ctypes does not
        self.lib.espeak_SetSynthCallback(self._cb)

    def _callback(self, wav, n, events) -> int:  # noqa: ANN001 - ctypes signature
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != 0:
            e = events[i]
            if e.type == _EV_PHONEME:
                self._events.append((_EV_PHONEME, e.sample, e.id.string.decode("ascii"),
                                     e.text_position))
            elif e.type == _EV_WORD:
                self._events.append((_EV_WORD, e.sample, "", e.text_position))
            i += 1
        return 0

    def synth(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int) -> Synthesis:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak-ng has no voice {voice!r}")
        for par, val in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range)):
            self.lib.espeak_SetParameter(par, int(val), 0)
        self._chunks, self._events = [], []
        data = text.encode()
        rc = self.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, 0, None, None)
        self.lib.espeak_Synchronize()
        if rc != 0 or not self._chunks:
            raise RuntimeError(f"espeak-ng failed on {text!r} (voice {voice})")
        audio = np.concatenate(self._chunks).astype(np.float32) / 32768.0
        return Synthesis(audio, self.sample_rate, _espeak_segments(self._events, text, len(audio)))


def _word_starts(text: str) -> list[int]:
    """1-based character positions of the words of ``text`` (espeak's text_position)."""
    starts, prev = [], " "
    for i, c in enumerate(text):
        if not c.isspace() and prev.isspace():
            starts.append(i + 1)
        prev = c
    return starts


def _espeak_segments(events: list[tuple[int, int, str, int]], text: str,
                     n: int) -> list[tuple[str, int, int, int | None]]:
    """Phone events (starts) -> segments; the leading silence becomes a pause segment."""
    word_of_pos = {p: i for i, p in enumerate(_word_starts(text))}
    ph = [(s, sym, pos) for typ, s, sym, pos in events if typ == _EV_PHONEME]
    segs: list[tuple[str, int, int, int | None]] = []
    if ph and ph[0][0] > 0:
        segs.append(("_", 0, ph[0][0], -1))
    for k, (start, sym, pos) in enumerate(ph):
        end = ph[k + 1][0] if k + 1 < len(ph) else n
        start, end = min(start, n), min(end, n)
        wi = -1 if sym.startswith("_") else word_of_pos.get(pos)
        segs.append((sym, start, end, wi))
    return segs


def espeak_synth(text: str, voice: str, rate: int, pitch: int, pitch_range: int) -> Synthesis:
    """espeak-ng synthesis at 22050 Hz; ``voice`` like ``en-us+f3``; rate in wpm; pitch and
    pitch_range 0..100. Phone times are espeak's own phoneme events. See ``espeak_batch``."""
    return espeak_batch([(text, voice, rate, pitch, pitch_range)])[0]


def espeak_batch(requests: list[tuple[str, str, int, int, int]]) -> list[Synthesis]:
    """Synthesise ``(text, voice, rate, pitch, pitch_range)`` requests in order, in a fresh
    child process.

    espeak-ng keeps hidden state across calls in a process (its noise generator and some
    prosody state): the same request gives different samples depending on what was
    synthesised before, and the library cannot be re-initialised. A fresh process per batch
    makes the output a function of the batch alone, hence reproducible.
    """
    with tempfile.TemporaryDirectory(prefix="asr_espeak_") as tmp:
        out = os.path.join(tmp, "out.npz")
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), out],
                              input=json.dumps(requests), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"espeak-ng worker failed: {proc.stderr.strip()[-2000:]}")
        with np.load(out) as z:
            meta = json.loads(str(z["meta"]))
            return [Synthesis(z[f"a{i}"], int(m["sr"]),
                              [(str(a), int(b), int(c), None if d is None else int(d))
                               for a, b, c, d in m["phones"]])
                    for i, m in enumerate(meta)]


def _espeak_worker(out_path: str) -> None:
    """Child side of ``espeak_batch``: JSON requests on stdin, results to ``out_path``."""
    eng = _Espeak()
    arrays, meta = {}, []
    for i, (text, voice, rate, pitch, prange) in enumerate(json.load(sys.stdin)):
        syn = eng.synth(text, voice, rate, pitch, prange)
        arrays[f"a{i}"] = syn.audio
        meta.append({"sr": syn.sample_rate, "phones": syn.phones})
    np.savez(out_path, meta=np.array(json.dumps(meta)), **arrays)


# ---------------------------------------------------------------------------------- flite
def flite_synth(text: str, voice: str, stretch: float, f0_mean: float | None) -> Synthesis:
    """flite synthesis (``voice`` in kal16, slt, rms, awb) with ``-psdur`` phone end times;
    the times are clipped to the wav length (kal voices overshoot by ~0.1 s)."""
    args = ["flite", "-voice", voice, "-psdur", "--setf", f"duration_stretch={stretch:.4f}"]
    if f0_mean is not None:
        args += ["--setf", f"int_f0_target_mean={f0_mean:.1f}"]
    with tempfile.TemporaryDirectory(prefix="asr_flite_") as tmp:
        wav = os.path.join(tmp, "x.wav")
        try:
            out = subprocess.run(args + ["-t", text, "-o", wav], check=True,
                                 capture_output=True, text=True).stdout
        except FileNotFoundError as e:
            raise RuntimeError("flite not found: install the Debian package 'flite'") from e
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"flite failed on {text!r}: {e.stderr.strip()}") from e
        audio, sr = sf.read(wav, dtype="float32")
    if audio.ndim > 1:
        audio = audio[:, 0]
    ends = [(tok.rpartition(":")[0], float(tok.rpartition(":")[2])) for tok in out.split()]
    segs = _from_end_times(ends, len(audio), sr)
    return Synthesis(np.ascontiguousarray(audio), sr, segs)


# ---------------------------------------------------------------------------------- festival
def _scheme_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def festival_batch(sentences: list[str], voice: str, stretch: float,
                   f0_mean: float | None) -> list[Synthesis]:
    """festival synthesis (diphone voices ``kal_diphone``, ``ked_diphone``) of ``sentences``
    in one batch-mode process, 16 kHz; phone end times from ``utt.save.segs``. The 20-30 ms
    unlabelled tail of diphone waves joins the final pause. ``f0_mean`` (Hz) sets the
    intonation model's target mean (``int_lr_params``), ``stretch`` ``Duration_Stretch``."""
    with tempfile.TemporaryDirectory(prefix="asr_festival_") as tmp:
        lines = [f"(voice_{voice})", f"(Parameter.set 'Duration_Stretch {stretch:.4f})"]
        if f0_mean is not None:
            lines.append(f"(set! int_lr_params (list '(target_f0_mean {f0_mean:.1f}) "
                         "'(target_f0_std 18) '(model_f0_mean 170) '(model_f0_std 34)))")
        for i, s in enumerate(sentences):
            lines += [f"(set! u (SynthText {_scheme_str(s)}))", "(utt.wave.resample u 16000)",
                      f"(utt.save.wave u {_scheme_str(os.path.join(tmp, f'{i}.wav'))} 'riff)",
                      f"(utt.save.segs u {_scheme_str(os.path.join(tmp, f'{i}.segs'))})"]
        script = os.path.join(tmp, "synth.scm")
        with open(script, "w") as f:
            f.write("\n".join(lines) + "\n")
        try:
            proc = subprocess.run(["festival", "-b", script], capture_output=True, text=True)
        except FileNotFoundError as e:
            raise RuntimeError("festival not found: install the Debian packages 'festival "
                               "festvox-kallpc16k festvox-kdlpc16k'") from e
        out = []
        for i, s in enumerate(sentences):
            wav, segs_path = os.path.join(tmp, f"{i}.wav"), os.path.join(tmp, f"{i}.segs")
            if not os.path.exists(wav) or not os.path.exists(segs_path):
                raise RuntimeError(f"festival ({voice}) failed on {s!r}: "
                                   f"{(proc.stdout + proc.stderr).strip()[-1000:]}")
            audio, sr = sf.read(wav, dtype="float32")
            with open(segs_path) as f:
                body = f.read().split("#", 1)[-1]
            ends = [(ln.split()[2], float(ln.split()[0])) for ln in body.splitlines()
                    if len(ln.split()) == 3]
            out.append(Synthesis(np.ascontiguousarray(audio if audio.ndim == 1 else audio[:, 0]),
                                 sr, _from_end_times(ends, len(audio), sr)))
    return out


def _from_end_times(ends: list[tuple[str, float]], n: int,
                    sr: int) -> list[tuple[str, int, int, int | None]]:
    """``[(phone, end_s)]`` -> segments clipped to ``n`` samples, the rest joining a final pause."""
    segs: list[tuple[str, int, int, int | None]] = []
    prev = 0
    for sym, t in ends:
        end = min(int(round(t * sr)), n)
        if end > prev:
            segs.append((sym, prev, end, -1 if sym == "pau" else None))
            prev = end
    if prev < n:
        if segs and segs[-1][0] == "pau":
            segs[-1] = ("pau", segs[-1][1], n, -1)
        else:
            segs.append(("pau", prev, n, -1))
    return segs


if __name__ == "__main__":
    _espeak_worker(sys.argv[1])
