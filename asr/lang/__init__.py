"""Phone sets, lexicons, language models and decoding graphs (L, G, HCLG via kaldifst)."""
from asr.lang.phones import PhoneMap, load_phone_map, load_phone_set

__all__ = ["PhoneMap", "load_phone_map", "load_phone_set"]
