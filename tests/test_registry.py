"""The process registry: canonical names and aliases, refusals, entry points; saved recipes hold canonical names."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass

import pytest
import yaml
from conftest import TINY

import genproc
from genproc import processes
from genproc.errors import GenprocError
from genproc.processes import ProcessConfig, canonical_name, lookup, register, registered, unregister
from genproc.processes.heat import HeatConfig, HeatProcess
from genproc.recipe import recipe_from_dict


def test_aliases_resolve_to_one_canonical_name():
    assert canonical_name("heat") == canonical_name("IHDM") == canonical_name(" ihdm ") == "ihdm"
    assert lookup("heat").process_cls is HeatProcess and lookup("heat").config_cls is HeatConfig
    assert recipe_from_dict({**copy.deepcopy(TINY)}).to_dict()["process"]["name"] == "ihdm"  # TINY says 'heat'
    with pytest.raises(GenprocError, match="unknown process 'ddmp'; did you mean 'ddpm'"):
        canonical_name("ddmp")
    with pytest.raises(GenprocError, match=r"recipe field 'process.name': unknown process 'hot'"):
        recipe_from_dict({**copy.deepcopy(TINY), "process": {"name": "hot"}})


@dataclass
class _Cfg(ProcessConfig):
    K: int = 3


class _Proc(HeatProcess):
    pass


def test_register_refuses_clashes_and_non_processes():
    with pytest.raises(GenprocError, match="'heat' already names process 'ihdm'"):
        register("mine", _Proc, _Cfg, aliases=("heat",))
    with pytest.raises(GenprocError, match="config HeatConfig is already registered as 'ihdm'"):
        register("mine", _Proc, HeatConfig)
    with pytest.raises(GenprocError, match="must subclass genproc.processes.base.ForwardProcess"):
        register("mine", object, _Cfg)  # type: ignore[arg-type]
    assert "mine" not in registered()


def test_entry_point_group_adds_a_process(monkeypatch):
    """An installed package's ``genproc.processes`` entry point is a callable that calls register; loaded on first lookup."""

    class EP:
        def load(self):
            return lambda: register("from-plugin", _Proc, _Cfg)

    monkeypatch.setattr(processes, "entry_points", lambda group: [EP()] if group == processes.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(processes, "_entry_points_loaded", False)
    try:
        assert "from-plugin" in registered() and lookup("from-plugin").config_cls is _Cfg
    finally:
        unregister("from-plugin")


def test_old_run_saved_under_an_alias_resumes_and_data_root_is_in_the_recipe(tmp_path):
    """A checkpoint whose recipe says 'heat' (written before the rename) resumes under 'ihdm'; --data-root lands in
    recipe.yaml and in every checkpoint's recipe alike."""
    d = copy.deepcopy(TINY)
    d["train"].update(max_steps=2, checkpoint_every=2)
    quiet = {"progress": False, "log": lambda *_: None}
    genproc.train(recipe_from_dict(d), tmp_path / "run", data_root=str(tmp_path / "somewhere"), **quiet)
    meta_path = tmp_path / "run" / "checkpoints" / "step_00000002" / "meta.json"
    meta = json.loads(meta_path.read_text())
    on_disk = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert on_disk == meta["recipe"] and on_disk["data"]["root"] == str(tmp_path / "somewhere")
    meta["recipe"]["process"]["name"] = "heat"  # as an older genproc wrote it
    meta_path.write_text(json.dumps(meta))
    run = genproc.train(recipe_from_dict(d), tmp_path / "run", max_steps=4, data_root=str(tmp_path / "somewhere"), **quiet)
    assert run.step == 4 and run.process_name == "ihdm"
