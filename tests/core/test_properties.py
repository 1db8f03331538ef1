"""Property-based tests (hypothesis) of the core's contracts: what holds for *every* input, not only the examples.

* manifest validation: any JSON, and any mutation of a real manifest, gives a valid manifest or one
  :class:`ManifestError`/:class:`EdgekdError` of one line, never another exception;
* preprocessing: any frame (shape, dtype) gives the (1, C, H, W) float32 network input, finite, or a
  :class:`DataError`; a uniform frame gives the normalised constant everywhere;
* vote rules and threshold fitting: the invariants the runtime and build rely on;
* the npz and folder readers: any array gives (N, H, W, C) uint8 images or a :class:`DataError`; any tree of
  symlinks gives each real image once, labelled by the class folder it lies in, or a :class:`DataError`.

Deterministic (``derandomize=True``: the same examples every run) and bounded (a few hundred examples each), so
``make test`` stays short; the fuzz harness (scripts/harness/fuzz_loaders.py) goes wider."""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from edgekd.core.early_exit import NEVER, fit_thresholds, simulate  # noqa: E402
from edgekd.core.errors import ConfigError, DataError, EdgekdError  # noqa: E402
from edgekd.core.manifest import ManifestError, parse_manifest_text, validate_manifest  # noqa: E402
from edgekd.core.spec import InputSpec  # noqa: E402
from edgekd.core.vote import fit_vote_weights, vote_scores  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "bundle-abf6d4b"
MANIFEST = json.loads((FIXTURE / "manifest.json").read_text())


def fast(n: int = 200):
    return settings(max_examples=n, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------------------------------------- manifests

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10 ** 30), max_value=10 ** 30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20)


def _accepts_or_one_line(data) -> None:
    try:
        validate_manifest(data, FIXTURE)
    except EdgekdError as exc:  # ManifestError is one
        assert "\n" not in str(exc), str(exc)


@fast(300)
@given(JSON)
def test_any_json_is_a_manifest_or_one_line(data):
    _accepts_or_one_line(data)


