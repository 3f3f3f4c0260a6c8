"""The simulated DAQ's streams written by ROOT itself, as a real DAQ writes them.

``ddsdaqsim --writer root`` uses this module; nothing else in DDS imports ROOT.
ROOT is imported when the first writer is made (``import demo.rootwriter`` alone
does not), so a process that never writes with ROOT never loads it.

TTree files (``format="ttree"``) are filled entry by entry with ``TTree::Fill``
and saved with ``TTree::AutoSave("SaveSelf")``, the documented recipe for one
process writing while another reads: the tree header and the file's key list
are rewritten on disk, and until then nothing filled since the previous
AutoSave is readable. A tree is AutoSaved every ``autosave`` entries, and also
when it has unsaved entries ``autosave_seconds`` after its previous AutoSave (a
0.2 Hz stream would otherwise wait minutes). The branches::

    DaqSnarl    run, subrun, snarl (Long64_t), trigsrc, time (double), nhits,
                plane, strip (std::vector<short>), adc (std::vector<float>),
                trigger (std::string: the name of trigsrc)
    DaqMonitor  run, subrun, snarl, time, trigger_rate (float), ncrates,
                crate_rate[ncrates]/F (a C array sized by its counter branch)
    DcsMonitor  one object branch of the class DcsReading (declared through the
                interpreter, with a dictionary, split): run, subrun, time,
                temp_rack, temp_hall, hv

RNTuple files (``format="rntuple"``) hold one RNTuple per stream, written with
``RNTupleWriter::Append`` into the subrun's file, a cluster committed every
``autosave`` entries. ROOT writes an RNTuple's anchor only when the writer
commits the dataset, at the file's end: nothing of it is readable before. The
fields are those of the TTree branches, DcsMonitor's flat.

Values are filled in C++ (functions declared through the interpreter take the
simulator's numpy columns), as a DAQ fills them.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from typing import Any

import numpy as np

FORMATS = ("ttree", "rntuple")

#: what to install when ROOT is missing
INSTALL_HINT = "ROOT is not installed: pip install root (or install ROOT and source thisroot.sh)"

_CPP = r"""
#include <memory>
#include <string>
#include <vector>
#include "TFile.h"
#include "TTree.h"
#include <ROOT/RNTupleModel.hxx>
#include <ROOT/RNTupleWriter.hxx>

// A DCS reading as the DCS writes it: one object per record, split into a branch per member.
class DcsReading {
public:
   Int_t run = 0;
   Int_t subrun = 0;
   Double_t time = 0;
   Float_t temp_rack = 0;
   Float_t temp_hall = 0;
   Float_t hv = 0;
   virtual ~DcsReading() {}
   ClassDef(DcsReading, 1)
};

