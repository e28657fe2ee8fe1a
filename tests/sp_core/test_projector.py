import itertools

import pytest
import torch

from sp_core import LlavaSPConfig, LlavaSPForConditionalGeneration, LlavaSPProjector
from sp_core.convert import projector_from_official
from sp_core.large_kernel_conv import LargeKernelConv2d
from sp_core.tiny import tiny_config
from tests.sp_core.official_reference import (
    official_projector_forward,
    official_state_dict,
)

VARIANTS = ("cropping", "pooling", "sliding_window")
TOKEN_COUNTS = (1, 3, 6, 12)
DFI_SETTINGS = (None, 16, 12, 8, 4)


def _tiny_inputs(config, tokenizer, images: int = 1):
    placeholders = [config.image_token_id] * config.image_tokens_per_image
    text = tokenizer("What colour is the shape?").input_ids
    input_ids = torch.tensor([text[:1] + placeholders * images + text[1:]])
    torch.manual_seed(1)
    return input_ids, torch.randn(images, 3, 336, 336)


@pytest.mark.parametrize("extractor", ["conv", "transformer"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_token_count_and_dfi_kernel_trains_on_the_tiny_model(tiny_tokenizer, variant, extractor):
    # The paper's setting (6 tokens, DFI kernel 16) goes through the whole model: vision tower -> projector -> LLM
    # -> loss. The other token counts and DFI kernels change only the projector, so they go through it alone (the
    # rest of the model is the same code); that keeps 20 combinations per variant fast.
    for tokens, kernel in itertools.product(TOKEN_COUNTS, DFI_SETTINGS):
        config = tiny_config(tiny_tokenizer, sp_variant=variant, sp_num_tokens=tokens, sp_extractor=extractor,
                             sp_dfi=kernel is not None, sp_dfi_kernel=kernel or 16)
        torch.manual_seed(0)
        if (tokens, kernel) == (6, 16):
            model = LlavaSPForConditionalGeneration(config)
            input_ids, pixels = _tiny_inputs(config, tiny_tokenizer)
            image_tokens = model.image_features(pixels)
            out = model(input_ids=input_ids, pixel_values=pixels, labels=input_ids)
            assert torch.isfinite(out.loss)
            out.loss.backward()
            projector = model.projector
            assert all(p.grad is None for p in model.model.vision_tower.parameters())
        else:
            projector = LlavaSPProjector(config)
            image_tokens = projector(torch.randn(1, 576, config.vision_config.hidden_size))
            image_tokens.square().mean().backward()
        assert image_tokens.shape == (1, tokens + 576, 64), (variant, tokens, kernel)
        spatial = {n: p for n, p in projector.named_parameters() if not n.startswith("linear_")}
        assert spatial and all(p.grad is not None for p in spatial.values()), (variant, tokens, kernel)
        # Every view reaches the loss. (Inside the transformer a single query's self-attention weight is
        # constantly 1, so its q/k projections get zero gradient by construction: check the view readers.)
        readers = {n: p for n, p in spatial.items() if n.startswith(("spatial_extractor.convs",
                                                                      "spatial_extractor.input_projection",
                                                                      "detail_integrator", "spatial_projector"))}
        assert readers and all(p.grad.abs().sum() > 0 for p in readers.values()), \
            (variant, tokens, kernel, [n for n, p in readers.items() if p.grad.abs().sum() == 0])


def test_spatial_tokens_come_first(tiny_tokenizer):
    """The patch tokens of an SP model equal plain LLaVA's patch MLP output, after the n spatial tokens."""
    config = tiny_config(tiny_tokenizer, sp_variant="pooling")
    torch.manual_seed(0)
    projector = LlavaSPProjector(config)
    features = torch.randn(2, 576, 32)
    out = projector.project(features)
    patch_only = projector.linear_2(projector.act(projector.linear_1(features)))
    torch.testing.assert_close(out.image_tokens[:, 6:], patch_only)
    assert out.detail_attention.shape == (2, 6, 25)
    torch.testing.assert_close(out.detail_attention.sum(-1), torch.ones(2, 6))


def test_a_spatial_token_sees_only_its_crop(tiny_tokenizer):
    """Cropping: changing a corner patch moves only the tokens whose crops contain it (the 24x24 one)."""
    config = tiny_config(tiny_tokenizer, sp_variant="cropping", sp_dfi=False)
    projector = LlavaSPProjector(config).eval()
    features = torch.randn(1, 576, 32)
    changed = features.clone()
    changed[0, 0] += 10.0  # patch (row 0, col 0): only the full-grid crop holds it
    delta = (projector(changed) - projector(features)).abs().amax(-1)[0]
    assert torch.all(delta[:5] == 0) and delta[5] > 0
    centre = features.clone()
    centre[0, 11 * 24 + 11] += 10.0  # patch (11, 11) lies in every centred crop
    assert torch.all((projector(centre) - projector(features)).abs().amax(-1)[0, :6] > 0)


def test_wrong_number_of_patch_features_is_a_clear_error(tiny_tokenizer):
    projector = LlavaSPProjector(tiny_config(tiny_tokenizer))
    with pytest.raises(ValueError, match="expects 576 patch features per image .* got 577"):
        projector(torch.randn(1, 577, 32))


def _paper_config(variant: str, dfi: bool, bias: bool) -> LlavaSPConfig:
    return LlavaSPConfig(sp_variant=variant, sp_dfi=dfi, sp_dfi_kernel=16, sp_projector_bias=bias)


def _official_parameter_count(dfi: bool, bias: bool) -> int:
    """From the official code's shapes: mm_projector, six SFE convs 1024->512 (k = 4..24), optional conv_CM k16 + three
    LayerNorm+Linear(512), conv_linear 512 (or 1024 with DFI) -> 4096."""
    mm_projector = (1024 * 4096 + 4096) + (4096 * 4096 + 4096)
    sfe = sum(512 * 1024 * k * k for k in (4, 8, 12, 16, 20, 24))
    dfi_params = (512 * 1024 * 16 * 16 + 3 * (2 * 512 + 512 * 512 + 512)) if dfi else 0
    conv_linear = 4096 * (1024 if dfi else 512) + (4096 if bias else 0)
    return mm_projector + sfe + dfi_params + conv_linear


@pytest.mark.parametrize("variant, dfi, bias", [("cropping", True, True), ("pooling", True, False),
                                                ("cropping", False, False), ("pooling", False, False)])
def test_parameter_counts_of_the_official_variants_at_paper_width(variant, dfi, bias):
    with torch.device("meta"):
        projector = LlavaSPProjector(_paper_config(variant, dfi, bias))
    ours = sum(p.numel() for p in projector.parameters())
    assert ours == _official_parameter_count(dfi, bias)
    assert ours == {(True, True): 923_550_208, (True, False): 923_546_112, (False, False): 786_440_192}[(dfi, bias)]


def _relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).norm() / reference.norm())


