"""What an eval image shows and scores: depth, the rendered feature next to the teacher's map through one PCA basis,
and the held-out distillation error (feature MSE, cosine similarity on the teacher's foreground)."""

from __future__ import annotations

import numpy as np
import torch

from tests.model.test_losses import tiny_model

H, W, D = 16, 12, 4


def _teacher(seed: int = 0) -> torch.Tensor:
    """A teacher map with a background (zero) border, as teachers zero the cells outside the object."""
    teacher = torch.randn(H, W, D, generator=torch.Generator().manual_seed(seed))
    teacher[0], teacher[:, 0] = 0.0, 0.0
    return teacher


def _outputs(feature: torch.Tensor, accumulation: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "rgb": torch.full((H, W, 3), 0.5),
        "depth": torch.linspace(0.8, 1.8, H * W).view(H, W, 1),
        "accumulation": accumulation,
        "feature": feature,
    }


def _batch(teacher: torch.Tensor | None) -> dict:
    batch = {"image": torch.full((H, W, 3), 0.5)}
    if teacher is not None:
        batch["teacher"] = teacher
    return batch


def test_a_feature_equal_to_the_teacher_scores_perfectly_and_looks_the_same():
    model = tiny_model(feature_dim=D).eval()
    teacher = _teacher()
    foreground = (teacher != 0).any(-1, keepdim=True).float()
    metrics, images = model.get_image_metrics_and_images(_outputs(teacher.clone(), foreground), _batch(teacher))
    assert metrics["distill_mse"] == 0.0 and abs(metrics["distill_cosine"] - 1.0) < 1e-6
    pca = images["feature_pca"]
    assert pca.shape == (H, 2 * W, 3) and pca.min() >= 0 and pca.max() <= 1
    torch.testing.assert_close(pca[:, :W], pca[:, W:], rtol=0, atol=0)  # one basis for both halves
    assert (pca[0] == 0).all() and (pca[1:, 1:W].amax(-1) > 0).all()  # background black, foreground coloured
    assert images["depth"].shape == (H, W, 3)
    # White where nothing is hit (nerfstudio's depth colour map over the data's near..far).
    assert (images["depth"][foreground[..., 0] == 0] == 1).all()
    assert not (images["depth"][foreground[..., 0] == 1] == 1).all()


def test_distillation_metrics_equal_an_independent_computation():
    model = tiny_model(feature_dim=D).eval()
    teacher = _teacher()
    feature = torch.randn(H, W, D, generator=torch.Generator().manual_seed(1))
    metrics, images = model.get_image_metrics_and_images(_outputs(feature, torch.ones(H, W, 1)), _batch(teacher))
    t, f = teacher.numpy().astype(np.float64), feature.numpy().astype(np.float64)
    assert np.isclose(metrics["distill_mse"], ((f - t) ** 2).mean(), rtol=1e-6)
    fg = np.abs(t).sum(-1) > 0
    cos = (f[fg] * t[fg]).sum(-1) / (np.linalg.norm(f[fg], axis=-1) * np.linalg.norm(t[fg], axis=-1))
    assert fg.sum() == (H - 1) * (W - 1) and np.isclose(metrics["distill_cosine"], cos.mean(), rtol=1e-5)
    # The opposite feature: cosine -1, squared error of twice the teacher.
    metrics, _ = model.get_image_metrics_and_images(_outputs(-teacher, torch.ones(H, W, 1)), _batch(teacher))
    assert abs(metrics["distill_cosine"] + 1.0) < 1e-6
    assert np.isclose(metrics["distill_mse"], (4 * t**2).mean(), rtol=1e-6)
    assert not torch.equal(images["feature_pca"][:, :W], images["feature_pca"][:, W:])


def test_without_a_teacher_or_a_foreground_the_metrics_that_cannot_be_computed_are_left_out():
    model = tiny_model(feature_dim=D).eval()
    assert model.image_outputs(_batch(_teacher())) == {"rgb", "feature"}
    assert model.image_outputs(_batch(None)) == {"rgb"}
    metrics, images = model.get_image_metrics_and_images(_outputs(_teacher(), torch.ones(H, W, 1)), _batch(None))
    assert set(metrics) == {"psnr", "ssim"} | ({"lpips"} & set(metrics)) and "feature_pca" not in images
    empty = torch.zeros(H, W, D)
    metrics, images = model.get_image_metrics_and_images(_outputs(_teacher(), torch.ones(H, W, 1)), _batch(empty))
    assert "distill_cosine" not in metrics and np.isclose(metrics["distill_mse"], (_teacher() ** 2).mean().item())
    assert tiny_model(feature_dim=0, lambda_distill=0.0).image_outputs(_batch(_teacher())) == {"rgb"}
