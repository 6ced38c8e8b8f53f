"""LDC TIMIT reader -> Kaldi-style data directories ``train``, ``dev``, ``test``.

Follows Kaldi's ``egs/timit/s5/local/timit_data_prep.sh``: SA sentences are excluded; train =
every speaker of ``TRAIN``; dev = the 50 ``TEST`` speakers of ``data/timit/dev_spk.list``;
test = the 24-speaker core test set (``data/timit/core_test_spk.list``), SI + SX sentences.
Phones: 61 TIMIT labels -> 48 (``text``) -> 39 (``text.39``) with Lee & Hon's (1989) map,
``q`` deleted, ``h#`` -> ``sil``. File names may be upper or lower case (LDC / some copies).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from asr.datadir import DataDir, write_data_dir
from asr.jobs.stage import write_counts
from asr.lang.phones import PhoneMap, load_phone_map

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "timit"
_BOUNDARY_SLACK = 160  # .PHN may run up to 10 ms past the audio


class BadUtterance(ValueError):
    """A corpus file that cannot be used; the message names the file (and line)."""


@dataclass
class Utterance:
    utt: str
    spk: str
    gender: str
    wav: str
    n_samples: int
    phones61: list[tuple[int, int, str]]  # (start, end, label) in samples
    words: list[str]


def _ci(d: Path, name: str) -> Path | None:
    """Child of ``d`` named ``name`` in any letter case."""
    for c in d.iterdir():
        if c.name.lower() == name.lower():
            return c
    return None


def read_speaker_list(path: str | Path) -> list[str]:
    """Lower-case speaker ids, one per line."""
    return [ln.strip().lower() for ln in Path(path).read_text().splitlines() if ln.strip()]


def sphere_samples(path: Path) -> int:
    """Number of samples of a 16 kHz mono 16-bit audio file, checking the NIST SPHERE header
    (or RIFF via soundfile) for rate, sample size and truncation. Raises BadUtterance."""
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError as e:
        raise BadUtterance(f"{path}: cannot read: {e}") from None
    if head.startswith(b"NIST_1A"):
        lines = head.split(b"\n")
        try:
            hsize = int(lines[1])
        except (IndexError, ValueError):
            raise BadUtterance(f"{path}: malformed SPHERE header") from None
        fields: dict[str, str] = {}
        for ln in head[:hsize].decode("ascii", "replace").splitlines()[2:]:
            if ln.strip() == "end_head":
                break
            parts = ln.split(None, 2)
            if len(parts) == 3:
                fields[parts[0]] = parts[2].strip()
        rate = int(fields.get("sample_rate", "0"))
        if rate != SAMPLE_RATE:
            raise BadUtterance(f"{path}: sample rate {rate} Hz in SPHERE header, expected {SAMPLE_RATE}")
        nbytes, nch = int(fields.get("sample_n_bytes", "2")), int(fields.get("channel_count", "1"))
        if nbytes != 2 or nch != 1:
            raise BadUtterance(f"{path}: {nch} channel(s) of {nbytes}-byte samples, expected mono 16-bit")
        coding = fields.get("sample_coding", "pcm")
        if coding != "pcm":
            raise BadUtterance(f"{path}: sample_coding {coding!r} not supported (decompress first)")
        count = int(fields.get("sample_count", "-1"))
        avail = (path.stat().st_size - hsize) // 2
        if count < 0:
            count = avail
        if avail < count:
            raise BadUtterance(f"{path}: truncated: header says {count} samples, file holds {avail}")
        return count
    try:
        info = sf.info(str(path))
    except Exception as e:
        raise BadUtterance(f"{path}: not a readable audio file: {e}") from None
    if info.samplerate != SAMPLE_RATE:
        raise BadUtterance(f"{path}: sample rate {info.samplerate} Hz, expected {SAMPLE_RATE}")
    return int(info.frames)


def read_phn(path: Path, n_samples: int, phone_map: PhoneMap) -> list[tuple[int, int, str]]:
    """``.PHN`` -> ``[(start, end, label61)]``; errors name the file and line."""
    segs: list[tuple[int, int, str]] = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split()
        try:
            s, e, lab = int(cols[0]), int(cols[1]), cols[2]
            if len(cols) != 3:
                raise IndexError
        except (IndexError, ValueError):
            raise BadUtterance(f"{path}:{n}: expected 'start end label': {line!r}") from None
        if lab not in phone_map.to48:
            raise BadUtterance(f"{path}:{n}: unknown phone label {lab!r}")
        if e <= s or (segs and s < segs[-1][0]) or (segs and e < segs[-1][1]) or s < 0:
            raise BadUtterance(f"{path}:{n}: non-monotone boundaries {s} {e}")
        if e > n_samples + _BOUNDARY_SLACK:
            raise BadUtterance(f"{path}:{n}: boundary {e} beyond the audio ({n_samples} samples)")
        segs.append((s, e, lab))
    return segs


def read_wrd(path: Path) -> list[str]:
    """Words of a ``.WRD`` file (lower case)."""
    words = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split()
        if len(cols) != 3:
            raise BadUtterance(f"{path}:{n}: expected 'start end word': {line!r}")
        words.append(cols[2].lower())
    return words


def read_utterance(spk_dir: Path, stem: str, files: dict[str, Path], phone_map: PhoneMap) -> Utterance:
    """One utterance from its ``.WAV/.PHN/.WRD/.TXT`` files; raises BadUtterance."""
    spk = spk_dir.name.lower()
    base = spk_dir / stem
    for ext in ("wav", "phn", "wrd", "txt"):
        if ext not in files:
            what = "audio" if ext == "wav" else "transcript"
            raise BadUtterance(f"{base}.{ext.upper()}: missing {what} file")
    n = sphere_samples(files["wav"])
    if n == 0:
        raise BadUtterance(f"{files['wav']}: empty utterance (0 samples)")
    segs = read_phn(files["phn"], n, phone_map)
    if not any(phone_map.to48[lab] not in (None, "sil") for _, _, lab in segs):
        raise BadUtterance(f"{files['phn']}: empty utterance (no speech phones)")
    words = read_wrd(files["wrd"])
    if not words:
        raise BadUtterance(f"{files['wrd']}: empty utterance (no words)")
    return Utterance(utt=f"{spk}_{stem.lower()}", spk=spk, gender=spk[0],
                     wav=str(files["wav"].resolve()), n_samples=n, phones61=segs, words=words)


def _speaker_dirs(corpus: Path, part: str) -> list[Path]:
    top = _ci(corpus, part)
    if top is None or not top.is_dir():
        raise FileNotFoundError(f"{corpus}: no {part} directory (LDC TIMIT layout expected)")
    return sorted((s for dr in sorted(top.iterdir()) if dr.is_dir() and dr.name.lower().startswith("dr")
                   for s in dr.iterdir() if s.is_dir()), key=lambda p: p.name.lower())


def to_data_dir(utts: list[Utterance], phone_map: PhoneMap) -> DataDir:
    """Utterances -> DataDir (48-set ``text``, 39-set ``text.39``, ``phone_times`` in s)."""
    dd = DataDir(wav={}, text={}, utt2spk={})
    for u in utts:
        dd.wav[u.utt] = u.wav
        p48 = [phone_map.to48[lab] for _, _, lab in u.phones61]
        dd.text[u.utt] = [p for p in p48 if p]
        dd.text39[u.utt] = [phone_map.fold48to39[p] for p in dd.text[u.utt]]
        dd.text_wrd[u.utt] = u.words
        dd.phone_times[u.utt] = [(s / SAMPLE_RATE, e / SAMPLE_RATE, lab) for s, e, lab in u.phones61]
        dd.utt2spk[u.utt] = u.spk
        dd.spk2gender[u.spk] = u.gender
        dd.utt2dur[u.utt] = u.n_samples / SAMPLE_RATE
    return dd


def prepare_timit(corpus_dir: str | Path, out_dir: str | Path | None = None,
                  skip_bad: bool = False, dev_list: str | Path = DATA_DIR / "dev_spk.list",
                  test_list: str | Path = DATA_DIR / "core_test_spk.list",
                  ) -> dict[str, DataDir]:
    """Read an LDC-layout TIMIT corpus into ``{"train", "dev", "test"}`` data directories and,
    when ``out_dir`` is given, write them to ``out_dir/{train,dev,test}`` (atomically).

    Bad input (missing/truncated audio, other sample rate, unknown label or non-monotone
    boundaries in ``.PHN``, empty utterance, missing transcript) is collected over the whole
    corpus: without ``skip_bad`` one BadUtterance lists every bad file (and line) and names the
    ``--skip-bad`` option; with ``skip_bad`` each is logged, left out, and counted in
    ``out_dir/log/counts.json`` (``skipped_utts``).
    """
    corpus = Path(corpus_dir)
    if not corpus.is_dir():
        raise FileNotFoundError(f"corpus directory {corpus} does not exist")
    phone_map = load_phone_map()
    dev_spk, test_spk = set(read_speaker_list(dev_list)), set(read_speaker_list(test_list))
    splits: dict[str, list[Utterance]] = {"train": [], "dev": [], "test": []}
    bad: list[tuple[str, str]] = []  # (utterance id, message naming the file)
    for part in ("train", "test"):
        for spk_dir in _speaker_dirs(corpus, part):
            spk = spk_dir.name.lower()
            if part == "train":
                split = "train"
            elif spk in dev_spk:
                split = "dev"
            elif spk in test_spk:
                split = "test"
            else:
                continue
            groups: dict[str, dict[str, Path]] = {}
            for f in spk_dir.iterdir():
                stem, dot, ext = f.name.rpartition(".")
                if dot and ext.lower() in ("wav", "phn", "wrd", "txt") and not stem.lower().startswith("sa"):
                    groups.setdefault(stem.upper(), {})[ext.lower()] = f
            for stem in sorted(groups):
                try:
                    splits[split].append(read_utterance(spk_dir, stem, groups[stem], phone_map))
                except (BadUtterance, OSError, UnicodeDecodeError) as e:
                    bad.append((f"{spk}_{stem.lower()}", str(e)))
    if bad and not skip_bad:
        raise BadUtterance(f"{len(bad)} unusable utterance(s) in {corpus}:\n  "
                           + "\n  ".join(msg for _, msg in bad)
                           + "\nfix or remove them, or leave them out with --skip-bad "
                             "(`asr data timit --skip-bad`, `recipes/timit/run.sh --skip-bad`)")
    for utt, msg in bad:
        log.warning("skipping %s: %s", utt, msg)
    skipped = [u for u, _ in bad]
    if skipped:
        log.warning("skipped %d bad utterance(s): %s", len(skipped), " ".join(skipped))
    for split, utts in splits.items():
        if not utts:
            raise ValueError(f"{corpus}: no utterances for the {split} set")
    dirs = {k: to_data_dir(v, phone_map) for k, v in splits.items()}
    if out_dir is not None:
        for k, dd in dirs.items():
            write_data_dir(dd, Path(out_dir) / k)
        write_counts(out_dir, {"skipped_utts": skipped})
    return dirs
