"""Random functional Keras architectures (the per-point reference is `tests/reference.py`).

`architectures()` is a hypothesis strategy whose examples are `Program` objects:
the Python source of a small functional model, one statement per layer, layer
call or raw op. Its ``repr`` is that source, so a failing example prints a
program that can be pasted and run. `Program.build()` executes it and returns
the model.

Tensors come in three kinds with fixed spatial sizes and small feature
dimensions: ``vec`` (batch, F), ``seq`` (batch, 4, F) and ``img``
(batch, 4, 4, F). The generator tracks each tensor's kind and feature
dimension, so every drawn program is a valid Keras model: no example is thrown
away. What it draws from:

- Dense, EinsumDense, Conv1D/Conv2D (and, rarely, the other separable
  convolutions), each with a random fused activation (or none), sometimes
  called with ``inputs=`` as a keyword;
- BatchNormalization (random statistics), Dropout, activation layers
  (Activation, ReLU, LeakyReLU, ELU, Softmax, PReLU);
- Add, Subtract, Multiply, Average, Maximum, Concatenate;
- MultiHeadAttention and GroupedQueryAttention (positional or keyword call,
  optional key, optional causal mask);
- raw ``keras.ops``: add, subtract, multiply, maximum, ``x * c``, tanh,
  sigmoid, relu, negative, concatenate, mean (keepdims, or over a spatial
  axis), split (an op with two outputs);
- shape changes: global pooling, Flatten, RepeatVector;
- a layer object called again later (shared layers, also across nesting
  levels);
- nested Functional (1-2 inputs as a list or dict, 1-2 outputs) and
  Sequential sub-models, nested up to `MAX_DEPTH` levels, called once or twice,
  sometimes with ``training=False``;
- 1-3 model inputs (single, list or dict) and 1-3 outputs (single, list or
  dict).

Layer names are explicit (``f<n>_<class>``, never a Keras auto-name) so that
raw ops, which Keras names itself, cannot collide with them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
from hypothesis import strategies as st


SPATIAL = 4
MAX_DEPTH = 3  # top level is depth 0: sub-models nest up to depth 2 inside it
DIMS = (2, 3, 4)
FUSED = (None, None, "relu", "tanh", "sigmoid", "softmax", "gelu", "elu", "selu", "swish",
         "relu6", "softplus", "leaky_relu", "hard_sigmoid", "linear")

PREAMBLE = """\
import keras
from keras import layers, ops


def rnd(stddev=0.5):
    return keras.initializers.RandomNormal(stddev=stddev)


def pos(low=0.5, high=1.5):
    return keras.initializers.RandomUniform(low, high)
"""


def shape_of(kind: str, dim: int) -> tuple:
    return {"vec": (dim,), "seq": (SPATIAL, dim), "img": (SPATIAL, SPATIAL, dim)}[kind]


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A symbolic tensor of the program being generated."""

    var: str
    kind: str
    dim: int


@dataclasses.dataclass(frozen=True)
class Callee:
    """A layer or sub-model variable, with the signature of its first call."""

    var: str
    ins: tuple  # ((kind, dim), ...) positional tensor inputs
    outs: tuple  # ((kind, dim), ...)
    call: str  # "single", "mha", "list", "dict:<k1>,<k2>"
    depth: int  # nesting depth of the deepest sub-model inside (0 for layers)


@dataclasses.dataclass
class Program:
    """The source of a random model; ``repr`` is runnable Python."""

    lines: list[str]
    features: frozenset = frozenset()

    @property
    def source(self) -> str:
        return PREAMBLE + "\n" + "\n".join(self.lines) + "\n"

    def __repr__(self) -> str:
        return "Program(\n" + self.source + ")"

    def _repr_pretty_(self, printer, cycle) -> None:  # how hypothesis prints examples
        printer.text(repr(self))

    def build(self) -> keras.Model:
        namespace: dict[str, Any] = {}
        exec(compile(self.source, "<fuzzed model>", "exec"), namespace)  # noqa: S102 - generated here
        return namespace["model"]


