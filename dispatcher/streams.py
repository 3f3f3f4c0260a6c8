"""What a stream of a data file holds: its branches (or RNTuple fields), their kinds, and what cannot be served.

A *stream* is a TTree (also a TNtuple or TNtupleD) or an RNTuple, named by its
path in the file (``dir/name`` inside a TDirectory). Its *branches* are the
fields ``arrays(library="ak")`` gives: for a TTree every branch uproot reads
that is not a mere group of sub-branches (the members of a split object are
branches of their own, named as uproot names them), for an RNTuple every
top-level field.

Each branch has a *kind*, which says what a selection may do with it:

- ``"flat"``: one number (or boolean) per entry;
- ``"jagged"``: a variable-length list of numbers;
- ``"fixed"``: a fixed-size array of numbers (``float[3]``, ``[N][M]``);
- ``"string"``: a string (``std::string``, ``char*``, ``TString``);
- ``"other"``: anything else (objects, nested lists, maps): served, not selectable.

A branch uproot itself cannot read is *unserved*, with the reason; nothing is
left out without one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial

import awkward as ak
import uproot

from .budget import Expired, branch_budget, within

TREE_CLASSES = frozenset({"TTree", "TNtuple", "TNtupleD"})

KINDS = ("flat", "jagged", "fixed", "string", "other")


def is_stream_class(classname: str) -> bool:
    """A TTree-like or RNTuple class name."""
    return classname in TREE_CLASSES or classname.endswith("RNTuple")


@dataclass
class StreamInfo:
    """One stream of one file, as last seen.

    Attributes:
        name (str): its path in the file.
        num_entries (int): entries readable now.
        kinds (dict): served branch name -> kind (see the module docstring), in uproot's order.
        unserved (dict): branch name -> why it cannot be served.
        rntuple (bool): an RNTuple rather than a TTree.
        offsets (list): entry offsets where every branch starts a basket (or cluster).
    """

    name: str
    num_entries: int
    kinds: dict[str, str]
    unserved: dict[str, str] = field(default_factory=dict)
    rntuple: bool = False
    offsets: list[int] = field(default_factory=list)


def kind_of_form(form: ak.forms.Form) -> str:
    """The kind of a branch whose awkward form is ``form``."""
    params = form.parameters or {}
    if params.get("__array__") in ("string", "bytestring"):
        return "string"
    if isinstance(form, ak.forms.NumpyForm):
        return "flat" if not form.inner_shape else "fixed" if len(form.inner_shape) == 1 else "other"
    if isinstance(form, ak.forms.RegularForm):
        return "fixed" if kind_of_form(form.content) == "flat" else "other"
    if isinstance(form, (ak.forms.ListOffsetForm, ak.forms.ListForm)):
        inner = form.content
        if isinstance(inner, ak.forms.NumpyForm) and not inner.inner_shape and not (inner.parameters or {}):
            return "jagged"
    return "other"


def reason_of(exc: BaseException) -> str:
    """``Type: first line of the message`` (cut at 200 characters): an exception as a reason to show."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


def tree_branches(tree) -> tuple[dict[str, str], dict[str, str]]:
    """(kinds, unserved) of a TTree's branches, named as ``tree.arrays()`` names its fields."""
    kinds: dict[str, str] = {}
    unserved: dict[str, str] = {}
    for name, branch in tree.iteritems(recursive=True, full_paths=False):
        interp = branch.interpretation
        if isinstance(interp, uproot.interpretation.grouped.AsGrouped):
            continue  # a split object's parent: its members are branches of their own
        if name in kinds or name in unserved:
            continue  # uproot's arrays() gives one field per name too
        if isinstance(interp, uproot.interpretation.identify.UnknownInterpretation):
            unserved[name] = f"uproot cannot interpret type {branch.typename or '?'}"
            continue
        try:
            kinds[name] = kind_of_form(interp.awkward_form(tree.file))
        except Exception as exc:
            # uproot cannot say the form of some types it still reads (structs with array members):
            # one entry read tells (a later read that fails drops the branch there, with the reason)
            if tree.num_entries == 0:
                kinds[name] = "other"
                continue
            try:
                within(branch_budget(1), partial(branch.array, entry_start=0, entry_stop=1, library="ak"))
                kinds[name] = "other"
            except Expired:
                unserved[name] = f"uproot takes over {branch_budget(1):g} s to read one entry of it"
            except Exception:
                unserved[name] = f"uproot cannot read type {branch.typename or '?'}: {reason_of(exc)}"
    return kinds, unserved


_PRIMITIVE = re.compile(
    r"(std::)?(u?int(8|16|32|64)_t|bool|float|double|char|(unsigned )?(short|int|long|long long)|"
    r"Double32_t|Float16_t|ROOT::RFloat16_t|std::float16_t|std::byte|std::byte_t)$"
)
_LIST = re.compile(r"(std::vector|ROOT::VecOps::RVec|ROOT::RVec|std::set|std::unordered_set)<(.*)>$")
_ARRAY = re.compile(r"std::array<(.*),\s*\d+>$")


def kind_of_type(type_name: str) -> str:
    """The kind of an RNTuple field from its C++ type name."""
    t = type_name.strip()
    if _PRIMITIVE.match(t):
        return "flat"
    if t in ("std::string", "TString"):
        return "string"
    m = _LIST.match(t)
    if m:
        return "jagged" if _PRIMITIVE.match(m.group(2).strip()) else "other"
    m = _ARRAY.match(t)
    if m:
        return "fixed" if kind_of_type(m.group(1)) == "flat" else "other"
    return "other"


def rntuple_fields(ntuple) -> dict[str, str]:
    """Kinds of an RNTuple's top-level fields, named as ``ntuple.arrays()`` names them."""
    types: dict[str, str] = {}
    for i, rec in enumerate(ntuple.field_records):
        if rec.parent_field_id == i:
            types.setdefault(rec.field_name, rec.type_name)
    return {name: kind_of_type(types.get(name, "")) for name in ntuple.keys(recursive=False)}


def stream_info(obj, name: str) -> StreamInfo:
    """Read what ``obj`` (a TTree or RNTuple of an open file) holds."""
    if isinstance(obj, uproot.behaviors.TBranch.HasBranches):
        kinds, unserved = tree_branches(obj)
        return StreamInfo(name, int(obj.num_entries), kinds, unserved)
    return StreamInfo(name, int(obj.num_entries), rntuple_fields(obj), {}, rntuple=True)


def schema(obj) -> tuple:
    """What identifies a stream's branches and their types (cheap; no interpretation)."""
    if isinstance(obj, uproot.behaviors.TBranch.HasBranches):
        return tuple((b.name, b.typename) for b in obj.itervalues(recursive=True))
    return tuple((r.field_name, r.type_name, r.parent_field_id) for r in obj.field_records)


def entry_offsets(obj) -> list[int]:
    """Entry numbers where every branch starts a basket (TTree) or a cluster starts (RNTuple)."""
    if isinstance(obj, uproot.behaviors.TBranch.HasBranches):
        return [int(x) for x in obj.common_entry_offsets()]
    offsets = [0]
    for c in obj.cluster_summaries:
        offsets.append(offsets[-1] + int(c.num_entries))
    return offsets
