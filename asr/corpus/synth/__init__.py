"""TIMIT-style corpus generated with offline TTS engines (espeak-ng, flite, festival).

``generate_corpus(out_dir, SynthConfig(size, seed), nj)`` writes the LDC TIMIT layout so the
same reader (``asr.corpus.timit.prepare_timit``) serves real and generated data. Modules:
``engines`` (synthesis + engine phone timing), ``phonemap`` (engine -> TIMIT labels,
``data/tts_phone_map.tsv``), ``words`` (word boundaries), ``voices`` (speakers,
``data/tts_voices.tsv``), ``degrade`` (noise/reverb/telephone), ``text`` (sentences and
lexicon), ``config`` (sizes and the ``Difficulty`` knobs), ``writer`` (layout, jobs).
"""
from asr.corpus.synth.config import SIZES, Difficulty, SynthConfig
from asr.corpus.synth.writer import generate_corpus

__all__ = ["SIZES", "Difficulty", "SynthConfig", "generate_corpus"]
