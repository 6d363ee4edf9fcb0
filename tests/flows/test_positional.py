"""Sin-cos positional codes for 2D/3D maps."""
import pytest
import torch

from gnsm.flows import positional_encoding_2d, positional_encoding_3d, positions_as_rows, sincos_positional_encoding


def test_shapes_range_and_distinct_positions():
    code2 = positional_encoding_2d(8, 5, 7)
    assert code2.shape == (8, 5, 7)
    code3 = positional_encoding_3d(12, 3, 4, 5)
    assert code3.shape == (12, 3, 4, 5)
    for code in (code2, code3):
        assert code.abs().max() <= 1.0
        rows = positions_as_rows(code)
        assert torch.cdist(rows, rows).add(torch.eye(rows.shape[0])).min() > 1e-3  # every position distinct


def test_axis_layout():
    code = positional_encoding_2d(8, 4, 6)
    # The first half of the channels depends on the row only, the second half on the column only.
    assert torch.equal(code[:4, :, 0:1].expand(4, 4, 6), code[:4])
    assert torch.equal(code[4:, 0:1, :].expand(4, 4, 6), code[4:])
    assert torch.allclose(code[0, :, 0], torch.sin(torch.arange(4.0)))
    assert torch.allclose(code[1, :, 0], torch.cos(torch.arange(4.0)))


def test_rows_follow_feature_map_order():
    code = sincos_positional_encoding(4, (3, 5))
    rows = positions_as_rows(code)
    assert torch.equal(rows[2 * 5 + 4], code[:, 2, 4])


def test_bad_channels():
    with pytest.raises(ValueError, match="channels"):
        positional_encoding_2d(6, 4, 4)
    with pytest.raises(ValueError, match="channels"):
        positional_encoding_3d(8, 2, 2, 2)
    with pytest.raises(ValueError, match="shape"):
        sincos_positional_encoding(4, (0, 3))
