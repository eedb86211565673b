"""stagesearch: dashboards."""
