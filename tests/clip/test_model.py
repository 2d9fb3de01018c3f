"""The open_clip wrapper: tiny configs, token-level features, safetensors round trip."""
from __future__ import annotations

import pytest
import torch

from benchbench.clip.model import ClipModel, ModelSpec
from benchbench.errors import ConfigError


@pytest.fixture(scope="module")
def model():
    return ClipModel.create(ModelSpec(), seed=0)


def test_tiny_config_is_an_open_clip_model(model):
    import open_clip

    assert "bb-tiny-vit" in open_clip.list_models()
    assert model.image_size == 32


def test_token_features_share_the_global_path(model):
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    tokens = model.tokenize(["a red circle", "a large striped blue square on a dark background", "a star"])
    model.net.eval()
    with torch.no_grad():
        plain = model.encode(images, tokens)
        fine = model.encode(images, tokens, with_tokens=True)
    assert torch.allclose(plain.image, fine.image, atol=1e-5) and torch.allclose(plain.text, fine.text, atol=1e-5)
    assert fine.image_tokens.shape == (3, 16, 64)  # (32 / 8)^2 patches, embed dim 64
    assert fine.text_tokens.shape == (3, tokens.shape[1], 64)
    assert fine.text_mask.sum(dim=1).tolist() == [3, 9, 2]  # words only: no start, end or padding
    # the image embedding comes from the class token, as in real CLIP ViTs (docs/worlds.md,
    # C1), so it is not the mean of the patch tokens OTCCLIP's OT compares
    assert model.net.visual.pool_type == "tok"
    pooled = torch.nn.functional.normalize(fine.image_tokens.mean(dim=1), dim=-1)
    assert not torch.allclose(pooled, fine.image, atol=1e-2)


def test_save_load_round_trip(model, tmp_path):
    model.save(tmp_path)
    again = ClipModel.load(tmp_path)
    captions = ["a photo of a ring."]
    assert torch.equal(model.encode_texts(captions), again.encode_texts(captions))
    assert again.spec == model.spec


def test_same_seed_same_init():
    a, b = ClipModel.create(ModelSpec(), seed=5), ClipModel.create(ModelSpec(), seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.net.state_dict().values(), b.net.state_dict().values()))


def test_unknown_model_and_missing_checkpoint_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown open_clip model 'tiny-typo'"):
        ClipModel.create(ModelSpec(name="tiny-typo"), seed=0)
    with pytest.raises(ConfigError, match="never downloads"):
        ClipModel.create(ModelSpec(pretrained=str(tmp_path / "missing.pt")), seed=0)
