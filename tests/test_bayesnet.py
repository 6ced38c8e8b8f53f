"""Asia Bayesian network: pgmpy inference against brute-force enumeration of the joint."""
from __future__ import annotations

import copy
import itertools

import pytest

from asr.generative.bayesnet import ASIA_SPEC, build_network, posterior, render_graph, to_dot


def _brute_posterior(spec, query, evidence):
    nodes = list(spec)
    totals = {s: 0.0 for s in spec[query]["states"]}
    for values in itertools.product(*(spec[n]["states"] for n in nodes)):
        x = dict(zip(nodes, values))
        if any(x[k] != v for k, v in evidence.items()):
            continue
        p = 1.0
        for n in nodes:
            parents = spec[n]["parents"]
            configs = list(itertools.product(*(spec[q]["states"] for q in parents)))
            row = configs.index(tuple(x[q] for q in parents))
            p *= spec[n]["cpt"][row][spec[n]["states"].index(x[n])]
        totals[x[query]] += p
    z = sum(totals.values())
    return {s: v / z for s, v in totals.items()}


@pytest.mark.parametrize("query,evidence", [
    ("lung", {}),
    ("lung", {"smoke": "yes"}),
    ("lung", {"smoke": "yes", "xray": "yes", "dysp": "yes"}),
    ("lung", {"asia": "yes", "xray": "yes"}),           # explaining away by tuberculosis
    ("tub", {"asia": "yes", "xray": "yes", "dysp": "no"}),
    ("bronc", {"dysp": "yes", "smoke": "no"}),
])
def test_posteriors_match_enumeration(query, evidence):
    model = build_network(ASIA_SPEC)
    got = posterior(model, query, evidence)
    ref = _brute_posterior(ASIA_SPEC, query, evidence)
    assert got.keys() == ref.keys()
    for s in ref:
        assert got[s] == pytest.approx(ref[s], abs=1e-9)


def test_known_values():
    model = build_network()
    assert posterior(model, "lung")["yes"] == pytest.approx(0.055)      # 0.5*0.1 + 0.5*0.01
    assert posterior(model, "lung", {"smoke": "yes"})["yes"] == pytest.approx(0.1)


def test_bad_cpt_and_bad_evidence():
    spec = copy.deepcopy(ASIA_SPEC)
    spec["lung"]["cpt"] = [[0.1, 0.8], [0.01, 0.99]]
    with pytest.raises(ValueError, match="'lung'.*row 0 sums to 0.9"):
        build_network(spec)
    spec = copy.deepcopy(ASIA_SPEC)
    spec["dysp"]["cpt"] = spec["dysp"]["cpt"][:3]
    with pytest.raises(ValueError, match="'dysp'.*shape"):
        build_network(spec)
    spec = copy.deepcopy(ASIA_SPEC)
    spec["xray"]["parents"] = ["cancer"]
    with pytest.raises(ValueError, match="parent 'cancer'"):
        build_network(spec)
    model = build_network()
    with pytest.raises(ValueError, match="unknown node 'cough'"):
        posterior(model, "lung", {"cough": "yes"})
    with pytest.raises(ValueError, match="unknown state"):
        posterior(model, "lung", {"smoke": "sometimes"})
    with pytest.raises(ValueError, match="unknown node"):
        posterior(model, "cancer")


def test_render_graph_png(tmp_path):
    dot = to_dot(highlight={"smoke": "yes"}, annotate={"lung": "P(yes)=0.100"})
    assert dot.count("->") == 8 and '"smoke" -> "lung"' in dot
    out = render_graph(dot, tmp_path / "asia.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "asia.png.tmp").exists()
