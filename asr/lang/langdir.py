"""Lang directories (Kaldi ``data/lang``): symbol tables, lexicon, ARPA LM, L.fst and G.fst.

A lang dir holds ``phones.txt`` (``<eps>``, the 48 model phones with ids 1..48, ``#0..#K``),
``words.txt`` (``<eps>``, words, ``#0``, ``<s>``, ``</s>``), ``lexicon.txt`` (with disambiguation
symbols), ``lm.arpa``, ``L.fst`` (phones+disambig -> words, with ``#0:#0`` loops, i.e. Kaldi's
``L_disambig.fst``), ``G.fst`` (``kaldilm.arpa2fst`` with ``#0`` on backoff arcs),
``disambig.int`` (phone-table ids of ``#0..#K``) and ``lang.json``.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

from asr.datadir.table import read_token_table
from asr.jobs.atomic import write_text_atomic
from asr.lang.arpa import estimate_witten_bell, write_arpa
from asr.lang.fstarrays import read_fst, write_fst
from asr.lang.lexicon import (UNK, Lexicon, add_disambig, make_lexicon_fst,
                              phone_symbols, read_lexicon, word_symbols)
from asr.lang.phones import SILENCE, load_phone_set


def read_transcripts(path: str | Path) -> dict[str, list[str]]:
    """``utt-id tok tok ...`` lines -> {utt: tokens}; a repeated id is a ValueError naming it."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"transcript file {path} does not exist")
    return read_token_table(path, what="utterance")


def make_phone_lang(text: str | Path, out_dir: str | Path, order: int = 2,
                    phones: list[str] | None = None) -> Path:
    """Phone-recognition lang dir: words = the model phones, a phone n-gram from ``text``.

    Args:
        text: Kaldi ``text`` file of 48-set phone transcripts (``data/train/text``).
        out_dir: lang dir to write.
        order: n-gram order (2 = the usual TIMIT phone bigram).
        phones: model phone set (default ``asr.lang.load_phone_set()``).

    A phone that never occurs in ``text`` is left out of the n-gram (``G.fst`` has no arc for it;
    warned, and listed as ``unseen_phones`` in ``lang.json``), as Kaldi's TIMIT lexicon and LM hold
    only the phones of the training transcripts. Such a phone has no training frames either, so its
    GMM pdfs keep their flat-start global Gaussian, which on mismatched speech outscores the trained
    models and swallowed whole utterances when the LM gave it a unigram probability (TTS voices that
    never produce ``cl``, ``dx``, ``el``, ...).
    """
    phones = list(phones or load_phone_set())
    trans = read_transcripts(text)
    known = set(phones)
    for utt, toks in trans.items():
        bad = [t for t in toks if t not in known]
        if bad:
            raise ValueError(f"{text}: utterance {utt} has tokens {bad[:5]} outside the phone set")
    seen = {t for toks in trans.values() for t in toks}
    unseen = [p for p in phones if p not in seen]
    if unseen:
        warnings.warn(f"{text}: {len(unseen)} of the {len(phones)} phones never occur in the transcripts "
                      f"({' '.join(unseen)}): left out of the language model, so they are never recognised",
                      UserWarning, stacklevel=2)
    lexicon: Lexicon = [(p, [p]) for p in phones]
    return _write_lang(out_dir, phones, lexicon, 0, list(trans.values()), order, sil_phone=None,
                       info={"mode": "phone", "oov_tokens": 0, "oov_types": 0, "unseen_phones": unseen},
                       lm_vocab=[p for p in phones if p in seen])


def make_word_lang(lexicon_path: str | Path, text: str | Path, out_dir: str | Path,
                   order: int = 2, sil_prob: float = 0.5, phones: list[str] | None = None) -> Path:
    """Word-recognition lang dir with optional silence between words.

    OOV words of ``text`` become ``<unk>`` (pronounced ``sil``, disambiguated from the optional
    silence) with a warning giving their count; ``<unk>`` is added to the lexicon if missing.
    """
    phones = list(phones or load_phone_set())
    lex = read_lexicon(lexicon_path, phones)
    words = {w for w, _ in lex}
    if UNK not in words:
        lex.append((UNK, [SILENCE]))
        words.add(UNK)
    trans = read_transcripts(text)
    sents, oov_tok, oov_types = [], 0, set()
    for toks in trans.values():
        s = []
        for t in toks:
            if t in words:
                s.append(t)
            else:
                s.append(UNK)
                oov_tok += 1
                oov_types.add(t)
        sents.append(s)
    if oov_tok:
        warnings.warn(f"{text}: {oov_tok} OOV tokens ({len(oov_types)} word types) mapped to {UNK}",
                      UserWarning, stacklevel=2)
    lex_d, k = add_disambig(lex, reserved=[[SILENCE]])
    return _write_lang(out_dir, phones, lex_d, k, sents, order, sil_phone=SILENCE,
                       info={"mode": "word", "sil_prob": sil_prob, "oov_tokens": oov_tok,
                             "oov_types": len(oov_types)}, sil_prob=sil_prob)


def _write_lang(out_dir: str | Path, phones: list[str], lexicon: Lexicon, num_disambig: int,
                sentences: list[list[str]], order: int, sil_phone: str | None, info: dict,
                sil_prob: float = 0.5, lm_vocab: list[str] | None = None) -> Path:
    """Write the lang dir; the n-gram predicts ``lm_vocab`` (default: every lexicon word)."""
    import kaldilm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    psyms = phone_symbols(phones, num_disambig)
    wsyms = word_symbols([w for w, _ in lexicon])
    psyms.write(out / "phones.txt")
    wsyms.write(out / "words.txt")
    write_text_atomic(out / "lexicon.txt", "".join(f"{w} {' '.join(p)}\n" for w, p in lexicon))
    disambig = [psyms[f"#{k}"] for k in range(num_disambig + 1)]
    write_text_atomic(out / "disambig.int", "".join(f"{d}\n" for d in disambig))
    lm = estimate_witten_bell(sentences, lm_vocab if lm_vocab is not None else [w for w, _ in lexicon], order)
    write_arpa(lm, out / "lm.arpa")
    L = make_lexicon_fst(lexicon, psyms, wsyms, sil_phone=sil_phone, sil_prob=sil_prob)
    write_fst(L, out / "L.fst")
    tmp = out / "G.fst.tmp"
    with _captured_stderr() as log:
        kaldilm.arpa2fst(str(out / "lm.arpa"), str(tmp), disambig_symbol="#0",
                         read_symbol_table=str(out / "words.txt"), max_arpa_warnings=0)
    if not tmp.is_file():
        raise RuntimeError(f"kaldilm.arpa2fst failed on {out / 'lm.arpa'}:\n{log.read()}")
    G = read_fst(tmp)
    tmp.unlink()
    write_fst(G, out / "G.fst")
    meta = dict(info, order=order, lm="witten-bell-interpolated", num_phones=len(phones),
                num_words=len(wsyms) - 4, num_disambig=num_disambig, disambig_phone_ids=disambig,
                word_disambig_id=wsyms["#0"])
    write_text_atomic(out / "lang.json", json.dumps(meta, indent=2) + "\n")
    return out


@contextlib.contextmanager
def _captured_stderr():
    """Send the C++ library's progress lines on file descriptor 2 to a temporary file (yielded,
    so a failure can report them) instead of the terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield f
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)


def load_lang_info(lang_dir: str | Path) -> dict:
    """``lang.json`` of a lang dir; FileNotFoundError naming the missing file."""
    p = Path(lang_dir) / "lang.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p} missing: build the lang dir with `asr lang phones|words` first")
    return json.loads(p.read_text())
