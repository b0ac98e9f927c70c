"""The address grammar: parse/format round trip, resolution, suggestions."""

import keras
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kerasurgery as ks
from kerasurgery.address.grammar import Address, format_address, parse, point_address
from kerasurgery.ir.resolve import Point, Resolver
from reference import ACTIVATION_LAYERS, ATTENTION_LAYERS, has_fused_activation
from zoo import ZOO, attention, cnn_bn, mlp, nested_functional, recurrent, shared



class TestParse:
    @pytest.mark.parametrize(
        "text, expected",
        [
            ("dense_1", Address("dense_1")),
            ("dense_1:pre", Address("dense_1", port="pre")),
            ("encoder/conv@1", Address("conv", path=("encoder",), call=1)),
            ("mha:scores", Address("mha", port="scores")),
            ("lstm[1]", Address("lstm", index=1)),
            ("base/block_1/conv@0[2]:pre", Address("conv", ("base", "block_1"), 0, 2, "pre")),
            ("`dense:0`", Address("dense:0")),  # names holding grammar characters are quoted
            ("`blk:conv`:pre", Address("blk:conv", port="pre")),
            ("`enc/x`/`d@1`@2[0]", Address("d@1", ("enc/x",), 2, 0)),
            ("`a``b`", Address("a`b")),
        ],
    )
    def test_examples(self, text, expected):
        assert parse(text) == expected
        assert format_address(expected) == text

    @given(
        path=st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), max_size=3),
        name=st.from_regex(r"[a-z][a-z0-9_.-]{0,8}", fullmatch=True),
        call=st.none() | st.integers(0, 20),
        index=st.none() | st.integers(0, 5),
        port=st.none() | st.sampled_from(["pre", "scores"]),
    )
    def test_round_trip(self, path, name, call, index, port):
        address = Address(name, tuple(path), call, index, port)
        assert parse(format_address(address)) == address
        assert format_address(parse(format_address(address))) == format_address(address)

    @given(
        path=st.lists(st.text(min_size=1, max_size=6), max_size=3),
        name=st.text(min_size=1, max_size=8),
        call=st.none() | st.integers(0, 20),
        index=st.none() | st.integers(0, 5),
        port=st.none() | st.sampled_from(["pre", "scores"]),
    )
    def test_round_trip_of_any_name(self, path, name, call, index, port):
        """Any Keras name (grammar characters, backticks, spaces) survives format -> parse."""
        address = Address(name, tuple(path), call, index, port)
        assert parse(format_address(address)) == address

    @pytest.mark.parametrize("bad", ["", "a//b", "/a", "a/", 3, None, "dense:0", "d:pre:x", "`open", "d[x]"])
    def test_malformed(self, bad):
        with pytest.raises(ks.AddressError, match="Expected"):
            parse(bad)

    def test_point_address(self):
        assert point_address("enc/lstm@1", 2, None) == "enc/lstm@1[2]"
        assert point_address("d", None, "pre") == "d:pre"


class TestPoints:
    def test_mlp_order_and_ports(self):
        assert ks.points(mlp()) == [
            "x", "dense_1:pre", "dense_1", "dense_2:pre", "dense_2", "predictions:pre", "predictions",
        ]

    def test_activation_layers_have_pre(self):
        pts = ks.points(cnn_bn())
        assert "relu:pre" in pts and "bn" in pts and "bn:pre" not in pts
        assert pts.index("conv:pre") < pts.index("conv") < pts.index("bn") < pts.index("relu")

    def test_nested_shared_multi_output_attention(self):
        assert "encoder/inner_dense:pre" in ks.points(nested_functional())
        assert ks.points(shared())[1:5] == ["shared@0:pre", "shared@0", "shared@1:pre", "shared@1"]
        assert {"lstm[0]", "lstm[1]", "lstm[2]"} <= set(ks.points(recurrent()))
        pts = ks.points(attention())
        assert "mha:scores" in pts and "gqa:scores" in pts

    def test_pattern(self):
        model = mlp()
        assert ks.points(model, "dense_*") == ["dense_1", "dense_2"]
        assert ks.points(model, "*:pre") == ["dense_1:pre", "dense_2:pre", "predictions:pre"]

    def test_points_of_graph_equal_points_of_model(self):
        model = cnn_bn()
        assert ks.points(ks.to_graph(model)) == ks.points(model)


def expected_points(graph) -> dict:
    """{address: Point} of every point, spelled from node keys: ``key`` (or ``key[i]`` for an
    operation with several outputs), ``key:pre`` for a fused activation or an activation layer,
    ``key:scores`` for an attention layer (the classes listed in tests/reference.py)."""
    expected = {}
    for key, data in graph.nodes(data=True):
        n = len(data["output_shapes"])
        if n == 1:
            expected[key] = Point(key, 0, None)
        else:
            expected.update({f"{key}[{i}]": Point(key, i, None) for i in range(n)})
        op = data["op"]
        if has_fused_activation(op) or isinstance(op, ACTIVATION_LAYERS):
            expected[f"{key}:pre"] = Point(key, 0, "pre")
        if isinstance(op, ATTENTION_LAYERS):
            expected[f"{key}:scores"] = Point(key, 0, "scores")
    for alias, refs in graph.graph.get("aliases", {}).items():  # a nested model call: its outputs
        if len(refs) == 1:
            expected[alias] = Point(refs[0].node, refs[0].index, None)
        else:
            expected.update({f"{alias}[{i}]": Point(r.node, r.index, None) for i, r in enumerate(refs)})
    return expected


