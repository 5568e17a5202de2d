"""keras-opt-migrate's own file: an exact, versioned dump of an `OptimizerState`.

HDF5 with the root attribute `keras_opt_migrate_schema_version`; see `schema/v1.py` (and
`schema/v2.py`, the current version) for the header. `save_state` streams tensor by tensor
(a LazyTensor source is read one tensor at a time) into a temporary file that is renamed
into place only when complete.
"""

import json

import h5py
import numpy as np

from ..errors import FormatError
from ..schema import LazyTensor, materialize
from ..schema import v2 as schema_current
from ..schema.upgrade import upgrade_header
from .base import Format, atomic_output, check_h5_storage, is_hdf5

VERSION_ATTR = "keras_opt_migrate_schema_version"
HEADER_ATTR = "header"


class NativeFormat(Format):
    name = "native"
    description = "keras-opt-migrate state file (HDF5, versioned schema)"
    can_write = True
    generations = ("v1", "v2", "experimental", "keras3", "tf1")
    extensions = (".kom.h5",)

    def validate(self, path):
        if not is_hdf5(path):
            return False
        try:
            with h5py.File(path, "r") as f:
                return VERSION_ATTR in f.attrs
        except OSError:
            return False

    def read(self, path, **options):
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise FormatError(path, "not a readable HDF5 file (%s)" % e) from e
        with f:
            try:
                header = json.loads(f.attrs[HEADER_ATTR])
            except (KeyError, ValueError, TypeError) as e:
                raise FormatError(path, "keras-opt-migrate state file without a valid header (%s)" % e) from e
            if not isinstance(header, dict):
                raise FormatError(path, "header is not a JSON object")
            try:
                header = upgrade_header(header, origin=str(path))
                datasets = {}
                for t in header["tensors"]:
                    name = t["dataset"]
                    node = f.get(name, getlink=True)
                    if not isinstance(node, h5py.HardLink):
                        raise FormatError(path, "tensor %s is missing or a link" % name)
                    ds = f[name]
                    if not isinstance(ds, h5py.Dataset):
                        raise FormatError(path, "tensor %s is not a dataset" % name)
                    check_h5_storage(ds, path)
                    datasets[name] = LazyTensor(ds.shape, ds.dtype, _loader(path, name), origin="%s:%s" % (path, name))
                state = schema_current.decode_header(header, datasets.__getitem__)
            except (KeyError, TypeError) as e:
                raise FormatError(path, "malformed keras-opt-migrate header (missing or bad field %s)" % e) from e
        state.source = dict(state.source)
        state.source.setdefault("native", {})["path"] = str(path)
        return state

    def write(self, state, path, **options):
        state.validate()
        header, datasets = schema_current.encode_header(state)
        with atomic_output(path) as tmp:
            with _untimed_file(tmp) as f:
                f.attrs[VERSION_ATTR] = schema_current.VERSION
                f.attrs[HEADER_ATTR] = header
                h5py.h5g.create(f.id, b"t", gcpl=_untimed(h5py.h5p.GROUP_CREATE))
                for name, value in datasets:
                    f.create_dataset(name, data=materialize(value), track_times=False)
        return path


def _untimed(kind):
    plist = h5py.h5p.create(kind)
    plist.set_obj_track_times(False)
    return plist


def _untimed_file(path):
    """A new HDF5 file whose root group records no timestamps, so equal states give equal bytes.

    (h5py's high-level File cannot switch off the root group's times; its creation property
    list can. Creation order is tracked so attributes and datasets keep a stable order.)
    """
    fcpl = _untimed(h5py.h5p.FILE_CREATE)
    fcpl.set_link_creation_order(h5py.h5p.CRT_ORDER_TRACKED | h5py.h5p.CRT_ORDER_INDEXED)
    fcpl.set_attr_creation_order(h5py.h5p.CRT_ORDER_TRACKED | h5py.h5p.CRT_ORDER_INDEXED)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_LATEST)
    return h5py.File(h5py.h5f.create(path.encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl))


def _loader(path, name):
    def load():
        try:
            with h5py.File(path, "r") as f:
                return np.asarray(f[name][()])
        except (OSError, KeyError, RuntimeError) as e:  # h5py: RuntimeError on corrupt metadata
            raise FormatError(path, "cannot read tensor %s (%s)" % (name, str(e).splitlines()[0] if str(e) else e)) \
                from e
    return load


FORMAT = NativeFormat()
