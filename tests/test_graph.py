"""Graph: parent → child edges from depends_on, and the drawings of it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from scheduler import graph


@dataclass(frozen=True)
class P:
    file_path: str
    task: str
    depends_on: str = ""


# a.toml: extract:orders → transform → {report, publish};  extract:users has no children
# b.toml: load (its own root), and "orphan" whose parent is not in its file
PHASES = [
    P("a.toml", "extract:orders"),
    P("a.toml", "extract:users"),
    P("a.toml", "transform", "extract:orders"),
    P("a.toml", "report", "transform"),
    P("a.toml", "publish", "transform"),
    P("b.toml", "load"),
    P("b.toml", "orphan", "transform"),
]


@pytest.fixture
def dag() -> graph.nx.DiGraph:
    return graph.build(PHASES)


def test_edges(dag: graph.nx.DiGraph) -> None:
    assert sorted(dag.edges) == [
        (("a.toml", "extract:orders"), ("a.toml", "transform")),
        (("a.toml", "transform"), ("a.toml", "publish")),
        (("a.toml", "transform"), ("a.toml", "report")),
    ]
    assert dag.number_of_nodes() == len(PHASES)


def test_depends_on_topic_links_every_job() -> None:
    dag = graph.build([P("f", "t:a"), P("f", "t:b"), P("f", "c", "t")])
    assert sorted(dag.predecessors(("f", "c"))) == [("f", "t:a"), ("f", "t:b")]


def test_parents_resolve_within_the_file() -> None:
    dag = graph.build([P("a", "p"), P("b", "p"), P("b", "c", "p")])
    assert list(dag.predecessors(("b", "c"))) == [("b", "p")]


def test_roots_and_leaves(dag: graph.nx.DiGraph) -> None:
    assert graph.roots(dag) == [
        ("a.toml", "extract:orders"),
        ("a.toml", "extract:users"),
        ("b.toml", "load"),
        ("b.toml", "orphan"),
    ]
    assert graph.leaves(dag) == [
        ("a.toml", "extract:users"),
        ("a.toml", "publish"),
        ("a.toml", "report"),
        ("b.toml", "load"),
        ("b.toml", "orphan"),
    ]


def test_topological_order_puts_parents_first(dag: graph.nx.DiGraph) -> None:
    order = graph.topological_order(dag)
    assert sorted(order) == sorted(dag.nodes)
    for parent, child in dag.edges:
        assert order.index(parent) < order.index(child)
    assert order[0] == ("a.toml", "extract:orders")


def test_topological_order_leaves_out_cycles() -> None:
    dag = graph.build([P("f", "r"), P("f", "a", "b"), P("f", "b", "a"), P("f", "c", "r")])
    assert graph.topological_order(dag) == [("f", "r"), ("f", "c")]


def test_cycles_and_their_description() -> None:
    dag = graph.build([P("f", "b", "a"), P("f", "a", "b"), P("f", "s", "s")])
    described = sorted(graph.describe_cycle(cycle) for cycle in graph.cycles(dag))
    assert described == ["dependency cycle: a -> b -> a", "dependency cycle: s -> s"]


def test_dot(dag: graph.nx.DiGraph) -> None:
    dot = graph.to_dot(dag)
    assert dot.startswith("digraph tomlflow {")
    assert dot.rstrip().endswith("}")
    assert '"a.toml/extract:orders" -> "a.toml/transform";' in dot
    assert '"a.toml/transform" -> "a.toml/report";' in dot
    assert '"a.toml/transform" -> "a.toml/publish";' in dot
    assert dot.count("->") == 3
    assert 'label="b.toml";' in dot


def test_dot_quotes_names() -> None:
    dot = graph.to_dot(graph.build([P('q"f', "t")]))
    assert '"q\\"f/t" [label="t"];' in dot


def test_mermaid(dag: graph.nx.DiGraph) -> None:
    text = graph.to_mermaid(dag)
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    ids = {}
    for line in lines:
        if '["' in line and "subgraph" not in line:
            node_id, _, label = line.strip().partition('["')
            ids[label.rstrip('"]')] = node_id
    assert f"  {ids['extract:orders']} --> {ids['transform']}" in lines
    assert f"  {ids['transform']} --> {ids['report']}" in lines
    assert f"  {ids['transform']} --> {ids['publish']}" in lines
    assert text.count("-->") == 3
    assert '["a.toml"]' in text and '["b.toml"]' in text


def test_text_tree(dag: graph.nx.DiGraph) -> None:
    assert graph.to_text(dag).splitlines() == [
        "a.toml",
        "  └─ extract:orders",
        "    └─ transform",
        "      └─ publish",
        "      └─ report",
        "  └─ extract:users",
        "b.toml",
        "  └─ load",
        "  └─ orphan",
    ]


def test_text_tree_marks_shared_children() -> None:
    dag = graph.build([P("f", "t:a"), P("f", "t:b"), P("f", "c", "t")])
    assert graph.to_text(dag).splitlines() == [
        "f",
        "  └─ t:a",
        "    └─ c",
        "  └─ t:b",
        "    └─ c (see above)",
    ]


def test_empty_graph_draws_nothing() -> None:
    dag = graph.build([])
    assert graph.to_text(dag) == ""
    assert graph.roots(dag) == [] and graph.topological_order(dag) == []
