"""Resuming a checkpoint written before a setting existed: the missing setting takes its
default (which keeps the earlier behaviour); a real difference is still refused."""

from __future__ import annotations

import pytest

from adapmtl.config import from_dict
from adapmtl.engine.state import check_resumable
from adapmtl.errors import UserError


def test_a_checkpoint_without_a_newer_setting_resumes(tmp_path):
    config = from_dict({"train": {"iterations": 10}})
    stored = config.to_dict()
    del stored["train"]["autocast"], stored["imports"]
    check_resumable({"config": stored, "iteration": 4}, config, tmp_path)
    stored["optim"]["lr"] = config.optim.lr * 2
    with pytest.raises(UserError, match=r"different config \(sections \['optim'\]\)"):
        check_resumable({"config": stored, "iteration": 4}, config, tmp_path)