def _paths(value, prefix=()):
    """Every path (tuple of keys/indices) into a JSON value, the root excluded."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


PATHS = sorted(_paths(MANIFEST), key=str)
#: Values users and broken disks produce, mixed into the random ones.
NASTY = st.sampled_from([10 ** 400, -1, 0, 1e308, -1e-308, 2 ** 63, "abc", "", "0", [], {}, [[]], [1e308] * 3,
                         ["a", "b"], [None] * 3, True, [[[[[[]]]]]]])


@fast(1000)
@given(st.sampled_from(PATHS), NASTY | JSON, st.booleans())
def test_any_mutation_of_a_real_manifest_is_valid_or_one_line(path, value, delete):
    data = copy.deepcopy(MANIFEST)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    _accepts_or_one_line(data)


@fast(300)
@given(st.text(max_size=200) | st.sampled_from(["[" * 5000, '{"a": NaN}', "1e999", '{"a": -Infinity}']))
def test_any_text_parses_or_is_one_line(text):
    try:
        parse_manifest_text(text, Path("manifest.json"))
    except ManifestError as exc:
        assert "\n" not in str(exc)


# ---------------------------------------------------------------------------------------------- preprocess

SPECS = st.builds(
    lambda c, h, w, resize, crop: InputSpec(h, w, c, (0.4,) * c, (0.2,) * c, ("a", "b"), resize=resize,
                                            crop_ratio=crop),
    st.sampled_from([1, 3]), st.integers(1, 24), st.integers(1, 24), st.sampled_from(["stretch", "center-crop"]),
    st.floats(0.1, 1.0))
FRAMES = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.uint16, np.float32, np.bool_, np.int64]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=12))


@fast(300)
@given(SPECS, FRAMES)
def test_any_frame_gives_the_network_input_or_a_data_error(spec, frame):
    from edgekd.device.runtime.preprocess import Preprocessor

    pre = Preprocessor(spec)
    try:
        x = pre(frame)
    except DataError as exc:
        assert "\n" not in str(exc)
        return
    assert frame.dtype == np.uint8 and frame.size > 0
    assert x.shape == (1, spec.channels, spec.height, spec.width) and x.dtype == np.float32
    assert np.isfinite(x).all()


@fast(200)
@given(SPECS, st.integers(0, 255), st.integers(1, 40), st.integers(1, 40), st.sampled_from([None, 1, 3, 4]))
def test_a_uniform_frame_gives_the_normalised_constant(spec, value, h, w, c):
    from edgekd.device.runtime.preprocess import Preprocessor

    frame = np.full((h, w) if c is None else (h, w, c), value, np.uint8)
    x = Preprocessor(spec)(frame)
    expected = (value / 255.0 - 0.4) / 0.2  # every channel of gray, BGR or BGRA of one value is that value
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------------------------------ vote, early exit


@st.composite
def probabilities(draw, min_exits=1):
    e, n, k = draw(st.integers(min_exits, 4)), draw(st.integers(1, 6)), draw(st.integers(2, 5))
    raw = draw(hnp.arrays(np.float64, (e, n, k), elements=st.floats(0.01, 10.0)))
    return raw / raw.sum(axis=2, keepdims=True)


@fast(300)
@given(probabilities(), st.randoms(use_true_random=False))
def test_vote_rules_invariants(probs, rnd):
    e, n, k = probs.shape
    for rule in ("soft", "hard"):
        scores = vote_scores(probs, rule)
        assert scores.shape == (n, k) and np.isfinite(scores).all()
        order = list(range(e))
        rnd.shuffle(order)
        np.testing.assert_allclose(vote_scores(probs[order], rule), scores)  # the order of exits does not matter
    np.testing.assert_allclose(vote_scores(probs, "weighted", np.ones(e)), vote_scores(probs, "soft"))
    j = rnd.randrange(e)
    np.testing.assert_allclose(vote_scores(probs, "weighted", np.eye(e)[j]), probs[j])
    counts = np.stack([np.bincount(probs[:, i].argmax(axis=1), minlength=k) for i in range(n)])  # (N, K)
    winner = vote_scores(probs, "hard").argmax(axis=1)
    assert (counts[np.arange(n), winner] == counts.max(axis=1)).all()  # the hard vote's winner has most votes
    if e == 1:
        for rule in ("soft", "hard"):
            assert (vote_scores(probs, rule).argmax(axis=1) == probs[0].argmax(axis=1)).all()


@fast(200)
@given(probabilities(), st.sampled_from(["neg", "nan", "inf", "zero", "short"]))
def test_bad_vote_weights_are_refused(probs, bad):
    e = probs.shape[0]
    weights = {"neg": -np.ones(e), "nan": np.full(e, np.nan), "inf": np.full(e, np.inf), "zero": np.zeros(e),
               "short": np.ones(e + 1)}[bad]
    with pytest.raises(ConfigError):
        vote_scores(probs, "weighted", weights)


@fast(200)
@given(probabilities(), st.data())
def test_fitted_vote_weights_lie_on_the_simplex(probs, data):
    labels = np.array(data.draw(st.lists(st.integers(0, probs.shape[2] - 1), min_size=probs.shape[1],
                                         max_size=probs.shape[1])))
    w = fit_vote_weights(probs, labels, iters=50)
    assert w.shape == (probs.shape[0],) and np.isfinite(w).all() and (w >= 0).all()
    assert abs(w.sum() - 1.0) < 1e-9


@fast(200)
@given(probabilities(min_exits=2), st.data())
def test_early_exit_and_threshold_fitting_invariants(probs, data):
    e, n, k = probs.shape
    labels = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    costs = np.cumsum(data.draw(st.lists(st.floats(0.1, 10.0), min_size=e, max_size=e)))
    first = simulate(probs, [0.0] * e, costs, labels)
    assert (first.exit_taken == 0).all()
    last = simulate(probs, [NEVER] * e, costs, labels)
    assert (last.exit_taken == e - 1).all() and abs(sum(last.exit_fraction) - 1.0) < 1e-9
    drop = data.draw(st.floats(0.0, 20.0))
    fit = fit_thresholds(probs, labels, costs, reference_accuracy=last.accuracy, target_drop=drop, passes=1)
    assert len(fit.thresholds) == e and fit.feasible
    assert fit.accuracy >= last.accuracy - drop - 1e-9  # never below the target
    assert fit.mean_cost <= last.mean_cost + 1e-9  # never costlier than answering at the last exit
    again = simulate(probs, fit.thresholds, costs, labels)
    assert abs(again.accuracy - fit.accuracy) < 1e-9 and abs(again.mean_cost - fit.mean_cost) < 1e-9


# --------------------------------------------------------------------------------------------- the readers

ARRAYS = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.int16, np.int64, np.float32, np.float64, np.bool_, np.complex64]),
    shape=hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5),
    elements=None)


@fast(250)
@given(ARRAYS, st.sampled_from(["images", "x_train", "x", "other"]), st.booleans())
def test_any_npz_gives_uint8_images_or_a_data_error(x, key, with_labels):
    from edgekd.core.labelled import load_images, read_npz

    spec = InputSpec(6, 6, 3, (0.5,) * 3, (0.25,) * 3, ("a", "b"))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "d.npz")
        arrays = {key: x}
        if with_labels:
            arrays[{"images": "labels", "x_train": "y_train", "x": "y"}.get(key, "labels")] = np.zeros(
                len(x) if x.ndim else 1, np.int64)
        np.savez(path, **arrays)
        try:
            images = load_images(path, spec)
            assert images.dtype == np.uint8 and images.shape[1:] == (6, 6, 3) and len(images) >= 1
        except DataError as exc:
            assert "\n" not in str(exc)
        try:
            images, labels = read_npz([path], ("images", "x_train", "x"), num_classes=2)
            assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[3] in (1, 3, 4)
            assert labels.shape == (len(images),)
        except DataError as exc:
            assert "\n" not in str(exc)


LINK_TARGETS = ["..", ".", "../..", "../{other}", "../{other}/0.png", "0.png", "/nonexistent", "sub"]


@fast(150)
@given(st.lists(st.tuples(st.sampled_from(["cat", "dog", "cat/sub", "dog/sub"]), st.sampled_from(LINK_TARGETS)),
                max_size=5),
       st.integers(1, 3))
def test_any_tree_of_links_lists_each_image_once_under_its_own_class(links, per_class):
    import cv2

    from edgekd.core.labelled import list_class_tree

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        for cls in ("cat", "dog"):
            (root / cls / "sub").mkdir(parents=True)
            for i in range(per_class):
                cv2.imwrite(str(root / cls / f"{i}.png"), np.full((4, 4, 3), i, np.uint8))
        for n, (where, target) in enumerate(links):
            other = "dog" if where.startswith("cat") else "cat"
            name = root / where / (f"link{n}.png" if target.endswith(".png") else f"link{n}")
            os.symlink(target.format(other=other), str(name))
        try:
            classes, files = list_class_tree(root)
        except DataError as exc:
            assert "\n" not in str(exc) and "two class folders" in str(exc)
            return
        real = [os.path.realpath(p) for p in files.paths]
        assert len(set(real)) == len(real)  # each real image once
        for path, label in zip(real, files.labels):
            assert Path(path).relative_to(root.resolve()).parts[0] == classes[label]
        assert len(files) == 2 * per_class
