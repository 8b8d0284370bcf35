"""Logical axis rules -> partition specs (jtrain/sharding.py), on shapes only: no devices needed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest
from jax.sharding import PartitionSpec as P

from jtrain import config as config_lib, mesh as mesh_lib, models, sharding
from jtrain.errors import ConfigError
from jtrain.state import init_state

DEFAULT = sharding.parse_rules(config_lib.default_config().mesh.rules)


def sizes(data=1, fsdp=1, tensor=1):
    return {"data": data, "fsdp": fsdp, "tensor": tensor}


def spec(shape, names, rules=DEFAULT, **mesh):
    return sharding.leaf_spec(("params", "w"), shape, names, rules, sizes(**mesh))


def test_parse_rules_reads_the_table_and_the_wildcard():
    rules = sharding.parse_rules(("mlp=tensor", "batchy=data,fsdp", "embed=", "layers=-", "*=fsdp"))
    assert rules.table == {"mlp": ("tensor",), "batchy": ("data", "fsdp"), "embed": (), "layers": None}
    assert rules.wildcard == ("fsdp",)


@pytest.mark.parametrize("rule, message", [
    ("mlp", "is not 'logical_name=mesh_axis"),
    ("mlp=tensr", "unknown mesh axis 'tensr'"),
    ("mlp=tensor,tensor", "repeats a mesh axis"),
])
def test_parse_rules_errors_name_the_key(rule, message):
    with pytest.raises(ConfigError, match=message) as e:
        sharding.parse_rules((rule,))
    assert "'mesh.rules'" in str(e.value)


def test_two_rules_for_one_name_is_an_error():
    with pytest.raises(ConfigError, match="two rules for 'mlp'"):
        sharding.parse_rules(("mlp=tensor", "mlp="))


def test_named_rules_then_the_largest_remaining_dimension_on_fsdp():
    # Dense kernel (embed, mlp): mlp -> tensor, then the wildcard puts embed on fsdp.
    assert spec((64, 256), ("embed", "mlp"), fsdp=2, tensor=4) == (P("fsdp", "tensor"), ())
    # Without tensor parallelism the wildcard takes the largest dimension.
    assert spec((64, 256), ("embed", "mlp"), fsdp=8)[0] == P(None, "fsdp")
    # ... the largest that divides evenly: 250 does not split over 8, 64 does.
    assert spec((64, 250), ("embed", "mlp"), fsdp=8)[0] == P("fsdp", None)
    # Unannotated leaves (e.g. batch statistics) still get FSDP from the wildcard.
    assert spec((128,), None, fsdp=4)[0] == P("fsdp")
    # Size-1 mesh axes are left out of the spec; scalars are replicated.
    assert spec((64, 256), ("embed", "mlp"))[0] == P(None, None)
    assert spec((), None, fsdp=8)[0] == P()


def test_keep_whole_rule_shields_a_dimension_from_the_wildcard():
    # A scanned stack (layers, embed, mlp): 'layers=-' never splits even when it is the only divisible dimension.
    assert spec((8, 3, 5), ("layers", "embed", "mlp"), fsdp=8) == (
        P(None, None, None), ("rule '*=fsdp': no free dimension of (8, 3, 5) is divisible by 8",))


def test_a_mesh_axis_is_used_once_per_leaf_and_misses_are_reported():
    rules = sharding.parse_rules(("heads=tensor", "mlp=tensor", "*=fsdp"))
    got, misses = sharding.leaf_spec(("params", "w"), (8, 16), ("heads", "mlp"), rules, sizes(tensor=4))
    assert got == P("tensor", None)
    assert misses == ("rule 'mlp=tensor': mesh axis already used by another dimension",)
    got, misses = sharding.leaf_spec(("params", "w"), (10, 16), ("heads", "mlp"), rules, sizes(tensor=4))
    assert got == P(None, "tensor")
    assert misses == ("rule 'heads=tensor': dimension 0 of size 10 is not divisible by 4",)


def test_a_logical_name_without_a_rule_is_an_error_naming_it():
    with pytest.raises(ConfigError, match=r"params/w has logical axis 'experts' with no rule") as e:
        spec((4, 8), ("experts", "mlp"), tensor=2)
    assert "'mesh.rules'" in str(e.value)


def _mlp_state(rules=DEFAULT, threshold=1 << 20, **mesh):
    config = config_lib.default_config()
    config_lib.apply_overrides(config, ["model.name=mlp", "model.hidden_sizes=(512, 256)", "model.batch_norm=True"])
    model = models.build(config.model, 10)
    sample = jnp.zeros((1, 8, 8, 1), jnp.float32)
    abstract = jax.eval_shape(lambda: init_state(model, optax.adamw(1e-3), jax.random.key(0), sample))
    placements = sharding.plan_state(abstract, sizes(**mesh), rules, sharding.logical_axes(model, sample))
    return abstract, {"/".join(p.path): p for p in placements}, placements


def test_optimizer_moments_follow_their_parameters_and_scalars_are_replicated():
    _, by_path, _ = _mlp_state(fsdp=2, tensor=4)
    kernel = by_path["params/Dense_0/kernel"]
    assert kernel.names == ("embed", "mlp") and kernel.spec == P("fsdp", "tensor")
    # Hidden layers alternate embed -> mlp -> embed, so consecutive layers split opposite dimensions.
    assert by_path["params/Dense_1/kernel"].spec == P("tensor", "fsdp")
    moments = [p for path, p in by_path.items() if path.startswith("opt_state") and path.endswith("Dense_0/kernel")]
    assert len(moments) == 2 and all(p.spec == kernel.spec for p in moments)  # Adam's mu and nu
    assert by_path["step"].spec == P() and by_path["rng"].spec == P()
    count = [p for path, p in by_path.items() if path.startswith("opt_state") and path.endswith("count")]
    assert count and all(p.spec == P() for p in count)
    # Batch statistics carry no annotation: the wildcard still splits them.
    assert by_path["model_state/batch_stats/BatchNorm_0/mean"].spec == P("fsdp")


def test_a_large_parameter_left_replicated_is_an_error_naming_it_and_the_rule():
    rules = sharding.parse_rules(("embed=", "mlp=", "classes=", "*=fsdp"))
    _, _, placements = _mlp_state(rules, fsdp=3)  # no dimension of the 64x512 kernel divides by 3
    with pytest.raises(ConfigError) as e:
        sharding.check_replication(placements, sizes(fsdp=3), threshold=100_000)
    message = str(e.value)
    assert "parameter Dense_0/kernel (64, 512) (128.0 KiB) would be replicated on every device" in message
    assert "rule '*=fsdp': no free dimension of (64, 512) is divisible by 3" in message
    assert "\n" not in message
    sharding.check_replication(placements, sizes(fsdp=3), threshold=600_000)  # all below the threshold: allowed
    sharding.check_replication(placements, sizes(), threshold=0)  # nothing to shard over: allowed


def test_mesh_errors_name_the_key():
    config = config_lib.default_config()
    config_lib.apply_overrides(config, ["mesh.data=1", "mesh.fsdp=2", "mesh.tensor=4"])
    with pytest.raises(ConfigError, match="needs 8 devices, 1 are available"):
        mesh_lib.mesh_shape(config.mesh, 1)
    with pytest.raises(ConfigError, match="'mesh.replication_threshold_bytes': must be >= 0"):
        config_lib.apply_overrides(config, ["mesh.replication_threshold_bytes=-1"])


def test_one_device_state_shardings_and_report():
    config = config_lib.default_config()
    config_lib.apply_overrides(config, ["model.name=mlp", "mesh.data=1"])
    model = models.build(config.model, 10)
    sample = jnp.zeros((1, 8, 8, 1), jnp.float32)
    abstract = jax.eval_shape(lambda: init_state(model, optax.sgd(0.1), jax.random.key(0), sample))
    mesh = mesh_lib.make_mesh(config.mesh, jax.devices()[:1])
    shardings = mesh_lib.state_shardings(abstract, mesh, config.mesh, sharding.logical_axes(model, sample))
    assert not sharding.is_sharded(shardings)
    table = sharding.report(abstract, shardings)
    assert table.splitlines()[0].split() == ["parameter", "shape", "partition", "per", "device"]
    assert "Dense_0/kernel  64x256" in table and "256.0 KiB" in table
    assert sharding.per_device_bytes(abstract, shardings) == sum(
        x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract))
