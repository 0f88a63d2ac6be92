"""Resource specifications: parsing, defaults, refusals that name the key."""

from __future__ import annotations

import pytest

from rankpool.errors import ResourceSpecError
from rankpool.task.resources import DEFAULT_SPEC, Spec, check_fits, parse_spec


def test_defaults_and_aliases():
    assert parse_spec(None) is DEFAULT_SPEC and parse_spec({}) is DEFAULT_SPEC
    assert parse_spec({"ranks": 3}).num_ranks == 3
    assert parse_spec({"num_ranks": 3, "ranks": 3}).num_ranks == 3
    spec = parse_spec({"num_nodes": 2, "ranks_per_node": 3})
    assert (spec.num_ranks, spec.num_nodes, spec.ranks_per_node) == (6, 2, 3)
    spec = parse_spec({"num_ranks": 4, "results": "all", "priority": -2, "walltime": 1})
    assert spec.results_all and spec.priority == -2 and spec.walltime == 1.0 and spec.exclusive
    assert not DEFAULT_SPEC.exclusive and parse_spec({"walltime": 2}).exclusive


@pytest.mark.parametrize("spec, key", [
    ({"gpus": 1}, "gpus"),
    ({"num_ranks": 0}, "num_ranks"),
    ({"ranks": -1}, "ranks"),
    ({"num_ranks": 2.5}, "num_ranks"),
    ({"num_ranks": True}, "num_ranks"),
    ({"num_ranks": 2, "ranks": 3}, "ranks"),
    ({"num_ranks": 5, "num_nodes": 2, "ranks_per_node": 2}, "num_ranks"),
    ({"num_ranks": 5, "ranks_per_node": 2}, "ranks_per_node"),
    ({"num_ranks": 2, "num_nodes": 3}, "num_nodes"),
    ({"results": "some"}, "results"),
    ({"priority": "high"}, "priority"),
    ({"walltime": 0}, "walltime"),
    ({"walltime": float("inf")}, "walltime"),
    ({"walltime": "1h"}, "walltime"),
])
def test_refusals_name_the_key(spec, key):
    with pytest.raises(ResourceSpecError) as info:
        parse_spec(spec)
    assert info.value.key == key and repr(key) in str(info.value)


def test_not_a_mapping():
    with pytest.raises(ResourceSpecError):
        parse_spec([("num_ranks", 2)])  # type: ignore[arg-type]


def test_wire_round_trip_and_validation():
    for spec in (DEFAULT_SPEC, parse_spec({"num_ranks": 4, "results": "all", "walltime": 2.5}),
                 parse_spec({"num_nodes": 2, "ranks_per_node": 2, "priority": 7})):
        assert Spec.from_wire(spec.to_wire()) == spec
    with pytest.raises(ResourceSpecError):
        Spec.from_wire([0, None, None, False, 0, None])
    with pytest.raises(ResourceSpecError):
        Spec.from_wire("garbage")


def test_check_fits():
    check_fits(parse_spec({"num_ranks": 4}), widest=4)
    with pytest.raises(ResourceSpecError, match="wider than any pool"):
        check_fits(parse_spec({"num_ranks": 5}), widest=4)
    with pytest.raises(ResourceSpecError, match="ranks_per_node"):
        check_fits(parse_spec({"num_ranks": 4, "ranks_per_node": 4}), widest=8, largest_node=2)


def test_counts_in_refusals_agree_in_number() -> None:
    """'1 worker rank', not '1 worker ranks'."""
    from rankpool.errors import InsufficientRanks
    from rankpool.task.resources import check_fits
    with pytest.raises(ResourceSpecError) as one:
        check_fits(parse_spec({"num_ranks": 2}), 1, 1)
    assert "(1 worker rank)" in str(one.value)
    with pytest.raises(ResourceSpecError) as three:
        check_fits(parse_spec({"num_ranks": 4}), 3, 3)
    assert "(3 worker ranks)" in str(three.value)
    assert "only 1 usable rank left" in str(InsufficientRanks(7, 2, 1))


def test_the_counts_parsls_mpi_mode_writes_into_a_specification_are_read_as_numbers():
    from parsl.executors.high_throughput.mpi_prefix_composer import validate_resource_spec

    from rankpool.frontends.parsl.checks import parsl_counts

    shared = {"num_nodes": 2, "ranks_per_node": 3}
    validate_resource_spec(shared)  # what Parsl's MPI mode does to an app's specification
    assert shared["num_ranks"] == "6"
    with pytest.raises(ResourceSpecError, match="'num_ranks'"):
        parse_spec(shared)  # the front-ends without Parsl want numbers
    spec = parse_spec(parsl_counts(shared))
    assert (spec.num_ranks, spec.num_nodes, spec.ranks_per_node) == (6, 2, 3)
    assert shared["num_ranks"] == "6"  # read in a copy: the app's mapping is left as it was
    quotient = {"num_nodes": 2, "num_ranks": 4}
    validate_resource_spec(quotient)
    assert quotient["ranks_per_node"] == "2.0"
    assert parse_spec(parsl_counts(quotient)).ranks_per_node == 2
    plain = {"num_ranks": 2}
    assert parsl_counts(plain) is plain
    for bad, key in (({"num_ranks": "four"}, "num_ranks"), ({"ranks_per_node": "1.5"},
                                                            "ranks_per_node")):
        with pytest.raises(ResourceSpecError, match=f"'{key}'"):
            parse_spec(parsl_counts(bad))
