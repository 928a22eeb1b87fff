"""The stages, in the order the data meets them: read -> embed -> kcenter -> score / pick -> selection -> write.

Each stage module holds its settings' use, its `map_batches` callable where it has one,
and its result type; `pipeline.run` calls them in order.
"""
