"""Works around oneDNN (torch 2.13's CPU convolution) re-packing a convolution's weight on every call.

The SFE's per-view kernels are as large as their views and the DFI's is 16x16, so they slide over few positions
and the re-packing copy costs more than the product itself (docs/benchmarks.md). On CPU, LargeKernelConv2d computes
the same convolution as unfold + one matmul, reading the weight in place; on any other device it is nn.Conv2d.
Parameters and state-dict names are nn.Conv2d's, and the module is still called, so hooks on it (ZeRO-3 gathering
its weight) run as for any conv. tests/sp_core/test_projector.py checks it against nn.Conv2d, gradients included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LargeKernelConv2d(nn.Conv2d):
    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        (kernel_h, kernel_w), (stride_h, stride_w) = self.kernel_size, self.stride
        out_h, out_w = (grid.shape[-2] - kernel_h) // stride_h + 1, (grid.shape[-1] - kernel_w) // stride_w + 1
        # Padding, dilation and groups are not the projector's: those take nn.Conv2d's own path.
        plain = self.padding != (0, 0) or self.dilation != (1, 1) or self.groups != 1
        if grid.device.type != "cpu" or plain or grid.dim() != 4 or out_h < 1 or out_w < 1:
            return super().forward(grid)  # nn.Conv2d, including its error for an input smaller than the kernel
        patches = F.unfold(grid, self.kernel_size, stride=self.stride).transpose(1, 2)  # (B, L, C_in * kh * kw)
        out = F.linear(patches, self.weight.flatten(1), self.bias)  # (B, L, C_out), L = out_h * out_w
        return out.transpose(1, 2).unflatten(2, (out_h, out_w))
