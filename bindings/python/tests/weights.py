"""Writes safetensors files for the learned and indexer selectors' tests:
8-byte little-endian header length, a JSON header, then the raw data."""
import json
import struct

import numpy as np


def write_safetensors(path, tensors):
    """tensors: name -> float32 numpy array (stored as F32, row-major)."""
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
