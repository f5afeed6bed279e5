"""The dependency graph, derived from phases (never stored on its own).

Nodes are ``(file_path, task)``; an edge runs from a parent to each child whose ``depends_on``
names it. ``depends_on = "topic"`` matches every phase of that topic in the same file,
``"topic:job"`` only that task. Parents resolve within the child's own file, as flowlord's do.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Protocol

import networkx as nx

Node = tuple[str, str]


class PhaseLike(Protocol):
    """What the graph needs of a phase; specs and stored rows both have it."""

    @property
    def file_path(self) -> str: ...

    @property
    def task(self) -> str: ...

    @property
    def depends_on(self) -> str: ...


def topic_of(task: str) -> str:
    return task.partition(":")[0]


class ParentIndex:
    """Finds the phases a ``depends_on`` names, per file, in constant time."""

    def __init__(self, phases: Iterable[PhaseLike]) -> None:
        self._by_task: dict[tuple[str, str], list[str]] = defaultdict(list)
        self._by_topic: dict[tuple[str, str], list[str]] = defaultdict(list)
        for phase in phases:
            self._by_task[(phase.file_path, phase.task)].append(phase.task)
            self._by_topic[(phase.file_path, topic_of(phase.task))].append(phase.task)

    def parents(self, file_path: str, depends_on: str) -> list[str]:
        """Tasks in ``file_path`` that ``depends_on`` matches (empty when none)."""
        if ":" in depends_on:
            return list(self._by_task.get((file_path, depends_on), ()))
        return list(self._by_topic.get((file_path, depends_on), ()))


def build(phases: Iterable[PhaseLike]) -> nx.DiGraph:
    """A DiGraph of every phase, with parent → child edges; dangling parents add no edge."""
    phases = list(phases)
    index = ParentIndex(phases)
    graph: nx.DiGraph = nx.DiGraph()
    # In bulk: the per-call overhead of add_node/add_edge dominated a cold load of many files.
    graph.add_nodes_from(
        ((phase.file_path, phase.task), {"depends_on": phase.depends_on}) for phase in phases
    )
    graph.add_edges_from(
        ((phase.file_path, parent), (phase.file_path, phase.task))
        for phase in phases
        if phase.depends_on
        for parent in index.parents(phase.file_path, phase.depends_on)
    )
    return graph


def cycles(graph: nx.DiGraph) -> Iterator[list[Node]]:
    """Each elementary cycle once, as a node list starting at its smallest node."""
    if nx.is_directed_acyclic_graph(graph):  # the usual case, and linear; cycle search is not
        return
    for cycle in nx.simple_cycles(graph):
        start = cycle.index(min(cycle))
        yield cycle[start:] + cycle[:start]


def describe_cycle(cycle: list[Node]) -> str:
    """``dependency cycle: a -> b -> a``"""
    names = [task for _, task in cycle] + [cycle[0][1]]
    return "dependency cycle: " + " -> ".join(names)


def roots(graph: nx.DiGraph) -> list[Node]:
    return sorted(node for node in graph if graph.in_degree(node) == 0)


def leaves(graph: nx.DiGraph) -> list[Node]:
    return sorted(node for node in graph if graph.out_degree(node) == 0)


def topological_order(graph: nx.DiGraph) -> list[Node]:
    """Parents before children, ties broken by name; nodes on a cycle are left out."""
    if nx.is_directed_acyclic_graph(graph):
        return list(nx.lexicographical_topological_sort(graph))
    acyclic = graph.copy()
    for cycle in nx.simple_cycles(graph):
        acyclic.remove_nodes_from(n for n in cycle if n in acyclic)
    return list(nx.lexicographical_topological_sort(acyclic))


def to_dot(graph: nx.DiGraph) -> str:
    """Graphviz text, one cluster per workflow file."""
    lines = ["digraph tomlflow {", "  rankdir=LR;"]
    by_file: dict[str, list[str]] = defaultdict(list)
    for file_path, task in sorted(graph):
        by_file[file_path].append(task)
    for number, (file_path, tasks) in enumerate(sorted(by_file.items())):
        lines.append(f"  subgraph cluster_{number} {{")
        lines.append(f"    label={_quote(file_path)};")
        lines.extend(
            f"    {_quote(file_path + '/' + task)} [label={_quote(task)}];" for task in tasks
        )
        lines.append("  }")
    for (pf, pt), (cf, ct) in sorted(graph.edges):
        lines.append(f"  {_quote(pf + '/' + pt)} -> {_quote(cf + '/' + ct)};")
    lines.append("}")
    return "\n".join(lines)


def to_mermaid(graph: nx.DiGraph) -> str:
    """Mermaid flowchart text, one subgraph per workflow file."""
    ids = {node: f"n{number}" for number, node in enumerate(sorted(graph))}
    lines = ["flowchart LR"]
    by_file: dict[str, list[Node]] = defaultdict(list)
    for node in sorted(graph):
        by_file[node[0]].append(node)
    for file_path, nodes in sorted(by_file.items()):
        lines.append(f'  subgraph {ids[nodes[0]]}_file["{_mermaid_text(file_path)}"]')
        lines.extend(f'    {ids[node]}["{_mermaid_text(node[1])}"]' for node in nodes)
        lines.append("  end")
    lines.extend(f"  {ids[parent]} --> {ids[child]}" for parent, child in sorted(graph.edges))
    return "\n".join(lines)


def to_text(graph: nx.DiGraph) -> str:
    """An indented tree per file: each root, then its children below it."""
    lines: list[str] = []
    for file_path in sorted({node[0] for node in graph}):
        lines.append(file_path)
        seen: set[Node] = set()  # per file: a child shared by two roots is drawn once
        for root in (node for node in roots(graph) if node[0] == file_path):
            _walk(graph, root, 1, lines, seen)
    return "\n".join(lines)


def _walk(graph: nx.DiGraph, node: Node, depth: int, lines: list[str], seen: set[Node]) -> None:
    marker = " (see above)" if node in seen else ""
    lines.append("  " * depth + "└─ " + node[1] + marker)
    if marker:
        return
    seen.add(node)
    for child in sorted(graph.successors(node)):
        _walk(graph, child, depth + 1, lines, seen)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")
