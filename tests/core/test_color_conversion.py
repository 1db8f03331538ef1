import numpy as np

from edgekd.core.preprocess import to_spec_channels


def test_bgra_and_bgr_frames_become_rgb():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200  # red
    bgr = rgb[..., ::-1].copy()
    bgra = np.concatenate([bgr, np.full((2, 2, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(to_spec_channels(bgr, 3, bgr=True), rgb)
    np.testing.assert_array_equal(to_spec_channels(bgra, 3, bgr=True), rgb)
    rgba = np.concatenate([rgb, np.full((2, 2, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(to_spec_channels(rgba, 3), rgb)
    gray_from_bgra = to_spec_channels(bgra, 1, bgr=True)
    gray_from_rgb = to_spec_channels(rgb, 1)
    np.testing.assert_array_equal(gray_from_bgra, gray_from_rgb)
