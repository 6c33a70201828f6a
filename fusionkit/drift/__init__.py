"""Drift: Ray-free detectors and statistics, and the drift watch of a train stage.

One concept per module: the statistics (:mod:`~fusionkit.drift.psi`,
:mod:`~fusionkit.drift.ks`, :mod:`~fusionkit.drift.chi2`, :mod:`~fusionkit.drift.ztest`,
:mod:`~fusionkit.drift.categories`), the windows they compare
(:mod:`~fusionkit.drift.reference`), River's detectors by name
(:mod:`~fusionkit.drift.detectors`), the monitors (:mod:`~fusionkit.drift.feature`,
:mod:`~fusionkit.drift.prediction`, :mod:`~fusionkit.drift.concept`, and
:mod:`~fusionkit.drift.monitor` that holds all three), their records
(:mod:`~fusionkit.drift.records`), the monitor actor's store of them
(:mod:`~fusionkit.drift.store`), and the watch a train stage feeds
(:mod:`~fusionkit.drift.spec`, :mod:`~fusionkit.drift.watch`, which returns a
:mod:`~fusionkit.drift.policy` decision the stage carries out).

Nothing here imports the training, monitor or control layers, nor starts Ray. This
package's ``__init__`` imports nothing, so reading the store's columns does not load River
and SciPy.

``fk.drift``, the function that reads a stage's drift series, has this package's name:
``fusionkit/__init__`` binds it after the package is loaded (``fusionkit.drift_api``
imports the store first), so the attribute ``fusionkit.drift`` is the function. Import
the modules by name, ``from fusionkit.drift.watch import DriftWatch`` or ``from
fusionkit.drift import watch``; ``import fusionkit.drift.watch as w`` goes through that
attribute and fails.
"""
