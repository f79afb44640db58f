"""touchpoint.features: the pure library shared by training and serving.

The event contract (:mod:`features.schema`), journey stages (:mod:`features.stages`), the
feature definition (:mod:`features.spec`) and the point-in-time feature pipeline
(:mod:`features.pipeline`).  Importing the package loads nothing heavy; import the
submodules you need.
"""
