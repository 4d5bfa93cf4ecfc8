"""The one override parser (`jaxrej.cli.apply_overrides`), used by train, heads and score."""

import ml_collections
import pytest

from jaxrej.cli import apply_overrides, load_config
from tests.conftest import CONFIGS


def _config():
    return {"seed": 0, "eval": {"rtol": 1e-4, "batch_size": 72, "divergence": "exact",
                                "screen": True, "shape": [8, 8], "path": None}}  # fmt: skip


def test_values_keep_their_field_types():
    c = apply_overrides(_config(), ["--config.eval.rtol=1e-3", "--config.eval.batch_size=4",
                                    "--config.eval.divergence=rademacher", "--config.eval.screen=False",
                                    "--config.eval.shape=(4, 4)", "--config.eval.path='x.npz'",
                                    "--config.seed=3"])  # fmt: skip
    assert c == {"seed": 3, "eval": {"rtol": 1e-3, "batch_size": 4, "divergence": "rademacher",
                                     "screen": False, "shape": [4, 4], "path": "x.npz"}}  # fmt: skip
    c = apply_overrides(_config(), ["--config.eval.rtol=1"])  # an int for a float field
    assert c["eval"]["rtol"] == 1.0 and isinstance(c["eval"]["rtol"], float)


@pytest.mark.parametrize(
    "item,message",
    [("--config.eval.batch_size=1.5", "expected a int like 72"),
     ("--config.eval.batch_size=True", "expected a int"),
     ("--config.eval.screen=1", "expected a bool"),
     ("--config.eval.rtol=fast", "expected a float"),
     ("--config.eval.nope=1", "no field 'nope'"),
     ("--config.nope.rtol=1", "no field 'nope'"),
     ("--eval.rtol=1", "overrides look like --config.a.b=value"),
     ("--config.eval.rtol", "overrides look like")],
)  # fmt: skip
def test_bad_overrides_name_themselves(item, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(_config(), [item])


def test_sections_limit_what_may_be_set():
    c = apply_overrides(_config(), ["--config.eval.rtol=0.01"], sections=("eval",))
    assert c["eval"]["rtol"] == 0.01
    for item in ("--config.seed=1", "--config.training.lr=1.0"):
        with pytest.raises(ValueError, match=r"only --config\.eval\.<field>=<value>"):
            apply_overrides(_config(), [item], sections=("eval",))


def test_load_config_applies_overrides_to_a_config_dict():
    c = load_config(str(CONFIGS / "digits_heads.py"), ["--config.reject.percentiles=(5.0,)"])
    assert isinstance(c, ml_collections.ConfigDict) and tuple(c.reject.percentiles) == (5.0,)
    with pytest.raises(ValueError, match="no such config file"):
        load_config(str(CONFIGS / "absent.py"))