# ---------------------------------------------------------------------------
# the generator


class _Gen:
    """Draws one program; keeps the symbolic state every choice depends on."""

    def __init__(self, draw):
        self.draw = draw
        self.lines: list[str] = []
        self.n = 0
        self.callables: list[Callee] = []
        self.features: set[str] = set()
        self.reach = [0]  # per scope being generated: deepest callable called in it

    # -- helpers ---------------------------------------------------------
    def fresh(self, stem: str) -> str:
        self.n += 1
        return f"{stem}{self.n}"

    def pick(self, options):
        return self.draw(st.sampled_from(list(options)))

    def some(self, items: list, low: int, high: int) -> list:
        """Between `low` and `high` distinct items of `items`, in a drawn order."""
        k = self.draw(st.integers(low, min(high, len(items))))
        rest = list(items)  # k draws, not a permutation of everything: keeps examples small
        return [rest.pop(self.draw(st.integers(0, len(rest) - 1))) for _ in range(k)]

    def emit(self, line: str) -> None:
        self.lines.append(line)

    def define(self, ctor: str, tag: str) -> str:
        """Emit ``lN = layers.Ctor(..., name="fN_tag")``; returns the variable."""
        var = self.fresh("l")
        sep = "" if ctor.endswith("()") else ", "
        self.emit(f'{var} = {ctor[:-1]}{sep}name="f{self.n}_{tag}")')
        return var

    def allowed(self, c: Callee, depth: int) -> bool:
        return depth + c.depth <= MAX_DEPTH - 1

    # -- single-input layers (also the layers of a Sequential) -----------
    def single_steps(self, t: Tensor) -> list[str]:
        steps = ["dense", "dense", "bn", "dropout", "act"]
        if t.kind in ("vec", "seq"):
            steps.append("einsum")
        if t.kind == "seq":
            steps += ["conv1d", "conv1d", "pool_seq", "flatten", "conv_other"]
        elif t.kind == "img":
            steps += ["conv2d", "conv2d", "pool_img", "flatten", "conv_other"]
        else:
            steps += ["repeat"]
        return steps

    def make_single(self, step: str, t: Tensor) -> Callee:
        """Define one single-input layer for an input like `t` and register it."""
        kind, dim = t.kind, t.dim
        if step == "dense":
            dim = self.pick(DIMS + (5,))
            act = self.pick(FUSED)
            var = self.define(f"layers.Dense({dim}, activation={act!r}, bias_initializer=rnd())", "dense")
        elif step == "einsum":
            dim, act = self.pick(DIMS), self.pick(FUSED)
            spec = '"ab,bc->ac", output_shape=%d, bias_axes="c"' if kind == "vec" else (
                '"abc,cd->abd", output_shape=(SPATIAL_, %d), bias_axes="d"'
            )
            spec = spec.replace("SPATIAL_", str(SPATIAL))
            var = self.define(f"layers.EinsumDense({spec % dim}, activation={act!r}, bias_initializer=rnd())",
                              "einsum")
        elif step in ("conv1d", "conv2d"):
            dim, k, act = self.pick(DIMS), self.draw(st.integers(1, 3)), self.pick(FUSED)
            cls = "Conv1D" if step == "conv1d" else "Conv2D"
            var = self.define(
                f'layers.{cls}({dim}, {k}, padding="same", activation={act!r}, bias_initializer=rnd())',
                cls.lower(),
            )
        elif step == "conv_other":
            act = self.pick(FUSED)
            rank = "1D" if kind == "seq" else "2D"
            cls = self.pick([f"SeparableConv{rank}", f"DepthwiseConv{rank}", f"Conv{rank}Transpose"])
            width = "" if cls.startswith("Depthwise") else f"{self.pick(DIMS)}, "
            var = self.define(
                f'layers.{cls}({width}2, padding="same", activation={act!r}, bias_initializer=rnd())',
                cls.lower(),
            )
            if width:
                dim = int(width[:-2])
        elif step == "bn":
            var = self.define(
                "layers.BatchNormalization(beta_initializer=rnd(), gamma_initializer=pos(), "
                "moving_mean_initializer=rnd(), moving_variance_initializer=pos())",
                "bn",
            )
        elif step == "dropout":
            var = self.define(f"layers.Dropout({self.pick([0.1, 0.5])})", "dropout")
        elif step == "act":
            ctor = self.pick([
                'layers.Activation("relu")', 'layers.Activation("tanh")', 'layers.Activation("softmax")',
                'layers.Activation("gelu")', "layers.ReLU()", "layers.ReLU(max_value=1.0)",
                "layers.LeakyReLU(negative_slope=0.2)", "layers.ELU()", "layers.Softmax()",
                "layers.PReLU(alpha_initializer=rnd(0.3))",
            ])
            var = self.define(ctor, "act")
        elif step in ("pool_seq", "pool_img"):
            rank = "1D" if step == "pool_seq" else "2D"
            var = self.define(f"layers.{self.pick(['GlobalAveragePooling', 'GlobalMaxPooling'])}{rank}()", "pool")
            kind = "vec"
        elif step == "flatten":
            var = self.define("layers.Flatten()", "flatten")
            kind, dim = "vec", dim * (SPATIAL if t.kind == "seq" else SPATIAL * SPATIAL)
        elif step == "repeat":
            var = self.define(f"layers.RepeatVector({SPATIAL})", "repeat")
            kind = "seq"
        else:  # pragma: no cover
            raise AssertionError(step)
        self.features.add(step)
        c = Callee(var, ((t.kind, t.dim),), ((kind, dim),), "single", 0)
        self.callables.append(c)
        return c

    def invoke(self, c: Callee, args: list[Tensor]) -> list[Tensor]:
        """Emit a call of layer or sub-model `c` on `args`; returns its outputs."""
        outs = [Tensor(self.fresh("t"), kind, dim) for kind, dim in c.outs]
        self.reach[-1] = max(self.reach[-1], c.depth)
        training = ", training=False" if c.depth and self.draw(st.integers(0, 2)) == 0 else ""
        if c.call == "single":
            keyword = self.draw(st.integers(0, 5)) == 0
            given = f"inputs={args[0].var}" if keyword else args[0].var
            if keyword:
                self.features.add("keyword_inputs")
        elif c.call in ("mha", "list"):
            given = ", ".join(a.var for a in args)
            given = given if c.call == "mha" else f"[{given}]"
        else:
            keys = c.call.split(":", 1)[1].split(",")
            given = "{" + ", ".join(f'"{k}": {a.var}' for k, a in zip(keys, args)) + "}"
        target = ", ".join(o.var for o in outs)
        self.emit(f"{target} = {c.var}({given}{training})")
        return outs

    # -- steps of a functional block --------------------------------------
    def step_single(self, pool: list[Tensor], depth: int) -> list[Tensor]:
        t = self.pick(pool[-3:] if self.draw(st.booleans()) else pool)
        return self.invoke(self.make_single(self.pick(self.single_steps(t)), t), [t])

    def step_merge(self, pool: list[Tensor], depth: int) -> list[Tensor]:
        same = _groups(pool, lambda t: (t.kind, t.dim))
        kinds = _groups(pool, lambda t: t.kind)
        options = (["Add", "Subtract", "Multiply", "Average", "Maximum"] if same else []) + (
            ["Concatenate"] if kinds else []
        )
        if not options:
            return []
        cls = self.pick(options)
        group = self.pick(same if cls != "Concatenate" else kinds)
        ts = self.some(group, 2, 2 if cls == "Subtract" else 3)
        var = self.define(f"layers.{cls}()", cls.lower())
        out = Tensor(self.fresh("t"), ts[0].kind, sum(t.dim for t in ts) if cls == "Concatenate" else ts[0].dim)
        self.emit(f"{out.var} = {var}([{', '.join(t.var for t in ts)}])")
        self.features.add("merge")
        return [out]

    def step_mha(self, pool: list[Tensor], depth: int) -> list[Tensor]:
        seqs = [t for t in pool if t.kind == "seq"]
        q, v = self.pick(seqs), self.pick(seqs)
        if self.draw(st.integers(0, 3)) == 0:  # GroupedQueryAttention wants value dim == query dim
            v = self.pick([t for t in seqs if t.dim == q.dim])
            heads = self.pick([(1, 1), (2, 1), (2, 2)])
            var = self.define(
                f"layers.GroupQueryAttention(head_dim={self.pick(DIMS)}, num_query_heads={heads[0]}, "
                f"num_key_value_heads={heads[1]})",
                "gqa",
            )
            self.features.add("gqa")
        else:
            var = self.define(f"layers.MultiHeadAttention({self.draw(st.integers(1, 2))}, {self.pick(DIMS)})", "mha")
        out = Tensor(self.fresh("t"), "seq", q.dim)
        style = self.pick(["positional", "keyword", "key", "causal"])
        if style == "positional":
            self.emit(f"{out.var} = {var}({q.var}, {v.var})")
        elif style == "keyword":
            self.emit(f"{out.var} = {var}(query={q.var}, value={v.var})")
        elif style == "key":
            k = self.pick([t for t in seqs if t.dim == v.dim])
            self.emit(f"{out.var} = {var}(query={q.var}, value={v.var}, key={k.var})")
        else:
            self.emit(f"{out.var} = {var}({q.var}, {v.var}, use_causal_mask=True)")
        self.callables.append(Callee(var, (("seq", q.dim), ("seq", v.dim)), (("seq", q.dim),), "mha", 0))
        self.features.add("mha")
        return [out]

    def step_raw(self, pool: list[Tensor], depth: int) -> list[Tensor]:
        same = _groups(pool, lambda t: (t.kind, t.dim))
        kinds = _groups(pool, lambda t: t.kind)
        options = ["unary", "scale", "mean_last"] + (["binary"] if same else []) + (["concat"] if kinds else [])
        if any(t.dim >= 2 for t in pool):
            options.append("split")
        if any(t.kind != "vec" for t in pool):
            options.append("mean_axis1")
        which = self.pick(options)
        self.features.add("raw_ops")
        if which == "binary":
            a, b = self.some(self.pick(same), 2, 2)
            fn = self.pick(["add", "subtract", "multiply", "maximum", "+"])
            out = Tensor(self.fresh("t"), a.kind, a.dim)
            self.emit(f"{out.var} = " + (f"{a.var} + {b.var}" if fn == "+" else f"ops.{fn}({a.var}, {b.var})"))
        elif which == "concat":
            ts = self.some(self.pick(kinds), 2, 3)
            out = Tensor(self.fresh("t"), ts[0].kind, sum(t.dim for t in ts))
            self.emit(f"{out.var} = ops.concatenate([{', '.join(t.var for t in ts)}], axis=-1)")
        elif which == "split":  # an op with two outputs: addresses split[0], split[1]
            t = self.pick([t for t in pool if t.dim >= 2])
            first, second = Tensor(self.fresh("t"), t.kind, 1), Tensor(self.fresh("t"), t.kind, t.dim - 1)
            self.emit(f"{first.var}, {second.var} = ops.split({t.var}, [1], axis=-1)")
            self.features.add("multi_output")
            return [first, second]
        elif which == "mean_axis1":
            t = self.pick([t for t in pool if t.kind != "vec"])
            out = Tensor(self.fresh("t"), "vec" if t.kind == "seq" else "seq", t.dim)
            self.emit(f"{out.var} = ops.mean({t.var}, axis=1)")
        else:
            t = self.pick(pool)
            out = Tensor(self.fresh("t"), t.kind, 1 if which == "mean_last" else t.dim)
            if which == "mean_last":
                self.emit(f"{out.var} = ops.mean({t.var}, axis=-1, keepdims=True)")
            elif which == "unary":
                self.emit(f"{out.var} = ops.{self.pick(['tanh', 'sigmoid', 'relu', 'negative'])}({t.var})")
            else:
                c = self.pick([2.0, 0.5, -1.5])
                self.emit(f"{out.var} = {t.var} * {c}" if self.draw(st.booleans()) else f"{out.var} = ops.multiply({t.var}, {c})")
        return [out]

    def step_reuse(self, pool: list[Tensor], depth: int) -> list[Tensor]:
        """Call an existing layer or sub-model again, on tensors of matching shapes."""
        usable = []
        for c in self.callables:
            choices = [[t for t in pool if (t.kind, t.dim) == sig] for sig in c.ins]
            if self.allowed(c, depth) and all(choices):
                usable.append((c, choices))
        if not usable:
            return []
        c, choices = self.pick(usable)
        self.features.add("shared_layer" if c.depth == 0 else "shared_submodel")
        return self.invoke(c, [self.pick(ch) for ch in choices])

    def step_submodel(self, pool: list[Tensor], depth: int) -> list[Tensor]:
        sequential = self.draw(st.booleans())
        given = [self.pick(pool)] if sequential else self.some(pool, 1, 2)
        c = self.define_submodel(given, depth + 1, sequential, single_output=False)
        outs = self.invoke(c, given)
        if self.draw(st.integers(0, 3)) == 0:
            outs += self.invoke(c, given)
            self.features.add("shared_submodel")
        return outs

    # -- sub-models ------------------------------------------------------
    def define_submodel(self, given: list[Tensor], depth: int, sequential: bool, single_output: bool) -> Callee:
        """Emit a sub-model whose layers live at nesting `depth` (>= 1)."""
        var = self.fresh("m")
        name = f"f{self.n}_{'seq' if sequential else 'sub'}"
        self.features.add("nested_sequential" if sequential else "nested_functional")
        if depth >= 2:
            self.features.add("nested_depth_2")
        self.reach.append(0)
        inputs = []
        for i, t in enumerate(given):
            inputs.append(Tensor(f"{var}_in{i}", t.kind, t.dim))
            self.emit(f'{var}_in{i} = keras.Input({shape_of(t.kind, t.dim)}, name="{name}_in{i}")')
        if sequential:
            items, out = self.sequential_layers(inputs[0], depth)
            self.emit(f'{var} = keras.Sequential([{", ".join([inputs[0].var] + items)}], name="{name}")')
            outs, call = [out], "single"
        else:
            pool = self.block(inputs, self.draw(st.integers(1, 4)), depth)
            outs = [pool[-1]] if single_output else [pool[-1]] + self.some(pool[:-1], 0, 1)
            if len(inputs) == 1:
                in_struct, call = inputs[0].var, "single"
            elif self.draw(st.booleans()):
                in_struct, call = "[" + ", ".join(i.var for i in inputs) + "]", "list"
            else:  # a dict whose insertion order differs from the sorted one
                keys = [f"{name}_in{i}" for i in range(len(inputs))]
                in_struct = "{" + ", ".join(f'"{k}": {i.var}' for k, i in reversed(list(zip(keys, inputs)))) + "}"
                call = "dict:" + ",".join(keys)
                self.features.add("nested_dict_inputs")
            out_struct = outs[0].var if len(outs) == 1 else "[" + ", ".join(o.var for o in outs) + "]"
            self.emit(f'{var} = keras.Model({in_struct}, {out_struct}, name="{name}")')
        c = Callee(var, tuple((t.kind, t.dim) for t in given), tuple((o.kind, o.dim) for o in outs),
                      call, 1 + self.reach.pop())
        self.callables.append(c)
        return c

    def sequential_layers(self, t: Tensor, depth: int) -> tuple[list[str], Tensor]:
        """Layer variables of a Sequential on inputs like `t`, and its output."""
        items: list[str] = []
        for _ in range(self.draw(st.integers(1, 3))):
            options = self.single_steps(t)
            if depth + 1 < MAX_DEPTH:
                options.append("nested")
            reusable = [c for c in self.callables if c.call == "single" and len(c.outs) == 1
                        and c.ins[0] == (t.kind, t.dim) and self.allowed(c, depth)]
            if reusable:
                options.append("reuse")
            step = self.pick(options)
            if step == "nested":
                c = self.define_submodel([t], depth + 1, self.draw(st.booleans()), single_output=True)
            elif step == "reuse":
                c = self.pick(reusable)
                self.features.add("shared_layer" if c.depth == 0 else "shared_submodel")
            else:
                c = self.make_single(step, t)
            self.reach[-1] = max(self.reach[-1], c.depth)
            items.append(c.var)
            t = Tensor(c.var, *c.outs[0])
        return items, t

    def block(self, pool: list[Tensor], n_steps: int, depth: int) -> list[Tensor]:
        """Emit `n_steps` functional steps over `pool`; returns the pool, new tensors last."""
        pool = list(pool)
        for _ in range(n_steps):
            options = ["single", "single", "single", "merge", "raw", "raw", "reuse"]
            if any(t.kind == "seq" for t in pool):
                options.append("mha")
            if depth + 1 < MAX_DEPTH:
                options.append("submodel")
            step = getattr(self, f"step_{self.pick(options)}")
            pool.extend(step(pool, depth))
        return pool

    def program(self, max_steps: int) -> Program:
        n_inputs = self.draw(st.integers(1, 3))
        inputs = []
        for i in range(n_inputs):
            kind, dim = self.pick(("vec", "seq", "img")), self.pick(DIMS)
            inputs.append(Tensor(f"in{i}", kind, dim))
            self.emit(f'in{i} = keras.Input({shape_of(kind, dim)}, name="in{i}")')
        pool = self.block(inputs, self.draw(st.integers(1, max_steps)), 0)
        outs = [pool[-1]] + self.some(pool[:-1], 0, 2)
        style_in = "single" if n_inputs == 1 else self.pick(["list", "dict"])
        style_out = self.pick(["single", "list", "dict"]) if len(outs) == 1 else self.pick(["list", "dict"])
        in_struct = {
            "single": "in0",
            "list": "[" + ", ".join(t.var for t in inputs) + "]",
            "dict": "{" + ", ".join(f'"{t.var}": {t.var}' for t in inputs) + "}",
        }[style_in]
        out_struct = {
            "single": outs[0].var,
            "list": "[" + ", ".join(t.var for t in outs) + "]",
            "dict": "{" + ", ".join(f'"out{i}": {t.var}' for i, t in enumerate(outs)) + "}",
        }[style_out]
        self.features.update({f"inputs_{style_in}", f"outputs_{style_out}"})
        self.emit(f'model = keras.Model({in_struct}, {out_struct}, name="fuzzed")')
        return Program(self.lines, frozenset(self.features))


def _groups(pool: list[Tensor], key) -> list[list[Tensor]]:
    """Groups of at least two tensors of `pool` sharing `key`."""
    by: dict = {}
    for t in pool:
        by.setdefault(key(t), []).append(t)
    return [g for g in by.values() if len(g) >= 2]


@st.composite
def architectures(draw, max_steps: int = 6) -> Program:
    """Random functional architectures as `Program` objects (see the module docstring)."""
    return _Gen(draw).program(max_steps)
