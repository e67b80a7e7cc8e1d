"""Checkpoint digests: the content of the model's files, the encoder a head names included."""

from __future__ import annotations

import shutil

import torch

from alray.models import save_checkpoint
from alray.models.encoder_head import EncoderHead
from alray.models.encoders import ConvEncoder
from alray.models.files import checkpoint_digest


def test_a_digest_follows_the_content_of_the_checkpoint_and_of_the_encoder_it_names(tmp_path):
    torch.manual_seed(0)
    encoder = ConvEncoder(in_channels=1, image_size=8, width=2)
    save_checkpoint(encoder, tmp_path / "encoder.pt")
    head = EncoderHead(str(tmp_path / "encoder.pt"), encoder.embedding_dim, 3, image_size=8)
    save_checkpoint(head, tmp_path / "head.pt")
    digest = checkpoint_digest(tmp_path / "head.pt")
    shutil.copy(tmp_path / "head.pt", tmp_path / "copy.pt")
    assert checkpoint_digest(tmp_path / "copy.pt") == digest  # the content, not the path or time
    with torch.no_grad():
        next(encoder.parameters()).add_(1.0)
    save_checkpoint(encoder, tmp_path / "encoder.pt")  # the head file is unchanged, its encoder is not
    assert checkpoint_digest(tmp_path / "head.pt") != digest


def test_a_folder_digest_covers_every_file_and_its_name(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "weights.bin").write_bytes(b"\0" * 10)
    digest = checkpoint_digest(folder)
    (folder / "sub" / "weights.bin").write_bytes(b"\0" * 9 + b"\1")
    changed = checkpoint_digest(folder)
    assert changed != digest
    (folder / "sub" / "weights.bin").rename(folder / "sub" / "other.bin")
    assert checkpoint_digest(folder) not in (digest, changed)