namespace ddsdaq {

const char *TriggerName(Int_t code)
{
   switch (code) {
   case 1: return "plane";
   case 2: return "energy";
   case 4: return "spill";
   case 8: return "light-injection";
   case 16: return "null";
   default: return "unknown";
   }
}

// Saves a tree (TTree::AutoSave) or commits a cluster (RNTuple) every `every` entries, and
// when entries wait `seconds` after the previous save.
class Saver {
public:
   Long64_t every = 100;
   double seconds = 1.0;
   Long64_t entries = 0;
   Long64_t saved = 0;
   double savedAt = 0;
   Long64_t saves = 0;
   virtual ~Saver() {}
   virtual void Save() = 0;
   void Filled(double now)
   {
      ++entries;
      if (entries - saved >= every) SaveAt(now);
   }
   void Tick(double now)
   {
      if (entries > saved && now - savedAt >= seconds) SaveAt(now);
   }
   void SaveAt(double now)
   {
      Save();
      saved = entries;
      savedAt = now;
      ++saves;
   }
};

class TreeSaver : public Saver {
public:
   TTree *tree = nullptr;
   void Save() override { tree->AutoSave("SaveSelf FlushBaskets"); }
};

// A tree whose first branches are run, subrun and snarl; time is the entry's time, branched by each tree.
class RunTree : public TreeSaver {
public:
   Int_t run = 0, subrun = 0;
   Long64_t snarl = 0;
   Double_t time = 0;
   RunTree(TFile *f, const char *name, const char *title)
   {
      f->cd();
      tree = new TTree(name, title);
      tree->Branch("run", &run, "run/I");
      tree->Branch("subrun", &subrun, "subrun/I");
      tree->Branch("snarl", &snarl, "snarl/L");
   }
};

class SnarlTree : public RunTree {
public:
   Int_t trigsrc = 0, nhits = 0;
   std::vector<Short_t> plane, strip;
   std::vector<Float_t> adc;
   std::string trigger;
   SnarlTree(TFile *f) : RunTree(f, "DaqSnarl", "physics triggers")
   {
      tree->Branch("trigsrc", &trigsrc, "trigsrc/I");
      tree->Branch("time", &time, "time/D");
      tree->Branch("nhits", &nhits, "nhits/I");
      tree->Branch("plane", &plane);
      tree->Branch("strip", &strip);
      tree->Branch("adc", &adc);
      tree->Branch("trigger", &trigger);
   }
   void Fill(Long64_t n, Int_t run_, Int_t subrun_, const Long64_t *snarl_, const Int_t *trigsrc_,
             const Double_t *time_, const Int_t *nhits_, const Short_t *plane_, const Short_t *strip_,
             const Float_t *adc_)
   {
      Long64_t at = 0;
      for (Long64_t i = 0; i < n; ++i) {
         run = run_; subrun = subrun_; snarl = snarl_[i]; trigsrc = trigsrc_[i]; time = time_[i];
         nhits = nhits_[i];
         plane.assign(plane_ + at, plane_ + at + nhits);
         strip.assign(strip_ + at, strip_ + at + nhits);
         adc.assign(adc_ + at, adc_ + at + nhits);
         trigger = TriggerName(trigsrc);
         at += nhits;
         tree->Fill();
         Filled(time);
      }
   }
};

class MonitorTree : public RunTree {
public:
   Int_t ncrates = 0;
   Float_t trigger_rate = 0;
   Float_t crate_rate[64];
   MonitorTree(TFile *f) : RunTree(f, "DaqMonitor", "DAQ rates")
   {
      tree->Branch("time", &time, "time/D");
      tree->Branch("trigger_rate", &trigger_rate, "trigger_rate/F");
      tree->Branch("ncrates", &ncrates, "ncrates/I");
      tree->Branch("crate_rate", crate_rate, "crate_rate[ncrates]/F");
   }
   void Fill(Long64_t n, Int_t run_, Int_t subrun_, const Long64_t *snarl_, const Double_t *time_,
             const Float_t *rate_, Int_t ncrates_, const Float_t *crate_)
   {
      for (Long64_t i = 0; i < n; ++i) {
         run = run_; subrun = subrun_; snarl = snarl_[i]; time = time_[i]; trigger_rate = rate_[i];
         ncrates = ncrates_;
         for (Int_t c = 0; c < ncrates; ++c) crate_rate[c] = crate_[i * ncrates + c];
         tree->Fill();
         Filled(time);
      }
   }
};

class DcsTree : public TreeSaver {
public:
   DcsReading *reading = new DcsReading();
   DcsTree(TFile *f)
   {
      f->cd();
      tree = new TTree("DcsMonitor", "detector control");
      tree->Branch("reading", &reading, 32000, 99);
   }
   ~DcsTree() { delete reading; }
   void Fill(Long64_t n, Int_t run_, Int_t subrun_, const Double_t *time_, const Float_t *rack_,
             const Float_t *hall_, const Float_t *hv_)
   {
      for (Long64_t i = 0; i < n; ++i) {
         reading->run = run_; reading->subrun = subrun_; reading->time = time_[i];
         reading->temp_rack = rack_[i]; reading->temp_hall = hall_[i]; reading->hv = hv_[i];
         tree->Fill();
         Filled(time_[i]);
      }
   }
};

class NtupleSaver : public Saver {
public:
   std::unique_ptr<ROOT::RNTupleWriter> writer;
   void Save() override { writer->CommitCluster(); }
   void Commit() { writer.reset(); }  // the anchor is written here: the RNTuple becomes readable
};

class SnarlNtuple : public NtupleSaver {
public:
   std::shared_ptr<Int_t> run, subrun, trigsrc, nhits;
   std::shared_ptr<Long64_t> snarl;
   std::shared_ptr<Double_t> time;
   std::shared_ptr<std::vector<Short_t>> plane, strip;
   std::shared_ptr<std::vector<Float_t>> adc;
   std::shared_ptr<std::string> trigger;
   SnarlNtuple(TFile *f)
   {
      auto m = ROOT::RNTupleModel::Create();
      run = m->MakeField<Int_t>("run"); subrun = m->MakeField<Int_t>("subrun");
      snarl = m->MakeField<Long64_t>("snarl"); trigsrc = m->MakeField<Int_t>("trigsrc");
      time = m->MakeField<Double_t>("time"); nhits = m->MakeField<Int_t>("nhits");
      plane = m->MakeField<std::vector<Short_t>>("plane"); strip = m->MakeField<std::vector<Short_t>>("strip");
      adc = m->MakeField<std::vector<Float_t>>("adc"); trigger = m->MakeField<std::string>("trigger");
      writer = ROOT::RNTupleWriter::Append(std::move(m), "DaqSnarl", *f);
   }
   void Fill(Long64_t n, Int_t run_, Int_t subrun_, const Long64_t *snarl_, const Int_t *trigsrc_,
             const Double_t *time_, const Int_t *nhits_, const Short_t *plane_, const Short_t *strip_,
             const Float_t *adc_)
   {
      Long64_t at = 0;
      for (Long64_t i = 0; i < n; ++i) {
         *run = run_; *subrun = subrun_; *snarl = snarl_[i]; *trigsrc = trigsrc_[i]; *time = time_[i];
         *nhits = nhits_[i];
         plane->assign(plane_ + at, plane_ + at + *nhits);
         strip->assign(strip_ + at, strip_ + at + *nhits);
         adc->assign(adc_ + at, adc_ + at + *nhits);
         *trigger = TriggerName(*trigsrc);
         at += *nhits;
         writer->Fill();
         Filled(*time);
      }
   }
};

class MonitorNtuple : public NtupleSaver {
public:
   std::shared_ptr<Int_t> run, subrun, ncrates;
   std::shared_ptr<Long64_t> snarl;
   std::shared_ptr<Double_t> time;
   std::shared_ptr<Float_t> trigger_rate;
   std::shared_ptr<std::vector<Float_t>> crate_rate;
   MonitorNtuple(TFile *f)
   {
      auto m = ROOT::RNTupleModel::Create();
      run = m->MakeField<Int_t>("run"); subrun = m->MakeField<Int_t>("subrun");
      snarl = m->MakeField<Long64_t>("snarl"); time = m->MakeField<Double_t>("time");
      trigger_rate = m->MakeField<Float_t>("trigger_rate"); ncrates = m->MakeField<Int_t>("ncrates");
      crate_rate = m->MakeField<std::vector<Float_t>>("crate_rate");
      writer = ROOT::RNTupleWriter::Append(std::move(m), "DaqMonitor", *f);
   }
   void Fill(Long64_t n, Int_t run_, Int_t subrun_, const Long64_t *snarl_, const Double_t *time_,
             const Float_t *rate_, Int_t ncrates_, const Float_t *crate_)
   {
      for (Long64_t i = 0; i < n; ++i) {
         *run = run_; *subrun = subrun_; *snarl = snarl_[i]; *time = time_[i]; *trigger_rate = rate_[i];
         *ncrates = ncrates_;
         crate_rate->assign(crate_ + i * ncrates_, crate_ + (i + 1) * ncrates_);
         writer->Fill();
         Filled(*time);
      }
   }
};

class DcsNtuple : public NtupleSaver {
public:
   std::shared_ptr<Int_t> run, subrun;
   std::shared_ptr<Double_t> time;
   std::shared_ptr<Float_t> temp_rack, temp_hall, hv;
   DcsNtuple(TFile *f)
   {
      auto m = ROOT::RNTupleModel::Create();
      run = m->MakeField<Int_t>("run"); subrun = m->MakeField<Int_t>("subrun");
      time = m->MakeField<Double_t>("time"); temp_rack = m->MakeField<Float_t>("temp_rack");
      temp_hall = m->MakeField<Float_t>("temp_hall"); hv = m->MakeField<Float_t>("hv");
      writer = ROOT::RNTupleWriter::Append(std::move(m), "DcsMonitor", *f);
   }
   void Fill(Long64_t n, Int_t run_, Int_t subrun_, const Double_t *time_, const Float_t *rack_,
             const Float_t *hall_, const Float_t *hv_)
   {
      for (Long64_t i = 0; i < n; ++i) {
         *run = run_; *subrun = subrun_; *time = time_[i];
         *temp_rack = rack_[i]; *temp_hall = hall_[i]; *hv = hv_[i];
         writer->Fill();
         Filled(*time);
      }
   }
};

} // namespace ddsdaq
"""

_root: Any = None


def root_available() -> bool:
    """True when ``import ROOT`` would find ROOT (ROOT is not imported to find out)."""
    if "ROOT" in sys.modules:
        return sys.modules["ROOT"] is not None  # None: imports of ROOT are blocked in this process
    return importlib.util.find_spec("ROOT") is not None


def load_root() -> Any:
    """The ROOT module, with the writer's C++ declared (once per process).

    Raises:
        ImportError: ROOT is not installed; the message says how to install it.
    """
    global _root
    if _root is not None:
        return _root
    if not root_available():
        raise ImportError(INSTALL_HINT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the PyPI build says it is an alpha on every import
        import ROOT  # noqa: N811
    ROOT.gROOT.SetBatch(True)
    if not ROOT.gInterpreter.Declare(_CPP):
        raise RuntimeError("ROOT could not compile the DAQ writer's C++ code")
    _root = ROOT
    return ROOT


def root_version() -> str:
    """ROOT's version, e.g. ``6.40.00`` (imports ROOT)."""
    return str(load_root().gROOT.GetVersion())


