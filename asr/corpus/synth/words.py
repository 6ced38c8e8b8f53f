"""Word boundaries for ``.WRD`` files.

espeak-ng tags each phone with the word it came from (its text position), so its word times
are the engine's own. For flite, which reports phones only, the engine phones are aligned by
edit distance (kaldialign) to the lexicon pronunciation of the sentence, both folded to the
39-phone set, and each engine phone is given to the word of the lexicon phone it aligns with
(insertions go to the preceding word).
"""
from __future__ import annotations

import kaldialign

from asr.corpus.synth.phonemap import Segment
from asr.lang.phones import PhoneMap

_NON_SPEECH = {"h#", "pau", "q", "epi"}


def word_segments(words: list[str], segs: list[Segment], lexicon: dict[str, list[str]],
                  phone_map: PhoneMap) -> list[tuple[int, int, str]]:
    """``(start_sample, end_sample, word)`` for every word in order (TIMIT ``.WRD``).

    ``segs`` are TIMIT-labelled segments whose 4th field is the word index (espeak) or None
    (then the lexicon alignment decides). A word that gets no phone gets an empty interval
    at the end of the previous word.
    """
    speech = [i for i, s in enumerate(segs) if s[0] not in _NON_SPEECH]
    owner: dict[int, int] = {}
    if speech and all(segs[i][3] is not None and segs[i][3] >= 0 for i in speech):
        owner = {i: int(segs[i][3]) for i in speech}  # type: ignore[arg-type]
    else:
        ref, ref_word = [], []
        for wi, w in enumerate(words):
            if w not in lexicon:
                raise ValueError(f"word {w!r} is not in the lexicon")
            for p in lexicon[w]:
                ref.append(phone_map.fold48to39.get(p, p))
                ref_word.append(wi)
        hyp = [phone_map.to39[segs[i][0]] or segs[i][0] for i in speech]
        ri = hi = 0
        cur = 0
        for r, h in kaldialign.align(ref, hyp, "*"):
            if r != "*":
                cur = ref_word[ri]
                ri += 1
            if h != "*":
                owner[speech[hi]] = cur
                hi += 1
    bounds: dict[int, tuple[int, int]] = {}
    for i, wi in owner.items():
        if 0 <= wi < len(words):
            s, e = bounds.get(wi, (segs[i][1], segs[i][2]))
            bounds[wi] = (min(s, segs[i][1]), max(e, segs[i][2]))
    out: list[tuple[int, int, str]] = []
    prev_end = segs[0][2] if segs and segs[0][0] == "h#" else 0
    for wi, w in enumerate(words):
        s, e = bounds.get(wi, (prev_end, prev_end))
        s = max(s, prev_end) if s < prev_end else s
        e = max(e, s)
        out.append((s, e, w))
        prev_end = e
    return out
