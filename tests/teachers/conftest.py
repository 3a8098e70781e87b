"""Fixtures of the teacher tests (the builders live in teacher_helpers.py)."""

from tests.teachers.teacher_helpers import tiny_dinov2_folder, tiny_sd_folder, tiny_vit_file  # noqa: F401
