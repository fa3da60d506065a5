"""Policy validation: every problem reported at once, with its key path."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from popgate.policies import loader
from popgate.policies.loader import PolicyError

DEFAULT = """
[default]
all = "challenge"
human = "allow"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as e:
        loader.loads(text)
    return e.value.problems


def test_shipped_default_and_snippets_compile() -> None:
    """policies/default.toml loads; every snippet compiles when included."""
    p = loader.load(Path(loader.__file__).parent / "default.toml")
    assert len(p.rules) >= 5 and set(p.default) == {
        "human",
        "account",
        "backed-agent",
        "verified-agent",
        "agent",
        "unknown",
    }
    for snip in sorted(loader.SNIPPETS.glob("*.toml")):
        loader.loads(DEFAULT + f'[[rules]]\ninclude = "(snippets)/{snip.name}"\n')


def test_missing_default_is_an_error() -> None:
    """No [default]: no implicit allow."""
    assert any(p.startswith("default:") for p in problems('[[rules]]\nname="a"\naction="allow"\n'))
    ps = problems('[default]\nhuman = "allow"\n')
    assert {"default.account", "default.unknown", "default.agent", "default.verified-agent"} <= {
        p.split(":")[0] for p in ps
    }


def test_all_problems_reported_at_once() -> None:
    """Many mistakes in one file come back together, each with its path."""
    text = (
        DEFAULT
        + """
[[rules]]
name = "bad net"
networks = ["10.0.0.0/33", "10.0.0.1/8", "2001:db8::/64"]
path = ["admin", "/ok/**"]
path_regex = "(unclosed"
methods = "GET"
action = { kind = "charge", price = "0.0000001" }

[[rules]]
name = "x"
weight = 5
action = "allow"

[[rules]]
name = "y"
user_agent = "["
actions = { robot = "allow", agent = { kind = "throttle", rate = "fast" }, \
unknown = { kind = "challenge", ways = ["pay"] } }
colour = "blue"

[[rules]]
name = "y"
action = { kind = "deny", status = 200 }

[[thresholds]]
name = "t"
weight = 0
action = "maybe"
"""
    )
    ps = problems(text)
    paths = [p.split(": ")[0] for p in ps]
    for expected in [
        "rules[0].name",
        "rules[0].networks[0]",
        "rules[0].networks[1]",
        "rules[0].path[0]",
        "rules[0].path_regex[0]",
        "rules[0].action.price",
        "rules[1]",
        "rules[2].user_agent",
        "rules[2].actions.robot",
        "rules[2].actions.agent.rate",
        "rules[2].actions.unknown.price",
        "rules[2].colour",
        "rules[3].action.status",
        "thresholds[0].weight",
        "thresholds[0].action",
    ]:
        assert expected in paths, (expected, ps)


def test_duplicate_rule_names() -> None:
    ps = problems(DEFAULT + '[[rules]]\nname="a"\naction="allow"\n[[rules]]\nname="a"\naction="deny"\n')
    assert ps == ["rules[1].name: duplicate rule name 'a' (first at rules[0])"]


@pytest.mark.parametrize(
    "price, atomic",
    [
        ("0.001", 1000),
        ("1", 1_000_000),
        ("0.000001", 1),
        (0.25, 250_000),
        (2, 2_000_000),
        ("12.5", 12_500_000),
    ],
)
def test_prices_to_atomic_units(price: object, atomic: int) -> None:
    val = f'"{price}"' if isinstance(price, str) else str(price)
    p = loader.loads(DEFAULT + f'[[rules]]\nname="c"\naction={{ kind = "charge", price = {val} }}\n')
    assert p.rules[0].results["agent"].action.price == atomic  # type: ignore[index]


@pytest.mark.parametrize("price", ['"0"', '"-1"', '"0.0000001"', '"abc"', "true", '"NaN"', '"1e9"'])
def test_bad_prices(price: str) -> None:
    ps = problems(DEFAULT + f'[[rules]]\nname="c"\naction={{ kind = "charge", price = {price} }}\n')
    assert ps and ps[0].startswith("rules[0].action.price")


@pytest.mark.parametrize(
    "rate, count, period",
    [
        ("60/min", 60, 60.0),
        ("10/s", 10, 1.0),
        ("100/10s", 100, 10.0),
        ("5/day", 5, 86400.0),
        (" 3 / 2 h ", 3, 7200.0),
    ],
)
def test_rates(rate: str, count: int, period: float) -> None:
    p = loader.loads(
        DEFAULT + f'[[rules]]\nname="t"\naction={{ kind = "throttle", rate = "{rate}", per = "network" }}\n'
    )
    r = p.rules[0].results["human"].action.rate  # type: ignore[index]
    assert r is not None and (r.count, r.period, r.per) == (count, period, "network")


def test_include_relative_and_loops(tmp_path: Path) -> None:
    """Includes splice rules in place; a loop is reported, not followed forever."""
    (tmp_path / "a.toml").write_text(
        '[[rules]]\nname="from-a"\naction="allow"\n[[rules]]\ninclude="b.toml"\n'
    )
    (tmp_path / "b.toml").write_text('[[rules]]\ninclude="a.toml"\n')
    (tmp_path / "p.toml").write_text(DEFAULT + '[[rules]]\ninclude="a.toml"\n')
    with pytest.raises(PolicyError) as e:
        loader.load(tmp_path / "p.toml")
    assert any("include loop" in p for p in e.value.problems)
    (tmp_path / "b.toml").write_text('[[rules]]\nname="from-b"\nweight=3\n')
    p = loader.load(tmp_path / "p.toml")
    assert [r.name for r in p.rules] == ["from-a", "from-b"]


def test_syntax_error_and_missing_file(tmp_path: Path) -> None:
    assert "TOML syntax" in problems("[default\n")[0]
    with pytest.raises(PolicyError):
        loader.load(tmp_path / "nope.toml")


SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 50),
    st.text(max_size=12),
    st.sampled_from(["allow", "deny", "challenge", "/**", "10.0.0.0/8", "60/min", "0.001"]),
)
ACTION = st.one_of(
    SCALAR,
    st.dictionaries(
        st.sampled_from(["kind", "ways", "price", "min_bits", "rate", "burst", "per", "status", "x"]),
        st.one_of(SCALAR, st.lists(st.sampled_from(["prove", "puzzle", "pay", "credits", "x"]), max_size=3)),
        max_size=4,
    ),
)
RULE = st.dictionaries(
    st.sampled_from([*sorted(loader.RULE_KEYS), "include", "bogus"]),
    st.one_of(SCALAR, ACTION, st.lists(SCALAR, max_size=3)),
    max_size=6,
)
POLICY = st.fixed_dictionaries(
    {
        "default": st.one_of(
            SCALAR,
            st.dictionaries(st.sampled_from(["all", "human", "unknown", "agent", "zzz"]), ACTION, max_size=4),
        )
    },
    optional={
        "rules": st.one_of(SCALAR, st.lists(RULE, max_size=4)),
        "thresholds": st.lists(
            st.dictionaries(
                st.sampled_from(["name", "weight", "action", "actions"]),
                st.one_of(SCALAR, ACTION),
                max_size=4,
            ),
            max_size=2,
        ),
        "version": SCALAR,
    },
)


@settings(max_examples=300)
@given(POLICY)
def test_compile_never_crashes(data: dict) -> None:  # type: ignore[type-arg]
    """Arbitrary policy-shaped data compiles or raises PolicyError; nothing else escapes."""
    try:
        loader.compile_policy(data)
    except PolicyError as e:
        assert e.problems and all(isinstance(p, str) for p in e.problems)
