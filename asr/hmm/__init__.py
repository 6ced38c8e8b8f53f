"""HMM layer: topology, transition model, context dependency (decision-tree tying),
Viterbi / forward-backward and batched forced alignment.

See ``asr/README.md`` (contracts) and the module docstrings for the references followed.
"""
from asr.hmm.context import ContextDependency
from asr.hmm.topology import Topology, chain_phone_index, chain_phones, chain_states
from asr.hmm.transition import TransitionModel

__all__ = ["Topology", "TransitionModel", "ContextDependency", "chain_phones", "chain_states",
           "chain_phone_index"]
