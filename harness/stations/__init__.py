"""Stations: several models run on every frame, and the ways of running them together.

A deployment rarely runs one model alone: a station runs, say, two detectors and a classifier on every
camera frame, and the question is how to run them together fastest, at what cost in CPU, GPU and memory.
The registry names stations (``[stations.NAME]``, :mod:`harness.stations.registry`); each is timed in four
modes over the same runners as every perf case (:mod:`harness.stations.modes`):

``serial``       one thread runs the models in turn (the baseline cycle time);
``multistream``  one thread, one runner (stream) per model, all submitted, then all waited for;
``threadpool``   one persistent thread per model, each owning its runner, joined on every frame;
``merged``       the models composed into one ONNX graph (:mod:`harness.stations.merge`), built and cached
                 like any model, checked against the separate models before it is timed.

:mod:`harness.stations.check` generates the cases and writes a :class:`~harness.rows.StationRow` per case;
:mod:`harness.stations.report` renders the station table (cycle time, serial time, speed-up, memory and
utilisation, the best mode marked) and the speed-up plot. Of the layers below, only the registry's loader
imports from here (:mod:`harness.stations.registry`, which itself imports only spec, data and errors); the
plugin, the report and the command line call in from above.
"""
