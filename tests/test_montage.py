"""The one montage writer: what each panel shows (crop, RAS, center, box) and the PNG it writes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tumorgen.synthesis.montage import Panel, gray_tops, panel_view, write_montage


def test_a_cropped_panel_shows_its_box_grown_by_half_its_extent_and_centers_on_the_tumor():
    image = np.arange(20 ** 3, dtype=np.float32).reshape(20, 20, 20)
    mask = np.zeros_like(image, dtype=np.uint8)
    mask[7, 8, 9] = 1
    view = panel_view(Panel(image=image, mask=mask, box=(5, 6, 7, 10, 12, 13)), crop=0.5)
    # extent (5, 6, 6) -> grow ceil(0.5 x extent) = 3 a side: voxels 2..12, 3..14, 4..15
    assert view.image.shape == (11, 12, 12)
    assert view.image[0, 0, 0] == image[2, 3, 4]
    assert [v.tolist() for v in view.box] == [[3, 3, 3], [8, 9, 9]]
    assert view.center.tolist() == [5, 5, 5]
    assert view.spacing.tolist() == [1.0, 1.0, 1.0]


def test_a_panel_with_an_affine_is_shown_in_ras_with_its_spacing_and_an_empty_mask_centers_on_the_box():
    image = np.zeros((6, 6, 6), np.float32)
    image[0, 0, 0] = 5.0  # voxel x = 0 lies furthest right (x runs right to left): RAS puts it last
    affine = np.diag([-2.0, 1.0, 3.0, 1.0])
    view = panel_view(Panel(image=image, mask=np.zeros_like(image), box=(1, 0, 0, 3, 2, 2), affine=affine))
    assert view.image[5, 0, 0] == 5.0 and view.image[0, 0, 0] == 0.0
    assert [v.tolist() for v in view.box] == [[3, 0, 0], [5, 2, 2]]  # x 1..2 flipped to 3..4
    assert view.center.tolist() == [3, 0, 0]
    assert view.spacing.tolist() == [2.0, 1.0, 3.0]


def test_the_montage_has_three_plane_columns_per_group_and_refuses_a_ragged_grid(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((12, 12, 12)).astype(np.float32)
    mask = np.zeros((12, 12, 12), np.uint8)
    mask[4:8, 4:8, 4:8] = 1
    panel = Panel(image=image, mask=mask, box=(3, 3, 3, 9, 9, 9))
    one = write_montage(tmp_path / "one.png", [[panel], [panel]], row_labels=["a", "b"], panel_inches=1.0, dpi=50)
    two = write_montage(tmp_path / "two.png", [[panel, panel], [panel, panel]], row_labels=["a", "b"],
                        group_titles=["c1", "c2"], scale="column", crop=0.5, panel_inches=1.0, dpi=50)
    width_one, height_one = Image.open(one).size
    width_two, height_two = Image.open(two).size
    assert height_one == height_two and width_two > 1.8 * (width_one - 40)  # the colorbar is not doubled
    assert not list(tmp_path.glob("*.tmp*"))
    with pytest.raises(ValueError, match="one label per row"):
        write_montage(tmp_path / "bad.png", [[panel], [panel, panel]], row_labels=["a", "b"])
    with pytest.raises(ValueError, match="box"):
        write_montage(tmp_path / "bad.png", [[Panel(image=image, mask=mask)]], row_labels=["a"], crop=0.5)
    with pytest.raises(ValueError, match="scale"):
        write_montage(tmp_path / "bad.png", [[panel]], row_labels=["a"], scale="loud")
    assert not (tmp_path / "bad.png").exists()


def test_gray_tops_per_column_group_per_row_or_shared():
    cool, hot = (np.full((4, 4, 4), v, np.float32) for v in (1.0, 8.0))
    mask = np.zeros((4, 4, 4), np.uint8)
    views = [[panel_view(Panel(image=cool, mask=mask)), panel_view(Panel(image=hot, mask=mask))],
             [panel_view(Panel(image=hot, mask=mask)), panel_view(Panel(image=cool, mask=mask))]]
    assert gray_tops(views, "column") == [[1.0, 8.0], [1.0, 8.0]]
    assert gray_tops(views, "row") == [[1.0, 1.0], [8.0, 8.0]]
    assert gray_tops(views, "shared") == [[8.0, 8.0], [8.0, 8.0]]
    assert gray_tops(views, 3) == [[3.0, 3.0], [3.0, 3.0]]
    assert gray_tops(views, [2.0, 5.0]) == [[2.0, 2.0], [5.0, 5.0]]
    with pytest.raises(ValueError, match="one per row"):
        gray_tops(views, [2.0])


def test_each_case_is_shown_on_its_real_tumors_scale():
    from tumorgen.demo.montage import case_tops

    mask = np.zeros((4, 4, 4), np.uint8)
    mask[1:3, 1:3, 1:3] = 1
    real = np.full((4, 4, 4), 1.0, np.float32)
    real[1, 1, 1] = 6.0  # the real tumor's SUVmax
    hot_sample = np.full((4, 4, 4), 24.0, np.float32)
    rows = [{"case": "a", "image": real, "mask": mask}, {"case": "a", "image": hot_sample, "mask": mask},
            {"case": "b", "image": np.arange(64, dtype=np.float32).reshape(4, 4, 4), "mask": np.zeros_like(mask)}]
    tops = case_tops(rows)
    assert tops[:2] == [6.0, 6.0]  # the hot sample saturates on case a's scale, it does not set it
    assert tops[2] == pytest.approx(np.percentile(np.arange(64), 99.5))