@pytest.mark.parametrize("variant, dfi, bias", [("cropping", True, True), ("pooling", True, False),
                                                ("cropping", False, False), ("pooling", False, False)])
def test_official_variants_match_the_reference_forward_at_paper_width(variant, dfi, bias):
    state = official_state_dict(variant, dfi=dfi, spatial_bias=bias, seed=3)
    projector = projector_from_official(state)
    torch.manual_seed(4)
    features = torch.randn(2, 576, 1024)
    with torch.no_grad():
        ours = projector(features)
        reference = official_projector_forward({k.removeprefix("model."): v for k, v in state.items()}, features,
                                               variant, dfi=dfi)
    assert ours.shape == (2, 582, 4096)
    assert _relative_error(ours, reference) <= 1e-5
    assert _relative_error(ours[:, :6], reference[:, :6]) <= 1e-5  # the spatial tokens alone, not drowned by patches


@pytest.mark.parametrize("variant, tokens", [("cropping", 3), ("cropping", 12), ("cropping", 1), ("pooling", 3)])
def test_ablation_token_counts_match_the_reference_forward(variant, tokens):
    state = official_state_dict(variant, num_tokens=tokens, vision_width=64, spatial_width=32, text_width=96, seed=5)
    projector = projector_from_official(state)
    features = torch.randn(3, 576, 64)
    with torch.no_grad():
        reference = official_projector_forward({k.removeprefix("model."): v for k, v in state.items()}, features,
                                               variant, num_tokens=tokens)
        assert _relative_error(projector(features), reference) <= 1e-5


@pytest.mark.parametrize("bias", [False, True])
def test_the_large_kernel_conv_equals_nn_conv2d_and_falls_back_where_it_does_not_apply(bias, monkeypatch):
    def pair(**options):
        ours, reference = LargeKernelConv2d(8, 5, bias=bias, **options), torch.nn.Conv2d(8, 5, bias=bias, **options)
        reference.load_state_dict(ours.state_dict())
        return ours, reference

    torch.manual_seed(7)
    grid = torch.randn(2, 8, 12, 12, requires_grad=True)
    whole, reference = pair(kernel_size=(4, 6))
    view = grid[:, :, 2:6, 3:9]  # the SFE's case: a non-contiguous crop exactly the kernel's size
    assert whole(view).shape == (2, 5, 1, 1)
    assert torch.allclose(whole(view), reference(view), atol=1e-6)
    assert torch.allclose(whole(grid), reference(grid), atol=1e-6)  # a larger input slides as a conv does

    strided, reference = pair(kernel_size=5, stride=2)  # the DFI's case
    assert strided(grid).shape == reference(grid).shape == (2, 5, 4, 4)
    assert torch.allclose(strided(grid), reference(grid), atol=1e-6)
    ours_grads = torch.autograd.grad(strided(grid).square().sum(), (strided.weight, grid))
    reference_grads = torch.autograd.grad(reference(grid).square().sum(), (reference.weight, grid))
    for ours_grad, reference_grad in zip(ours_grads, reference_grads):
        assert torch.allclose(ours_grad, reference_grad, rtol=1e-5, atol=1e-5)

    padded, reference = pair(kernel_size=3, padding=1)  # not a projector case: the plain conv path
    assert padded(grid).shape == (2, 5, 12, 12) and torch.allclose(padded(grid), reference(grid), atol=1e-6)
    with pytest.raises(RuntimeError, match="Kernel size can't be greater than actual input size"):
        whole(grid[:, :, :3, :3])

    calls = []
    plain_forward = torch.nn.Conv2d.forward
    monkeypatch.setattr(torch.nn.Conv2d, "forward", lambda module, x: calls.append(x.device.type) or
                        plain_forward(module, x))
    whole(view)
    assert calls == []  # on CPU: unfold + matmul
    whole.to("meta")(view.detach().to("meta"))
    assert calls == ["meta"]  # any other device: nn.Conv2d's own forward
