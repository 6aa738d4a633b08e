"""slidelite.postprocess: dequantization, softmax and MediaPipe-style category selection."""
from __future__ import annotations

import numpy as np
import pytest

from slidelite.errors import UsageError
from slidelite.metadata import metadata_from_dict
from slidelite.postprocess import CategoryFilter, scores_from_output, select_categories, softmax
from tests._runtime_fixtures import LABELS, fixture_metadata

SCORES = np.array([0.05, 0.30, 0.10, 0.30, 0.02, 0.08, 0.05, 0.04, 0.03, 0.03])


def test_softmax_is_stable_for_huge_logits():
    out = softmax(np.array([[1e4, 1e4 - 1, -1e4], [0.0, 0.0, 0.0]]))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    np.testing.assert_allclose(out[0, :2], [1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1))])
    np.testing.assert_allclose(out[1], 1 / 3)


def test_logits_are_softmaxed_per_row():
    md = metadata_from_dict(fixture_metadata())
    raw = np.random.default_rng(0).normal(size=(3, 10)).astype(np.float32)
    scores = scores_from_output(raw, md)
    expected = np.exp(raw.astype(np.float64))
    np.testing.assert_allclose(scores, expected / expected.sum(axis=1, keepdims=True), rtol=1e-12)


def test_probabilities_are_used_as_they_are():
    md = metadata_from_dict(fixture_metadata(output_kind="probabilities"))
    raw = np.array([[0.1, 0.9] + [0.0] * 8], dtype=np.float32)
    np.testing.assert_allclose(scores_from_output(raw, md), raw, rtol=1e-7)


def test_quantized_output_is_dequantized_before_softmax():
    md = metadata_from_dict(fixture_metadata(output_dtype="uint8", output_quant=(0.5, 100)))
    raw = np.array([[100, 102, 98, 100, 100, 100, 100, 100, 100, 120]], dtype=np.uint8)
    real = (raw.astype(np.float64) - 100) * 0.5
    expected = np.exp(real) / np.exp(real).sum()
    np.testing.assert_allclose(scores_from_output(raw, md), expected, rtol=1e-12)


def test_quantized_probabilities():
    md = metadata_from_dict(fixture_metadata(output_kind="probabilities", output_dtype="uint8",
                                             output_quant=(1 / 256, 0)))
    raw = np.array([[0, 64, 128, 64, 0, 0, 0, 0, 0, 0]], dtype=np.uint8)
    np.testing.assert_allclose(scores_from_output(raw, md)[0, :4], [0, 0.25, 0.5, 0.25])


def labels_of(categories):
    return [c.label for c in categories]


def test_sorted_best_first_ties_by_index():
    cats = select_categories(SCORES, LABELS)
    assert labels_of(cats)[:4] == ["automobile", "cat", "bird", "dog"]
    assert [c.index for c in cats[:2]] == [1, 3]
    assert cats[0].score == pytest.approx(0.30)
    assert len(cats) == 10


@pytest.mark.parametrize("max_results,count", [(None, 10), (0, 10), (-1, 10), (1, 1), (3, 3), (50, 10)])
def test_max_results(max_results, count):
    assert len(select_categories(SCORES, LABELS, max_results=max_results)) == count


def test_threshold_is_inclusive():
    assert labels_of(select_categories(SCORES, LABELS, score_threshold=0.10)) == ["automobile", "cat", "bird"]
    assert select_categories(SCORES, LABELS, score_threshold=0.9) == []


def test_allowlist_keeps_only_named_labels_then_topk():
    cats = select_categories(SCORES, LABELS, max_results=2, allowlist=["frog", "bird", "ship", "deer"])
    assert labels_of(cats) == ["bird", "frog"]


def test_denylist_drops_named_labels():
    cats = select_categories(SCORES, LABELS, max_results=3, denylist=["cat", "automobile"])
    assert labels_of(cats) == ["bird", "dog", "airplane"]


def test_allowlist_and_denylist_are_exclusive():
    with pytest.raises(UsageError, match="mutually exclusive"):
        select_categories(SCORES, LABELS, allowlist=["cat"], denylist=["dog"])


@pytest.mark.parametrize("kind", ["allowlist", "denylist"])
def test_unknown_labels_are_named(kind):
    with pytest.raises(UsageError, match=f"unknown label\\(s\\) in the category {kind}: 'lion', 'tiger'"):
        select_categories(SCORES, LABELS, **{kind: ["cat", "lion", "tiger", "lion"]})


@pytest.mark.parametrize("bad", [dict(score_threshold=float("nan")), dict(score_threshold="0.5"),
                                 dict(max_results=2.5), dict(max_results=True)])
def test_bad_filter_values(bad):
    with pytest.raises(UsageError):
        select_categories(SCORES, LABELS, **bad)


def test_duplicate_labels_are_all_allowed():
    labels = ("a", "b", "a")
    cats = select_categories(np.array([0.2, 0.5, 0.3]), labels, allowlist=["a"])
    assert [(c.index, c.label) for c in cats] == [(2, "a"), (0, "a")]


@pytest.mark.parametrize("max_results", [1, 3, 5, 40, None])
def test_top_k_is_a_full_sort_cut_to_k_ties_by_index(max_results):
    rng = np.random.default_rng(max_results or 0)
    scores = np.round(rng.random(1000), 2)  # many ties, also across the k-th place
    labels = [f"c{i}" for i in range(1000)]
    got = [c.index for c in CategoryFilter(labels, max_results)(scores)]
    assert got == [int(i) for i in np.argsort(-scores, kind="stable")[:max_results]]
