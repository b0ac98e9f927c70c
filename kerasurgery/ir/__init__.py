"""The IR: a Keras model as a `networkx.DiGraph`, and back.

==================  =========================================================
`schema`            what nodes, edges and the graph hold; ordering, copying
`from_keras`        `to_graph`: a Keras model -> graph (nested models inlined)
`to_keras`          `to_model`: graph -> a new Keras model
`check`             `check_graph`: is a graph well formed?
`resolve`           `points`, `Resolver`: addresses -> graph nodes
`edits`             primitive edits passes are made of
`names`             unique names for new operations
`clone`             independent copies of operations, with all their state
`export`            the graph as DOT, GraphML or JSON (for drawings)
==================  =========================================================
"""
