"""Pictures of a model's governance: self-contained SVG charts drawn with matplotlib.

The model card inlines them, the Prefect artifacts show them as images, and the console calls
the same functions. Every chart reads stored data only (a validation report, audit records,
version rows), so a picture shows what was judged and recorded, and nothing is scored again.

Public API (all return :class:`Picture` objects: ``key``, ``title``, ``svg``, ``alt``; the
SVG is one ``<svg>`` element with a ``<title>``, safe to inline, ``Picture.data_uri()`` for
an ``<img>``):

- :func:`version_pictures` (report, cfg=None): every picture of one validated version;
  :func:`evaluation_note` says why its curve and SHAP pictures are absent, if they are.
- :func:`drift_history_picture` (records, cfg=None): drift scores per column over the checks.
- :func:`comparison_picture` (report): champion vs challenger on the primary metric.
- :func:`metric_history_picture` (versions, metric, champion, challenger): the metric by
  version.
- the single charts behind them, by module: ``curves`` (ROC, precision-recall, calibration),
  ``regression`` (predicted vs actual, residuals by group), ``shap_summary`` (importance,
  beeswarm), ``fairness`` (groups against the gate's limits), ``drift``, ``comparison``;
  ``svg`` renders a figure deterministically.
"""

from mlsteward.report.charts.comparison import comparison_picture, metric_history_picture
from mlsteward.report.charts.drift import drift_history_picture
from mlsteward.report.charts.fairness import fairness_picture, fairness_pictures
from mlsteward.report.charts.svg import Picture
from mlsteward.report.charts.version import evaluation_note, version_pictures

__all__ = [
    "Picture",
    "comparison_picture",
    "drift_history_picture",
    "evaluation_note",
    "fairness_picture",
    "fairness_pictures",
    "metric_history_picture",
    "version_pictures",
]