class TestResolve:
    @pytest.mark.parametrize("name", sorted(ZOO))
    def test_every_point_resolves(self, name):
        """Each address resolves to the node, output index and port its spelling names,
        computed here from the graph's nodes and the layers' classes alone."""
        graph = ks.to_graph(ZOO[name]())
        expected = expected_points(graph)
        r = Resolver(graph)
        assert sorted(r.points()) == sorted(expected)
        for address, point in expected.items():
            assert r.resolve_one(address) == point, address
        for key, data in graph.nodes(data=True):  # "@0" names a layer called once
            if data["kind"] != "input" and "@" not in key and key in expected:
                assert r.resolve_one(f"{key}@0") == expected[key], key

    @pytest.mark.parametrize("name", sorted(ZOO))
    def test_points_are_in_topological_order(self, name):
        """Every address of a node comes after every address of its parents; a node lists
        :pre, then its outputs, then :scores, next to each other."""
        graph = ks.to_graph(ZOO[name]())
        every, expected = ks.points(graph), expected_points(graph)
        position = {}
        for i, address in enumerate(every):
            position.setdefault(expected[address].node, []).append(i)
        for parent, child in graph.edges:
            assert max(position[parent]) < min(position[child]), (parent, child)
        for key, indices in position.items():
            assert indices == list(range(indices[0], indices[0] + len(indices))), key
            names = [every[i] for i in indices]
            assert names == sorted(names, key=lambda a: (not a.endswith(":pre"), a.endswith(":scores"))), names

    def test_at_zero_accepted_for_single_call(self):
        r = Resolver(ks.to_graph(mlp()))
        assert r.resolve_one("dense_1@0") == r.resolve_one("dense_1")

    def test_unknown_suggests_close_matches(self):
        with pytest.raises(ks.AddressError, match="dense_1") as info:
            Resolver(ks.to_graph(mlp())).resolve_one("dense_11")
        assert "dense_1" in info.value.suggestions
        assert "kerasurgery.points" in str(info.value)

    def test_ambiguous_shared_layer_lists_call_sites(self):
        with pytest.raises(ks.AddressError, match=r"shared@0.*shared@1"):
            Resolver(ks.to_graph(shared())).resolve_one("shared")

    def test_call_site_out_of_range(self):
        with pytest.raises(ks.AddressError, match="call site"):
            Resolver(ks.to_graph(shared())).resolve_one("shared@7")

    def test_port_that_does_not_apply(self):
        x = keras.Input((3,), name="x")
        c = keras.layers.Concatenate(name="concat")([x, x])
        model = keras.Model(x, keras.layers.Dense(2, activation="relu", name="d")(c))
        with pytest.raises(ks.AddressError, match="'concat' \\(Concatenate\\) has no ':pre' port.*ports: none") as info:
            Resolver(ks.to_graph(model)).resolve_one("concat:pre")
        assert info.value.suggestions == ["d:pre"]

    def test_unknown_port(self):
        with pytest.raises(ks.AddressError, match="Expected a port among"):
            Resolver(ks.to_graph(mlp())).resolve_one("dense_1:post")

    def test_scores_on_non_attention(self):
        with pytest.raises(ks.AddressError, match="not an attention layer"):
            Resolver(ks.to_graph(mlp())).resolve_one("dense_1:scores")

    def test_multi_output_needs_index(self):
        with pytest.raises(ks.AddressError, match=r"returns 3 tensors.*lstm\[0\]"):
            Resolver(ks.to_graph(recurrent())).resolve_one("lstm")
        with pytest.raises(ks.AddressError, match="index below 3"):
            Resolver(ks.to_graph(recurrent())).resolve_one("lstm[3]")

    def test_select_globs_lists_and_predicates(self):
        r = Resolver(ks.to_graph(mlp()))
        assert list(r.select("*:pre")) == ["dense_1:pre", "dense_2:pre", "predictions:pre"]
        assert list(r.select(["dense_2", "dense_1", "dense_2"])) == ["dense_2", "dense_1"]
        assert list(r.select(lambda p: p.startswith("pred"))) == ["predictions:pre", "predictions"]

    @pytest.mark.parametrize("bad, match", [([], "at least one"), ("nothing*", "matches none"),
                                            (lambda p: False, "accepted none"), (42, "Expected `points`")])
    def test_bad_selections(self, bad, match):
        with pytest.raises(ks.AddressError, match=match):
            Resolver(ks.to_graph(mlp())).select(bad)
