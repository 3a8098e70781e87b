"""Per-object records that the dataparsers hand to the category datamanager.

A category-level split is a flat list of cameras (every view of every object, object after object)
plus one :class:`ObjectRecord` per object saying which slice of that list is its own and where its
files are. ``DataparserOutputs.metadata`` is deep-copied by nerfstudio, so records hold plain
Python values (strings, ints, tuples), never arrays or open files.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectRecord:
    """One object of a split: its views' slice of the split's cameras and its files."""

    obj_id: str
    """Object id (ShapeNet model id, SRN folder name)."""
    first_view: int
    """Index of the object's first camera in the split's ``Cameras`` (views are contiguous)."""
    num_views: int
    """Number of views (cameras and images) of the object."""
    image_paths: tuple[str, ...]
    """Image file of each view, in view order."""
    teacher_path: str | None = None
    """Teacher feature file ``(NV, D, h, w)``; None when absent or no teacher is used."""
    kp_2d_path: str | None = None
    """2D keypoint annotation file; None when absent."""
    kp_3d_path: str | None = None
    """3D keypoint annotation file; None when absent."""
    part_2d_path: str | None = None
    """2D part label file; None when absent."""
    part_3d_path: str | None = None
    """3D part label file; None when absent."""
    mesh_path: str | None = None
    """Mesh with per-face part labels (generated data only); None when absent."""

    def camera_index(self, view: int) -> int:
        """Index in the split's ``Cameras`` of this object's view ``view``."""
        if not 0 <= view < self.num_views:
            raise IndexError(f"object {self.obj_id} has {self.num_views} views, asked for view {view}")
        return self.first_view + view

    @property
    def camera_slice(self) -> slice:
        """Slice of the split's cameras (and image filenames) holding this object's views."""
        return slice(self.first_view, self.first_view + self.num_views)
