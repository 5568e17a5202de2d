"""keras-opt-migrate's own file: an exact, versioned dump of an `OptimizerState`.

HDF5 with the root attribute `keras_opt_migrate_schema_version`; see `schema/v1.py` (and
`schema/v2.py`, the current version) for the header. `save_state` streams tensor by tensor
(a LazyTensor source is read one tensor at a time) into a temporary file that is renamed
into place only when complete.
"""

import json

import h5py
import numpy as np

from ..errors import FormatError, SchemaError, printable
from ..schema import LazyTensor, materialize
from ..schema import v2 as schema_current
from ..schema.validate import check_state, is_integer
from ..schema.upgrade import upgrade_header
from .base import Format, atomic_output, check_h5_storage, check_hdf5_metadata, is_hdf5

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
        check_hdf5_metadata(path)
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
                _check_header(header, path)
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
        # `path` is this file; where the state was first read from stays under native.first_read_from
        first = state.source.get("path")
        native = dict(state.source.get("native") or {})
        native["path"] = str(path)
        if first is not None and first != str(path):
            native.setdefault("first_read_from", first)
        state.source["native"] = native
        state.source["path"] = str(path)
        return check_state(state, path)

    def write(self, state, path, **options):
        state.validate()
        check_state(state, path)
        header, datasets = schema_current.encode_header(state)
        with atomic_output(path) as tmp:
            with _untimed_file(tmp) as f:
                f.attrs[VERSION_ATTR] = schema_current.VERSION
                f.attrs[HEADER_ATTR] = header
                h5py.h5g.create(f.id, b"t", gcpl=_untimed(h5py.h5p.GROUP_CREATE))
                for name, value in datasets:
                    f.create_dataset(name, data=materialize(value), track_times=False)
        return path


def _check_header(header, path):
    """The header's own structure, which `decode_header` trusts: typed fields, each tensor listed once.

    (Values a state could hold at all, such as shapes and counters, are `check_state`'s.)
    """
    def bad(field, problem):
        raise SchemaError("%s: invalid keras-opt-migrate header: %s: %s" % (printable(path), field, problem))

    for field in ("optimizer", "generation"):
        if not isinstance(header.get(field), str):
            bad(field, "expected a string, received %r" % type(header.get(field)).__name__)
    if not isinstance(header.get("config") or {}, dict):
        bad("config", "expected a JSON object, received %s" % type(header["config"]).__name__)
    if not isinstance(header.get("source") or {}, dict):
        bad("source", "expected a JSON object, received %s" % type(header["source"]).__name__)
    if not isinstance(header.get("warnings") or [], list):
        bad("warnings", "expected a list, received %s" % type(header["warnings"]).__name__)
    variables, tensors = header.get("variables"), header.get("tensors")
    for field, value in (("variables", variables), ("tensors", tensors)):
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            bad(field, "expected a list of objects")
    for i, v in enumerate(variables):
        if not isinstance(v.get("name"), str):
            bad("variables[%d].name" % i, "expected a string")
        shape = v.get("shape")
        if not isinstance(shape, list) or not all(is_integer(d) and d >= 0 for d in shape):
            bad("variables[%d].shape" % i, "expected a list of non-negative integers, received %r" % (shape,))
        try:
            np.dtype(v.get("dtype"))
        except TypeError:
            bad("variables[%d].dtype" % i, "not a dtype: %r" % (v.get("dtype"),))
    seen = set()
    for i, t in enumerate(tensors):
        kind = t.get("kind")
        if kind not in ("slot", "extra"):
            bad("tensors[%d].kind" % i, "expected 'slot' or 'extra', received %r" % (kind,))
        if not isinstance(t.get("name"), str) or not isinstance(t.get("dataset"), str):
            bad("tensors[%d]" % i, "name and dataset must be strings")
        if kind == "slot" and not isinstance(t.get("variable"), str):
            bad("tensors[%d].variable" % i, "expected a variable name, received %r" % (t.get("variable"),))
        key = (kind, t.get("variable") if kind == "slot" else None, t["name"])
        if key in seen:
            bad("tensors[%d]" % i, "%s %s%s is listed twice" % (kind, t["name"],
                                                                " of %s" % key[1] if kind == "slot" else ""))
        seen.add(key)


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
