"""The online monitor in the browser (``ddsmonitor``): histogram packages filled from DDS.

- ``config``: load and check the TOML config (histograms, packages, page layout); errors name file, line, key.
- ``places``: where a key of a TOML file sits (its line), for those errors.
- ``quantity``: a histogram's quantity, a branch or an expression, computed on awkward Arrays.
- ``filling``: :class:`HistogramFiller`, one histogram or time graph filled with ``hist``, with its reset policy.
- ``packages``: :class:`PackageStore`, packages with serials, and checks of packages other producers publish.
- ``feed``: the DDS sessions (one per stream and cut) that fill the histograms.
- ``app``: the HTTP service (starlette): the page, the JSON API, server-sent events, publishing.
- ``cli``: the ``ddsmonitor`` command (uvicorn).
- ``static/``: the page, its script and style, and the plotting library (uPlot, MIT, shipped here).

Nothing here is imported by ``import clients``; the web stack loads only with ``ddsmonitor``.
"""

from .config import ConfigError, MonitorConfig, load_config, parse_config

__all__ = ["ConfigError", "MonitorConfig", "load_config", "parse_config"]
