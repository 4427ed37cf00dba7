"""pytorch-fid's Inception-v3 weights (.pth) -> the .npz that `--config.eval.fid=inception_v3` reads.

  python scripts/inception_npz.py pt_inception-2015-12-05-6726825d.pth inception_fid.npz
  python -m vqjax.main ... --config.eval.fid=inception_v3 --config.eval.inception_weights=inception_fid.npz

The .pth is the `fid_weights` release of github.com/mseitzer/pytorch-fid (what
`pytorch_fid.inception.fid_inception_v3()` downloads); fetch it by hand where
there is a network. With PyTorch installed it is read by `torch.load`; without,
by a reader of torch's two file formats (the legacy one and the zip archive,
float32 tensors only) that runs no code from the file. The .npz keeps the
state_dict names and PyTorch layouts (vqjax/perceptual/inception.py); the
script checks every weight the network needs is there.
"""

from __future__ import annotations

import argparse
import collections
import os
import pickle
import struct
import sys
import zipfile

import numpy as np

_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
           "LongStorage": np.int64, "IntStorage": np.int32}


class _Storage:
  def __init__(self, dtype, key):
    self.dtype, self.key, self.data = dtype, key, None


def _rebuild_tensor(storage, offset, size, stride, *unused):
  return ("tensor", storage, offset, tuple(size), tuple(stride))


class _TorchUnpickler(pickle.Unpickler):
  """torch's pickled state_dict, with tensors as placeholders (no torch, no code)."""

  def __init__(self, f):
    super().__init__(f)
    self.storages = {}

  def find_class(self, module, name):
    if module == "torch" and name in _DTYPES:
      return name
    if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
      return _rebuild_tensor
    if module == "collections" and name == "OrderedDict":
      return collections.OrderedDict
    raise pickle.UnpicklingError(f"{module}.{name}: not a plain state_dict of tensors")

  def persistent_load(self, pid):
    _, storage_type, key = pid[:3]
    name = storage_type if isinstance(storage_type, str) else str(storage_type)
    return self.storages.setdefault(str(key), _Storage(_DTYPES[name], str(key)))


def _tensors(obj) -> dict:
  out = {}
  for name, (_, storage, offset, size, stride) in obj.items():
    item = storage.data.itemsize
    out[name] = np.lib.stride_tricks.as_strided(
        storage.data[offset:], size, [s * item for s in stride]).copy()
  return out


def read_pth_without_torch(path: str) -> dict:
  """{name: np.ndarray} of a torch state_dict file (zip or legacy format)."""
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as z:
      pkl = next(n for n in z.namelist() if n.endswith("data.pkl"))
      prefix = pkl[:-len("data.pkl")]
      with z.open(pkl) as f:
        u = _TorchUnpickler(f)
        obj = u.load()
      for key, s in u.storages.items():
        s.data = np.frombuffer(z.read(f"{prefix}data/{key}"), s.dtype)
    return _tensors(obj)
  with open(path, "rb") as f:
    for _ in range(3):  # magic number, protocol version, system info
      pickle.load(f)  # noqa: S301 (plain ints and a dict of ints)
    u = _TorchUnpickler(f)
    obj = u.load()
    for key in pickle.load(f):  # the storages' keys, in the order of their data
      s = u.storages[str(key)]
      (n,) = struct.unpack("<q", f.read(8))
      s.data = np.frombuffer(f.read(n * np.dtype(s.dtype).itemsize), s.dtype)
  return _tensors(obj)


def read_pth(path: str) -> dict:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    print("reading without PyTorch")
    return read_pth_without_torch(path)
  state = torch.load(path, map_location="cpu", weights_only=True)
  return {k: v.numpy() for k, v in state.items()}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("pth", help="pt_inception-2015-12-05-6726825d.pth (pytorch-fid)")
  parser.add_argument("npz", help="output .npz for --config.eval.inception_weights")
  args = parser.parse_args(argv)
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from vqjax.perceptual import inception  # pylint: disable=import-outside-toplevel
  arrays = {k: v for k, v in read_pth(args.pth).items()
            if not k.endswith("num_batches_tracked")}
  np.savez(args.npz, **arrays)
  inception.load_params(args.npz)  # every weight present, right shapes
  print(f"wrote {args.npz}: {len(arrays)} arrays")
  return 0


if __name__ == "__main__":
  sys.exit(main())
