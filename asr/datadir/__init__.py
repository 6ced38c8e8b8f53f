"""Kaldi-style data directories: ``DataDir``, read / validate / write (atomic).

Layout (every file sorted in ``LC_ALL=C`` order of its key; see ``asr/README.md``):
``wav.scp``, ``text`` (48-phone set), ``text.39``, ``text.wrd``, ``phone_times``,
``utt2spk``, ``spk2utt``, ``spk2gender``, ``utt2dur``.
"""
from asr.datadir.io import (
    DataDir,
    read_data_dir,
    validate_data_dir,
    write_data_dir,
)

__all__ = ["DataDir", "read_data_dir", "validate_data_dir", "write_data_dir"]