def _c(a, dtype) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a), dtype=dtype)


class RootFile:
    """One DAQ file written by ROOT: the three streams as TTrees or RNTuples.

    Args:
        path (str): where to create the file (the DAQ's temporary name).
        format (str): ``"ttree"`` or ``"rntuple"``.
        autosave (int): entries per AutoSave (TTree) or per committed cluster (RNTuple); default 100.
        autosave_seconds (float): also save a stream whose oldest unsaved entry is this old
            (in the records' own time); default 1.0.
        streams (tuple): the stream names, in the simulator's order.
    """

    def __init__(self, path: str, *, format: str = "ttree", autosave: int = 100, autosave_seconds: float = 1.0,
                 streams: tuple = ("DaqSnarl", "DaqMonitor", "DcsMonitor")):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        if autosave < 1:
            raise ValueError(f"autosave must be >= 1 entries, got {autosave!r}")
        ROOT = load_root()  # noqa: N806
        self.path = path
        self.format = format
        self._file = ROOT.TFile.Open(path, "RECREATE")
        if not self._file or self._file.IsZombie():
            raise OSError(f"ROOT cannot create {path}")
        ns = ROOT.ddsdaq
        if format == "ttree":
            kinds = {"DaqSnarl": ns.SnarlTree, "DaqMonitor": ns.MonitorTree, "DcsMonitor": ns.DcsTree}
        else:
            self._file.Write()  # a readable (empty) file until the RNTuples are committed
            kinds = {"DaqSnarl": ns.SnarlNtuple, "DaqMonitor": ns.MonitorNtuple, "DcsMonitor": ns.DcsNtuple}
        self._streams: dict[str, Any] = {}
        for stream in streams:
            w = kinds[stream](self._file)
            w.every = autosave
            w.seconds = autosave_seconds
            self._streams[stream] = w
        if format == "ttree":
            for w in self._streams.values():
                w.tree.AutoSave("SaveSelf")  # every tree is in the file (empty) from the start
        self._closed = False

    @property
    def started(self) -> bool:
        """True once filled entries are on disk: AutoSaved (TTree, readable), or a cluster committed
        (RNTuple: not readable before the dataset's commit at :meth:`close`)."""
        return any(w.saves for w in self._streams.values())

    def saves(self) -> dict[str, int]:
        """AutoSaves (or committed clusters) so far, per stream."""
        return {s: int(w.saves) for s, w in self._streams.items()}

    def saved(self) -> dict[str, int]:
        """Entries on disk per stream: up to the last AutoSave (or committed cluster)."""
        return {s: int(w.saved) for s, w in self._streams.items()}

    def extend(self, stream: str, data: dict, now: float) -> None:
        """Fill the entries of ``data`` (the simulator's columns of one step) into ``stream``.

        Args:
            stream (str): DaqSnarl, DaqMonitor or DcsMonitor.
            data (dict): ``run``, ``subrun`` and the stream's columns, as the simulator makes them.
            now (float): the simulated time of the step's end (for the AutoSave timer).
        """
        w = self._streams[stream]
        n = len(data["time"])
        run, subrun = int(data["run"][0]), int(data["subrun"][0])
        if stream == "DaqSnarl":
            import awkward as ak

            hits = data["hits"]
            nhits = _c(ak.num(hits), np.int32)
            flat = ak.flatten(hits)
            w.Fill(n, run, subrun, _c(data["snarl"], np.longlong), _c(data["trigsrc"], np.int32),
                   _c(data["time"], np.float64), nhits, _c(flat["plane"], np.int16),
                   _c(flat["strip"], np.int16), _c(flat["adc"], np.float32))
        elif stream == "DaqMonitor":
            import awkward as ak

            crate = data["crate_rate"]  # the same number of crates in every record
            ncrates = len(crate[0]) if n else 0
            if ncrates > 64:
                raise ValueError(f"DaqMonitor holds at most 64 crates, got {ncrates}")
            w.Fill(n, run, subrun, _c(data["snarl"], np.longlong), _c(data["time"], np.float64),
                   _c(data["trigger_rate"], np.float32), ncrates, _c(ak.flatten(crate), np.float32))
        else:
            w.Fill(n, run, subrun, _c(data["time"], np.float64), _c(data["temp_rack"], np.float32),
                   _c(data["temp_hall"], np.float32), _c(data["hv"], np.float32))
        self.tick(now)

    def tick(self, now: float) -> None:
        """Save every stream whose unsaved entries waited ``autosave_seconds`` by ``now``."""
        for w in self._streams.values():
            w.Tick(now)

    def close(self) -> None:
        """Write everything and close the file (RNTuples are committed here)."""
        if self._closed:
            return
        self._closed = True
        ROOT = load_root()  # noqa: N806
        if self.format == "rntuple":
            for w in self._streams.values():
                w.Commit()
        else:
            self._file.Write("", ROOT.TObject.kOverwrite)
        self._file.Close()
        self._streams.clear()
