"""Results JSON -> a static HTML site that works offline. Never imports torch: a report can be
rebuilt on a machine without the models (STYLE.md, "the shape of the house")."""

from reports.site import Report, build_report

__all__ = ["Report", "build_report"]
