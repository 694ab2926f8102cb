"""The step graph of a definition: its order and each step's ancestors.

One order for everyone: the engine numbers steps by it (a step's `order`, its jobs'
priority), the views list steps by it, and validation reads ancestors from it, so a cycle is
refused the same way wherever it is first met.
"""

from __future__ import annotations

from stepflow.engine.model import DefinitionError, WorkflowDefinition


def topological_order(definition: WorkflowDefinition) -> list[str]:
    """Step ids, parents first, ties in definition order; a cycle is a `DefinitionError`."""
    index = {step.id: i for i, step in enumerate(definition.steps)}
    remaining = {step.id: set(step.parents) for step in definition.steps}
    order: list[str] = []
    while remaining:
        ready = sorted((s for s, ps in remaining.items() if not ps), key=index.__getitem__)
        if not ready:
            cycle = sorted(remaining, key=index.__getitem__)
            first = cycle[0]
            raise DefinitionError(
                f"$.steps[{index[first]}].parents",
                f"cycle between steps {', '.join(repr(s) for s in cycle)}",
            )
        for step_id in ready:
            order.append(step_id)
            del remaining[step_id]
        for parents in remaining.values():
            parents.difference_update(ready)
    return order


def ancestors(definition: WorkflowDefinition) -> dict[str, set[str]]:
    """Every step's ancestors (parents, their parents, ...); a cycle is a `DefinitionError`."""
    parents = {step.id: step.parents for step in definition.steps}
    result: dict[str, set[str]] = {}
    for step_id in topological_order(definition):
        found: set[str] = set()
        for parent in parents[step_id]:
            found.add(parent)
            found |= result[parent]
        result[step_id] = found
    return result
