"""Corpora: the LDC TIMIT reader and the TTS-generated TIMIT-style corpus."""
