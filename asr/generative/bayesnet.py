"""A small discrete Bayesian network: the "Asia" chest-clinic diagnosis example.

Network and CPTs from Lauritzen & Spiegelhalter, "Local computations with probabilities on
graphical structures and their application to expert systems", JRSS B 50(2), 1988:
a visit to Asia raises the risk of tuberculosis, smoking raises the risks of lung cancer and
bronchitis; either tuberculosis or lung cancer shows on a chest X-ray, and dyspnoea is caused
by bronchitis or by either of the two.

Models are given as a *spec*: ``{node: {"states": [...], "parents": [...], "cpt": rows}}``
where ``cpt`` has one row per configuration of the parents (``itertools.product`` order of
the parents' states, the last parent varying fastest) and one column per state of the node;
every row must sum to one. :func:`build_network` validates the spec and builds a pgmpy
``DiscreteBayesianNetwork``; :func:`posterior` runs exact inference (variable elimination,
pgmpy). :func:`to_dot` / :func:`render_graph` draw the graph with the graphviz ``dot`` program.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

Spec = Mapping[str, Mapping[str, Any]]

YN = ["yes", "no"]
ASIA_SPEC: dict[str, dict[str, Any]] = {
    "asia": {"states": YN, "parents": [], "cpt": [[0.01, 0.99]],
             "label": "visit to Asia"},
    "smoke": {"states": YN, "parents": [], "cpt": [[0.5, 0.5]], "label": "smoker"},
    "tub": {"states": YN, "parents": ["asia"], "cpt": [[0.05, 0.95], [0.01, 0.99]],
            "label": "tuberculosis"},
    "lung": {"states": YN, "parents": ["smoke"], "cpt": [[0.1, 0.9], [0.01, 0.99]],
             "label": "lung cancer"},
    "bronc": {"states": YN, "parents": ["smoke"], "cpt": [[0.6, 0.4], [0.3, 0.7]],
              "label": "bronchitis"},
    "either": {"states": YN, "parents": ["lung", "tub"],
               "cpt": [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]],
               "label": "tuberculosis or cancer"},
    "xray": {"states": YN, "parents": ["either"], "cpt": [[0.98, 0.02], [0.05, 0.95]],
             "label": "positive X-ray"},
    "dysp": {"states": YN, "parents": ["bronc", "either"],
             "cpt": [[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.1, 0.9]],
             "label": "dyspnoea"},
}


def _pgmpy():
    """Import pgmpy lazily (it is slow to import), silencing the FutureWarnings that pgmpy 1.x
    raises about its own deprecated modules. Returns (TabularCPD, DiscreteBayesianNetwork,
    VariableElimination)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from pgmpy.factors.discrete import TabularCPD
        from pgmpy.inference import VariableElimination
        from pgmpy.models import DiscreteBayesianNetwork
    return TabularCPD, DiscreteBayesianNetwork, VariableElimination


def validate_spec(spec: Spec, tol: float = 1e-6) -> None:
    """Raise ValueError naming the node if the spec is malformed: unknown parent, wrong CPT
    shape, negative entries, or a row that does not sum to one (within ``tol``)."""
    if not spec:
        raise ValueError("empty network spec")
    for node, d in spec.items():
        states, parents = list(d.get("states", [])), list(d.get("parents", []))
        if len(states) < 2 or len(set(states)) != len(states):
            raise ValueError(f"node {node!r}: needs at least two distinct states, got {states}")
        for p in parents:
            if p not in spec:
                raise ValueError(f"node {node!r}: parent {p!r} is not a node of the network")
        rows = np.asarray(d.get("cpt"), dtype=float)
        n_rows = int(np.prod([len(spec[p]["states"]) for p in parents])) if parents else 1
        if rows.shape != (n_rows, len(states)):
            raise ValueError(f"node {node!r}: CPT must have shape ({n_rows}, {len(states)}) "
                             f"(parent configurations x states), got {rows.shape}")
        if (rows < 0).any() or not np.isfinite(rows).all():
            raise ValueError(f"node {node!r}: CPT entries must be finite and non-negative")
        sums = rows.sum(1)
        bad = np.nonzero(np.abs(sums - 1.0) > tol)[0]
        if bad.size:
            raise ValueError(f"node {node!r}: CPT row {int(bad[0])} sums to {sums[bad[0]]:.6g}, not 1")


