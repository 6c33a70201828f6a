"""Drift: Ray-free detectors and statistics, and the drift watch of a train stage.

One concept per module: the statistics (:mod:`~fusionkit.drift_detection.psi`,
:mod:`~fusionkit.drift_detection.ks`, :mod:`~fusionkit.drift_detection.chi2`, :mod:`~fusionkit.drift_detection.ztest`,
:mod:`~fusionkit.drift_detection.categories`), the windows they compare
(:mod:`~fusionkit.drift_detection.reference`), River's detectors by name
(:mod:`~fusionkit.drift_detection.detectors`), the monitors (:mod:`~fusionkit.drift_detection.feature`,
:mod:`~fusionkit.drift_detection.prediction`, :mod:`~fusionkit.drift_detection.concept`, and
:mod:`~fusionkit.drift_detection.monitor` that holds all three), their records
(:mod:`~fusionkit.drift_detection.records`), the monitor actor's store of them
(:mod:`~fusionkit.drift_detection.store`), and the watch a train stage feeds
(:mod:`~fusionkit.drift_detection.spec`, :mod:`~fusionkit.drift_detection.watch`, which returns a
:mod:`~fusionkit.drift_detection.policy` decision the stage carries out).

Nothing here imports the training, monitor or control layers, nor starts Ray. This
package's ``__init__`` imports nothing, so reading the store's columns does not load River
and SciPy.

The package is not called ``drift``: that name is the function ``fk.drift``, which reads
a stage's drift series.
"""
