import numpy as np
from PIL import Image

from humantune.report.grid import image_grid


def test_image_grid_places_each_cell_and_resizes_to_the_first():
    red = Image.new("RGB", (4, 3), (255, 0, 0))
    blue = Image.new("RGB", (8, 6), (0, 0, 255))
    grid = np.asarray(image_grid([[red, blue], [blue]], gap=2, background=(255, 255, 255)))
    assert grid.shape == (3 * 2 + 2, 4 * 2 + 2, 3)
    assert tuple(grid[0, 0]) == (255, 0, 0)
    assert tuple(grid[0, 6]) == (0, 0, 255)          # second column starts at 4 + 2
    assert tuple(grid[0, 4]) == (255, 255, 255)      # the gap
    assert tuple(grid[5, 0]) == (0, 0, 255)          # second row starts at 3 + 2
    assert tuple(grid[5, 6]) == (255, 255, 255)      # an empty cell keeps the background