def build_network(spec: Spec = ASIA_SPEC):
    """Validate ``spec`` and build a checked pgmpy ``DiscreteBayesianNetwork``."""
    validate_spec(spec)
    TabularCPD, DiscreteBayesianNetwork, _ = _pgmpy()

    edges = [(p, n) for n, d in spec.items() for p in d.get("parents", [])]
    model = DiscreteBayesianNetwork(edges)
    model.add_nodes_from(spec)
    for node, d in spec.items():
        parents = list(d.get("parents", []))
        names = {node: list(d["states"]), **{p: list(spec[p]["states"]) for p in parents}}
        model.add_cpds(TabularCPD(node, len(d["states"]), np.asarray(d["cpt"], dtype=float).T,
                                  evidence=parents or None,
                                  evidence_card=[len(spec[p]["states"]) for p in parents] or None,
                                  state_names=names))
    try:
        model.check_model()
    except ValueError as e:
        raise ValueError(f"invalid Bayesian network: {e}") from e
    return model


def check_evidence(model, evidence: Mapping[str, str]) -> None:
    """Raise ValueError if evidence names a node or a state the model does not have."""
    for node, state in evidence.items():
        if node not in model.nodes():
            raise ValueError(f"evidence names unknown node {node!r}; nodes: {sorted(model.nodes())}")
        states = model.get_cpds(node).state_names[node]
        if state not in states:
            raise ValueError(f"evidence {node}={state!r}: unknown state; {node} has states {states}")


def posterior(model, query: str, evidence: Mapping[str, str] | None = None) -> dict[str, float]:
    """Exact posterior ``P(query | evidence)`` as ``{state: probability}`` (variable elimination)."""
    VariableElimination = _pgmpy()[2]
    evidence = dict(evidence or {})
    if query not in model.nodes():
        raise ValueError(f"query names unknown node {query!r}; nodes: {sorted(model.nodes())}")
    if query in evidence:
        raise ValueError(f"query node {query!r} is also given as evidence")
    check_evidence(model, evidence)
    logging.getLogger("pgmpy").setLevel(logging.ERROR)
    factor = VariableElimination(model).query([query], evidence=evidence or None, show_progress=False)
    states = factor.state_names[query]
    return {s: float(p) for s, p in zip(states, factor.values)}


def to_dot(spec: Spec = ASIA_SPEC, highlight: Mapping[str, str] | None = None,
           annotate: Mapping[str, str] | None = None) -> str:
    """Graphviz DOT text of the network; ``highlight`` (evidence) nodes are filled grey and
    ``annotate`` adds a second label line per node (e.g. a posterior)."""
    highlight, annotate = dict(highlight or {}), dict(annotate or {})
    lines = ["digraph bayesnet {", "  rankdir=TB;", '  node [shape=ellipse, fontname="Helvetica"];']
    for node, d in spec.items():
        label = str(d.get("label", node))
        if node in highlight:
            label += f"\\n= {highlight[node]}"
        if node in annotate:
            label += f"\\n{annotate[node]}"
        style = ', style=filled, fillcolor="#dddddd"' if node in highlight else ""
        lines.append(f'  "{node}" [label="{label}"{style}];')
    for node, d in spec.items():
        for p in d.get("parents", []):
            lines.append(f'  "{p}" -> "{node}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_graph(dot_text: str, path: str | Path, fmt: str = "png") -> Path:
    """Render DOT text with the graphviz ``dot`` program to ``path`` (written atomically)."""
    exe = shutil.which("dot")
    if exe is None:
        raise FileNotFoundError("graphviz 'dot' program not found on PATH (install graphviz)")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    res = subprocess.run([exe, f"-T{fmt}", "-o", str(tmp)], input=dot_text.encode(),
                         capture_output=True, check=False)
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"dot failed on {path}: {res.stderr.decode(errors='replace').strip()}")
    os.replace(tmp, path)
    return path


__all__ = ["ASIA_SPEC", "validate_spec", "build_network", "check_evidence", "posterior", "to_dot",
           "render_graph"]
