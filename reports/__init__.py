"""Results JSON to a static HTML site. Never imports torch: a report renders from plain data."""
