"""Datasets (embedded mnist5k, MNIST, Fashion-MNIST, a user's dataset file) and the paper's
online streams."""

from __future__ import annotations

from lrt.data.augment import elastic_deform, expand_elastic
from lrt.data.datasets import DATASETS, Dataset, load_dataset, stratified_split
from lrt.data.streams import STREAMS, Stream, make_stream, segment_params, stream_blocks

__all__ = [
    "DATASETS",
    "STREAMS",
    "Dataset",
    "Stream",
    "elastic_deform",
    "expand_elastic",
    "load_dataset",
    "make_stream",
    "segment_params",
    "stratified_split",
    "stream_blocks",
]
