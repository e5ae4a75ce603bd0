"""Comparison reports: ``results.json`` (data), ``results.md`` and ``report.html`` (views), MP4 writing.

`Results` holds the record and rewrites the three files after every run; `render_html` draws
side-by-side videos, a speed-vs-quality SVG plot (no plotting dependency), the tables, the
configurations and the environment.
"""

from .results import REPORT_HTML, RESULTS_JSON, RESULTS_MD, Results, aggregate, environment
from .video import read_mp4, to_uint8, write_mp4

__all__ = ["Results", "aggregate", "environment", "write_mp4", "read_mp4", "to_uint8", "RESULTS_JSON",
           "RESULTS_MD", "REPORT_HTML"]
