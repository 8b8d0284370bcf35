"""The per-parameter policy table: which parameters are frozen, and their learning-rate and weight-decay multipliers.

`optim.policy` is a tuple of rules, each a string `"REGEX=ACTION[,ACTION...]"`:

    optim.policy = ("backbone/.*=frozen", "head/.*=lr:10", ".*/bias=wd:0")

- REGEX is matched (`re.fullmatch`) against the parameter's path, its keys joined by '/', e.g. `Dense_0/kernel`
  or `backbone/Conv_0/bias` (`jtrain.policy.param_paths(params)` lists them). The rule is split at its last '=',
  so the regex may itself contain '='.
- ACTION is `frozen` (the parameter never changes and carries no optimizer state), `lr:MULT` (multiplies the
  scheduled learning rate) or `wd:MULT` (multiplies `optim.weight_decay`; 1-D parameters such as biases and
  norm scales are never decayed, whatever the rule says).
- Every rule whose regex matches applies; for each attribute the first matching rule that sets it wins, so list
  the specific rules before the general ones. Parameters that no rule matches keep lr 1, wd 1, trainable.
- A rule that matches no parameter is an error (a typo would otherwise silently train everything).

jtrain.optim turns the resolved table into an optax partition: one group per distinct (lr, wd) multiplier pair,
and the frozen group, which gets a stateless transform. The fine-tuning work reuses the same table.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax

from jtrain.errors import ConfigError

KEY = "optim.policy"  # the config key every error names
FROZEN = "frozen"


@dataclasses.dataclass(frozen=True)
class Rule:
    text: str  # the rule as written, for error messages
    pattern: re.Pattern
    frozen: bool | None = None  # None: this rule does not set the attribute
    lr_mult: float | None = None
    wd_mult: float | None = None


@dataclasses.dataclass(frozen=True)
class ParamPolicy:
    frozen: bool = False
    lr_mult: float = 1.0
    wd_mult: float = 1.0

    @property
    def label(self) -> str:
        """The optimizer group this parameter belongs to (parameters with equal policies share one)."""
        return FROZEN if self.frozen else f"lr{self.lr_mult:g}_wd{self.wd_mult:g}"


def parse(rules: tuple[str, ...] | list[str]) -> list[Rule]:
    """Parses `optim.policy`; a malformed rule raises ConfigError naming it."""
    parsed = []
    for text in rules:
        if not isinstance(text, str) or "=" not in text:
            raise ConfigError(f"config key {KEY!r}: rule {text!r} is not 'REGEX=ACTION' (e.g. 'head/.*=lr:10')")
        regex, _, actions = text.rpartition("=")
        try:
            pattern = re.compile(regex)
        except re.error as e:
            raise ConfigError(f"config key {KEY!r}: rule {text!r}: bad regex: {e}") from e
        fields: dict[str, Any] = {}
        for action in (a.strip() for a in actions.split(",")):
            name, _, value = action.partition(":")
            if action == FROZEN:
                fields["frozen"] = True
            elif name in ("lr", "wd") and value:
                try:
                    mult = float(value)
                except ValueError:
                    raise ConfigError(f"config key {KEY!r}: rule {text!r}: {action!r} needs a number") from None
                if mult < 0:
                    raise ConfigError(f"config key {KEY!r}: rule {text!r}: multiplier must be >= 0")
                fields["lr_mult" if name == "lr" else "wd_mult"] = mult
            else:
                raise ConfigError(f"config key {KEY!r}: rule {text!r}: unknown action {action!r}; "
                                  f"known: frozen, lr:MULT, wd:MULT")
        parsed.append(Rule(text=text, pattern=pattern, **fields))
    return parsed


def param_path(key_path) -> str:
    """A pytree key path as the '/'-joined string the rules match, e.g. 'Dense_0/kernel'."""
    return jax.tree_util.keystr(key_path, simple=True, separator="/")


def param_paths(params: Any) -> list[str]:
    return [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def resolve(params: Any, rules: list[Rule]) -> Any:
    """A pytree like `params` holding each parameter's ParamPolicy. Only the tree structure is read, so
    abstract (shape-only) or masked trees work too."""
    used = [False] * len(rules)

    def policy_of(key_path, _leaf) -> ParamPolicy:
        path = param_path(key_path)
        chosen: dict[str, Any] = {}
        for i, rule in enumerate(rules):
            if not rule.pattern.fullmatch(path):
                continue
            used[i] = True
            for name in ("frozen", "lr_mult", "wd_mult"):
                value = getattr(rule, name)
                if value is not None and name not in chosen:
                    chosen[name] = value
        return ParamPolicy(**chosen)

    table = jax.tree.map_with_path(policy_of, params)
    unused = [rule.text for rule, hit in zip(rules, used) if not hit]
    if unused:
        raise ConfigError(f"config key {KEY!r}: rule {unused[0]!r} matches no parameter "
                          f"(paths look like {param_paths(params)[0]!r})")
    return table


def labels(params: Any, rules: list[Rule]) -> Any:
    """Each parameter's group label, for optax.partition."""
    return jax.tree.map(lambda p: p.label, resolve(params, rules), is_leaf=lambda x: isinstance(x, ParamPolicy))


def describe(params: Any, rules: list[Rule]) -> list[tuple[str, ParamPolicy]]:
    """(path, policy) for every parameter: what a run will freeze and scale, for reports and tests."""
    table = resolve(params, rules)
    leaves = jax.tree.leaves(table, is_leaf=lambda x: isinstance(x, ParamPolicy))
    return list(zip(param_paths(params), leaves))
