"""The simulator's cold start on self-supervised embeddings: for a seed, the pool's images go
through ``alray embed``'s code path (:func:`alray.stages.embed.train_or_reuse`: Ray Train, the
pool streamed by Ray Data) and the trained encoder embeds them for the seed set's strategies.

Each seed's pool is written once as PNGs to a folder named by the hash of its ids and pixels,
so the encoder's key (the pool and the training settings) names the same encoder on every rerun
and a second simulation of the same config reuses it instead of training again.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from alray.config import OutputConfig, PoolConfig
from alray.progress import Progress

if TYPE_CHECKING:
    from alray.simulate import Dataset
    from alray.simulate_config import SimulateConfig

POOL_FILE = "part-00000.parquet"


@dataclass(frozen=True)
class SeedEncoder:
    """The encoder of one seed's pool and the pool's embeddings (N, D) in the dataset's row order."""

    seed: int
    path: str
    reused: bool
    epochs: int
    final_loss: float | None
    train_s: float
    embeddings: np.ndarray


def pool_images(data: Dataset) -> np.ndarray:
    """The pool's images (N, 8, 8) uint8: digits' features are its 8x8 grey levels scaled to 0..1."""
    side = math.isqrt(data.x_pool.shape[1])
    if data.name != "digits" or side * side != data.x_pool.shape[1]:
        raise ValueError(f"{data.name}: self-supervised embeddings need an image dataset")
    return np.clip(np.rint(data.x_pool.reshape(-1, side, side) * 255.0), 0, 255).astype(np.uint8)


def write_pool(data: Dataset, root: Path) -> Path:
    """The pool as a parquet folder of PNGs (``id``, ``image``) under ``root``, named by its content; written once."""
    from alray.demo import png_bytes

    images = pool_images(data)
    digest = hashlib.sha256()
    digest.update("\n".join(data.ids).encode())
    digest.update(images.tobytes())
    folder = root / "pools" / f"{data.name}-{digest.hexdigest()[:16]}"
    if not (folder / POOL_FILE).exists():
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{POOL_FILE}.partial"
        pq.write_table(pa.table({"id": pa.array(data.ids, pa.string()),
                                 "image": pa.array([png_bytes(image) for image in images], pa.binary())}),
                       str(partial))
        os.replace(partial, folder / POOL_FILE)  # a killed write leaves no half pool that looks whole
    return folder


def decoded_pool(folder: Path, ids: list[str], *, channels: int, size: int) -> np.ndarray:
    """Images (N, C, S, S) of the rows ``ids`` of a pool folder, decoded as training and scoring decode them."""
    from alray.payloads import decode_image

    table = pq.read_table(str(folder / POOL_FILE), columns=["id", "image"])
    by_id = dict(zip(table.column("id").to_pylist(), table.column("image").to_pylist(), strict=True))
    return np.stack([decode_image(by_id[i], channels=channels, size=size).pixels for i in ids])


def seed_encoder(config: SimulateConfig, data: Dataset, seed: int, *, output: Path,
                 progress: Progress | None = None) -> SeedEncoder:
    """Train (or reuse) the self-supervised encoder of seed ``seed``'s pool and embed the pool with it."""
    from alray.models import load_model
    from alray.models.encoders import embed_images
    from alray.stages.embed import train_or_reuse

    progress = progress or Progress()
    cache = Path(config.cache) if config.cache else output / "ssl-cache"
    pool = write_pool(data, cache)
    embed = config.embed.model_copy(update={"seed": seed, "output": str(cache / "encoders")})
    result = train_or_reuse(PoolConfig(path=str(pool)), embed, OutputConfig(path=str(cache)), config.ray,
                            progress=progress)
    progress.say(f"simulate: seed {seed}: encoder {result.path} " + (
        "reused" if result.reused else f"trained, {result.epochs} epochs in {result.wall_s:.1f}s"))
    images = decoded_pool(pool, data.ids, channels=embed.channels, size=embed.image_size)
    embeddings = embed_images(load_model(result.path), images)
    return SeedEncoder(seed=seed, path=result.path, reused=result.reused, epochs=result.epochs,
                       final_loss=result.loss_curve[-1] if result.loss_curve else None,
                       train_s=round(result.wall_s, 1), embeddings=embeddings)
